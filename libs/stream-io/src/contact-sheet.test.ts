import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { ContactSheetCollector, renderContactSheet, tilesFromRecord } from './contact-sheet';
import { type BatchRecord, type ImageRecord, makeHeader } from './records';

function solid(key: string, label: number, rgb: [number, number, number], size = 8): ImageRecord {
  const data = new Uint8Array(3 * size * size);
  for (let c = 0; c < 3; c++) data.fill(rgb[c], c * size * size, (c + 1) * size * size);
  return { type: 'image', key, label, channels: 3, height: size, width: size, data };
}

test('the grid puts each image, in order, in its tile (pixels checked), captions from class names', async () => {
  const collector = new ContactSheetCollector(3);
  collector.add(makeHeader('image', { classNames: ['red', 'green', 'blue'] }));
  const colours: [number, number, number][] = [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [9, 9, 9],
  ];
  colours.forEach((rgb, i) => collector.add(solid(`k${i}`, i % 3, rgb)));
  assert.equal(collector.tiles.length, 3);
  assert.ok(collector.full);
  assert.deepEqual(
    collector.tiles.map((t) => [t.caption, t.detail]),
    [
      ['red', 'k0'],
      ['green', 'k1'],
      ['blue', 'k2'],
    ],
  );
  const png = await renderContactSheet(collector.tiles, { tileSize: 32, columns: 2 });
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  // 2 columns x 2 rows of (32 + 4 gap) wide, (32 + 28 caption + 4) high, plus the outer gap.
  assert.deepEqual([info.width, info.height], [2 * 36 + 4, 2 * 64 + 4]);
  const pixel = (x: number, y: number) => Array.from(data.subarray((y * info.width + x) * info.channels, (y * info.width + x) * info.channels + 3));
  assert.deepEqual(pixel(4 + 16, 4 + 16), [255, 0, 0]);
  assert.deepEqual(pixel(4 + 36 + 16, 4 + 16), [0, 255, 0]);
  assert.deepEqual(pixel(4 + 16, 4 + 64 + 16), [0, 0, 255]);
});

test('float32 (augmented) batches are stretched to 0..255 per image', () => {
  const b: BatchRecord = {
    type: 'batch',
    dtype: 'float32',
    shape: [1, 1, 1, 3],
    layout: 'NCHW',
    data: Float32Array.from([-2, 0, 2]),
    labels: Int32Array.from([0]),
    keys: ['z'],
  };
  const [tile] = tilesFromRecord(b, undefined);
  assert.deepEqual(Array.from(tile.data), [0, 128, 255]);
  assert.deepEqual([tile.caption, tile.detail], ['label 0', 'z']);
});

test('an empty sheet and a count below 1 are usage errors', async () => {
  await assert.rejects(renderContactSheet([]), /no images to draw/);
  assert.throws(() => new ContactSheetCollector(0), /Expected an integer between 1 and 10000 for count but received 0/);
});
