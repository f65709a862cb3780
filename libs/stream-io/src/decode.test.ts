import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { UsageError } from '@alexnet-stream/core';
import { decodeImage, hwcToChw, type DecodedImage } from './decode';
import { DecodeStage } from './decode-stage';
import { type ImageRecord, type ItemRecord, makeHeader, type StreamRecord, wholeStream } from './records';

function raw(width: number, height: number, channels: 1 | 2 | 3 | 4, f: (x: number, y: number, c: number) => number): ReturnType<typeof sharp> {
  const buf = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) for (let c = 0; c < channels; c++) buf[(y * width + x) * channels + c] = f(x, y, c);
  return sharp(buf, { raw: { width, height, channels } });
}

/** Pixel (x, y) of channel c of a CHW image of side `size`. */
const at = (img: DecodedImage, size: number, c: number, x: number, y: number) => img.data[c * size * size + y * size + x];

test('hwcToChw transposes interleaved RGB into planes', () => {
  const hwc = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]); // 2x2
  assert.deepEqual([...hwcToChw(hwc, 2, 2)], [1, 4, 7, 10, 2, 5, 8, 11, 3, 6, 9, 12]);
});

test('hwcToChw: the 4-pixel fast path and the byte loop agree (aligned, unaligned, odd sizes)', () => {
  const naive = (hwc: Uint8Array, n: number) => Uint8Array.from({ length: 3 * n }, (_, i) => hwc[(i % n) * 3 + Math.floor(i / n)]);
  for (const [h, w] of [
    [16, 16],
    [7, 5],
    [1, 1],
    [3, 4],
  ]) {
    const n = h * w;
    const backing = new Uint8Array(3 * n + 1).map((_, i) => (i * 37 + 11) & 255);
    for (const hwc of [backing.subarray(0, 3 * n), backing.subarray(1)]) {
      assert.deepEqual([...hwcToChw(hwc, h, w)], [...naive(hwc, n)], `${h}x${w} offset ${hwc.byteOffset}`);
    }
  }
});

test('a 256x256 PNG decoded at size 256 is exact (no resampling), in CHW order', async () => {
  const f = (x: number, y: number, c: number) => (x * 7 + y * 13 + c * 101 + ((x * y) % 17)) & 255;
  const png = await raw(256, 256, 3, f).png().toBuffer();
  const img = await decodeImage(png, { size: 256, resize: 'squash' });
  assert.equal(img.data.length, 3 * 256 * 256);
  let mismatches = 0;
  for (let c = 0; c < 3; c++) for (let y = 0; y < 256; y++) for (let x = 0; x < 256; x++) if (at(img, 256, c, x, y) !== f(x, y, c)) mismatches++;
  assert.equal(mismatches, 0);
});

test('a flat-colour JPEG decodes to that colour within 1 level', async () => {
  // Tolerance 1: a flat block has only a DC coefficient; its quantization and the YCbCr↔RGB
  // round trip can move a channel by at most one level (observed: 0 with libvips).
  const rgb = [200, 100, 50];
  const jpeg = await raw(300, 200, 3, (_x, _y, c) => rgb[c])
    .jpeg({ quality: 85 })
    .toBuffer();
  const img = await decodeImage(jpeg, { size: 64, resize: 'squash' });
  for (let c = 0; c < 3; c++)
    for (let i = 0; i < 64 * 64; i++) assert.ok(Math.abs(img.data[c * 4096 + i] - rgb[c]) <= 1, `channel ${c} pixel ${i}: ${img.data[c * 4096 + i]}`);
});

test('squash of a 2x-upscaled checker matches the hand-computed bilinear (triangle) filter', async () => {
  // 1-px checker at 128x128, upscaled 2x (2x2 blocks of 0/255), squashed back to 128.
  // Pillow-style bilinear downscale by 2 has taps at distances 1.5, 0.5, 0.5, 1.5 with weights
  // 1/8, 3/8, 3/8, 1/8 per axis: own block 3/4, each neighbour 1/8. Separably, the own colour
  // gets 3/4·3/4 + 1/4·1/4 = 0.625 (the diagonal neighbours share it) and the other 0.375:
  // 255·0.625 = 159.4 → 159 and 255·0.375 = 95.6 → 96. Interior pixels only (edges extend).
  const png = await raw(256, 256, 3, (x, y) => (((x >> 1) + (y >> 1)) % 2 ? 255 : 0))
    .png()
    .toBuffer();
  const img = await decodeImage(png, { size: 128, resize: 'squash' });
  for (let c = 0; c < 3; c++) {
    for (let y = 1; y < 127; y++) {
      for (let x = 1; x < 127; x++) {
        const expected = (x + y) % 2 ? 255 * 0.625 : 255 * 0.375;
        assert.ok(Math.abs(at(img, 128, c, x, y) - expected) <= 1, `(${x},${y},${c}) = ${at(img, 128, c, x, y)}, expected ${expected}`);
      }
    }
  }
});

test('squash maps the whole image; center-crop keeps the middle of the shorter-side resize', async () => {
  // 512x256, four vertical bands of 128 px with distinct colours
  const colours = [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [255, 255, 0],
  ];
  const png = await raw(512, 256, 3, (x, _y, c) => colours[x >> 7][c])
    .png()
    .toBuffer();
  const squash = await decodeImage(png, { size: 64, resize: 'squash' }); // bands 16 px wide
  const crop = await decodeImage(png, { size: 64, resize: 'center-crop' }); // 128x64, keep x 32..95: bands 1, 2
  for (let y = 0; y < 64; y += 7) {
    for (let band = 0; band < 4; band++) {
      for (const x of [band * 16 + 3, band * 16 + 12])
        for (let c = 0; c < 3; c++) assert.equal(at(squash, 64, c, x, y), colours[band][c], `squash (${x},${y},${c})`);
    }
    for (const [x, band] of [
      [2, 1],
      [29, 1],
      [35, 2],
      [61, 2],
    ])
      for (let c = 0; c < 3; c++) assert.equal(at(crop, 64, c, x, y), colours[band][c], `crop (${x},${y},${c})`);
  }
});

test('odd but decodable inputs become 8-bit RGB: gray, CMYK, palette, 16-bit, alpha, GIF, WebP, TIFF', async () => {
  const grad = (x: number, y: number) => (x * 8 + y * 4) & 255;
  const inputs: Record<string, Buffer> = {
    gray: await raw(32, 32, 1, grad).jpeg().toBuffer(),
    grayAlphaPng: await raw(32, 32, 2, (x, y, c) => (c ? 255 : grad(x, y)))
      .png()
      .toBuffer(),
    cmyk: await raw(32, 32, 3, (_x, _y, c) => [180, 140, 120][c])
      .toColourspace('cmyk')
      .jpeg({ quality: 95 })
      .toBuffer(),
    palette: await raw(32, 32, 3, (x, _y, c) => (x < 16 ? [255, 0, 0][c] : [0, 0, 255][c]))
      .png({ palette: true })
      .toBuffer(),
    png16: await raw(32, 32, 3, (x, y, c) => (c === 1 ? 128 : grad(x, y)))
      .toColourspace('rgb16')
      .png()
      .toBuffer(),
    alpha: await raw(32, 32, 4, (_x, _y, c) => [10, 20, 30, 255][c])
      .png()
      .toBuffer(),
    gif: await raw(32, 32, 3, grad).gif().toBuffer(),
    webp: await raw(32, 32, 3, grad).webp().toBuffer(),
    tiff: await raw(32, 32, 3, grad).tiff().toBuffer(),
  };
  for (const [name, bytes] of Object.entries(inputs)) {
    const img = await decodeImage(bytes, { size: 16, resize: 'squash' });
    assert.equal(img.channels, 3, name);
    assert.equal(img.data.length, 3 * 16 * 16, name);
  }
  // gray → R = G = B
  const gray = await decodeImage(inputs.gray, { size: 16, resize: 'squash' });
  for (let i = 0; i < 256; i++) assert.ok(gray.data[i] === gray.data[256 + i] && gray.data[i] === gray.data[512 + i], `gray pixel ${i}`);
  // palette keeps its colours: left half red, right half blue
  const pal = await decodeImage(inputs.palette, { size: 16, resize: 'squash' });
  assert.deepEqual([at(pal, 16, 0, 2, 5), at(pal, 16, 1, 2, 5), at(pal, 16, 2, 2, 5)], [255, 0, 0]);
  assert.deepEqual([at(pal, 16, 0, 13, 5), at(pal, 16, 1, 13, 5), at(pal, 16, 2, 13, 5)], [0, 0, 255]);
  // 16-bit → 8-bit: the constant 128 green stays 128 (±1 for the 16-bit round trip)
  const p16 = await decodeImage(inputs.png16, { size: 16, resize: 'squash' });
  assert.ok(Math.abs(at(p16, 16, 1, 8, 8) - 128) <= 1, `16-bit green ${at(p16, 16, 1, 8, 8)}`);
  // alpha is dropped, colours kept as they are
  const alpha = await decodeImage(inputs.alpha, { size: 16, resize: 'squash' });
  assert.deepEqual([at(alpha, 16, 0, 3, 3), at(alpha, 16, 1, 3, 3), at(alpha, 16, 2, 3, 3)], [10, 20, 30]);
  // CMYK → RGB: a CMYK JPEG made from RGB (180, 140, 120) comes back near that colour. Tolerance
  // 12 levels: RGB → CMYK → RGB goes through two ICC transforms (observed: up to 6); saturated
  // colours outside the CMYK gamut would move further, hence a colour well inside it.
  assert.equal((await sharp(inputs.cmyk).metadata()).space, 'cmyk');
  const cmyk = await decodeImage(inputs.cmyk, { size: 16, resize: 'squash' });
  const got = [0, 1, 2].map((c) => at(cmyk, 16, c, 8, 8));
  [180, 140, 120].forEach((v, c) => assert.ok(Math.abs(got[c] - v) <= 12, `CMYK → RGB gave ${got}, expected ≈ 180,140,120`));
});

test('EXIF orientation is applied: a 16x8 image tagged orientation 6 comes out portrait', async () => {
  // left half white, right half black; orientation 6 = rotate 90° clockwise to display,
  // so the displayed image is 8x16 with the white half on top
  const jpeg = await raw(16, 8, 3, (x) => (x < 8 ? 255 : 0))
    .jpeg({ quality: 95 })
    .withMetadata({ orientation: 6 })
    .toBuffer();
  const img = await decodeImage(jpeg, { size: 16, resize: 'center-crop' }); // 8x16 → 16x32 → middle 16 rows
  const meta = await sharp(jpeg).metadata();
  assert.equal(meta.orientation, 6);
  // center-crop of 16x32 keeps rows 8..23: rows 0..7 of the output are white, 8..15 black
  assert.ok(at(img, 16, 0, 8, 2) > 200, `top is white (${at(img, 16, 0, 8, 2)})`);
  assert.ok(at(img, 16, 0, 8, 13) < 55, `bottom is black (${at(img, 16, 0, 8, 13)})`);
});

test('undecodable bytes reject with a reason: text, empty, truncated JPEG, truncated PNG', async () => {
  const jpeg = await raw(64, 64, 3, (x, y, c) => (x * 31 + y * 17 + c * 5) & 255)
    .jpeg({ quality: 90 })
    .toBuffer();
  const png = await raw(64, 64, 3, (x, y, c) => (x * 31 + y * 17 + c * 5) & 255)
    .png()
    .toBuffer();
  const opts = { size: 16, resize: 'squash' as const };
  await assert.rejects(decodeImage(Buffer.from('this is not an image\n'), opts), /unsupported image format/);
  await assert.rejects(decodeImage(Buffer.alloc(0), opts));
  // a truncated JPEG would decode partially (grey bottom) with only a warning; we refuse it
  await assert.rejects(decodeImage(jpeg.subarray(0, Math.floor(jpeg.length * 0.6)), opts), /premature end|truncated/i);
  await assert.rejects(decodeImage(png.subarray(0, Math.floor(png.length * 0.6)), opts));
});

test('decode options are validated with a message naming the option', () => {
  assert.throws(
    () => new DecodeStage({ size: 0, resize: 'squash' }),
    (e: Error) => e instanceof UsageError && /for size but received 0/.test(e.message),
  );
  assert.throws(
    () => new DecodeStage({ size: 8, resize: 'stretch' as never }),
    (e: Error) => e instanceof UsageError && /Expected squash or center-crop for resize/.test(e.message),
  );
  assert.throws(() => new DecodeStage({ size: 8, resize: 'squash', concurrency: 0 }), /for concurrency but received 0/);
  assert.throws(() => new DecodeStage({ size: 8, resize: 'squash', workers: -1 }), /for workers but received -1/);
});

test('DecodeStage: input order despite out-of-order completion, skips bad files, header becomes image header', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'decode-stage-'));
  try {
    const files: ItemRecord[] = [];
    for (let i = 0; i < 12; i++) {
      const path = join(dir, `img${i}.png`);
      if (i === 4) writeFileSync(path, Buffer.alloc(0));
      else if (i === 7) writeFileSync(path, 'not an image');
      else if (i !== 9)
        writeFileSync(
          path,
          await raw(8, 8, 3, () => i * 10)
            .png()
            .toBuffer(),
        ); // 9: missing
      files.push({ type: 'item', path, label: i % 3, key: `img${i}.png` });
    }
    const skips: string[] = [];
    // random completion order: delay each decode by a pseudo-random amount
    const stage = new DecodeStage({
      size: 4,
      resize: 'squash',
      concurrency: 5,
      onSkip: (key, reason) => skips.push(`${key}: ${reason}`),
      readFile: async (p) => {
        await new Promise((r) => setTimeout(r, (p.length * 7919) % 13));
        return (await import('node:fs/promises')).readFile(p);
      },
    });
    const out: StreamRecord[] = [];
    await pipeline(
      Readable.from(wholeStream(makeHeader('item', { classNames: ['a', 'b', 'c'] }), files)),
      stage,
      new Writable({
        objectMode: true,
        write(r, _e, cb) {
          out.push(r);
          cb();
        },
      }),
    );
    assert.equal(out[0].type, 'header');
    assert.equal((out[0] as { kind: string }).kind, 'image');
    assert.deepEqual((out[0] as { classNames: string[] }).classNames, ['a', 'b', 'c']);
    const images = out.slice(1, -1) as ImageRecord[];
    assert.deepEqual(
      out[out.length - 1],
      { type: 'trailer', records: 9, skipped: 3, producer: 'alexnet-stream decode' },
      'the trailer: decoded + skipped = the 12 items',
    );
    assert.deepEqual(
      images.map((r) => r.key),
      files.map((f) => f.key).filter((_, i) => ![4, 7, 9].includes(i)),
    );
    for (const img of images) assert.equal(img.data[0], Number(img.key.match(/\d+/)![0]) * 10);
    assert.equal(stage.decoded, 9);
    assert.equal(stage.skipped, 3);
    assert.equal(skips.length, 3);
    assert.match(skips[0], /^img4\.png: empty file/);
    assert.match(skips[1], /^img7\.png: not an image/);
    assert.match(skips[2], /^img9\.png: file not found/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('DecodeStage reading files itself: missing, folder, zero-byte and text files are skipped with reasons', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'decode-files-'));
  try {
    writeFileSync(
      join(dir, 'ok.jpg'),
      await raw(20, 10, 3, () => 99)
        .jpeg()
        .toBuffer(),
    );
    writeFileSync(join(dir, 'zero.jpg'), Buffer.alloc(0));
    writeFileSync(join(dir, 'text.jpg'), 'hello');
    const names = ['ok.jpg', 'missing.jpg', 'zero.jpg', 'text.jpg', '.'];
    const items: ItemRecord[] = names.map((key) => ({ type: 'item', path: join(dir, key), label: 0, key }));
    const skips: string[] = [];
    const out: ImageRecord[] = [];
    await pipeline(
      Readable.from(wholeStream(makeHeader('item'), items)),
      new DecodeStage({ size: 4, resize: 'center-crop', onSkip: (k, r) => skips.push(`${k}: ${r}`) }),
      new Writable({
        objectMode: true,
        write(r, _e, cb) {
          if (r.type === 'image') out.push(r);
          cb();
        },
      }),
    );
    assert.deepEqual(
      out.map((r) => r.key),
      ['ok.jpg'],
    );
    assert.ok(Math.abs(out[0].data[0] - 99) <= 1);
    assert.deepEqual(skips, [
      'missing.jpg: file not found',
      'zero.jpg: empty file (0 bytes)',
      'text.jpg: not an image (unsupported or unrecognised format)',
      '.: not a regular file (a folder)',
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('DecodeStage refuses records that are not items, naming what it got', async () => {
  const image = { type: 'image', key: 'a', label: 0, channels: 3, height: 1, width: 1, data: new Uint8Array(3) };
  await assert.rejects(
    pipeline(
      Readable.from([makeHeader('image'), image]),
      new DecodeStage({ size: 4, resize: 'squash' }),
      new Writable({
        objectMode: true,
        write(_r, _e, cb) {
          cb();
        },
      }),
    ),
    (e: Error) => e.name === 'InputError' && /decode reads item records but the stream carries image records/.test(e.message),
  );
});

/** A photo-like RGB image: gradients, waves, a little texture (no hard noise). */
function photoLike(width: number, height: number): ReturnType<typeof sharp> {
  return raw(width, height, 3, (x, y, c) =>
    Math.max(
      0,
      Math.min(255, Math.round(120 + 50 * Math.sin(x * 0.05 + c) + 40 * Math.cos(y * 0.07 - 2 * c) + 15 * Math.sin((x * 3 + y * 2) * 0.4) + (x * 40) / width)),
    ),
  );
}

test('plain JPEGs (libjpeg-turbo + JS/WASM resize) match the libvips path closely', async () => {
  // The fast path's pixels differ from libvips' (= Pillow's, bit for bit) mainly by the IDCT:
  // the binding always selects libjpeg-turbo's fast integer IDCT (TJFLAG_FASTDCT, also
  // TensorFlow's default), which truncates instead of rounding: about -0.45 of a level on Y, Cb
  // and Cr, i.e. about -1.1 on red and blue and 0 on green after the colour conversion. The
  // resize adds ~0.1 (decode-resample.test.ts). Measured on this image: mean 0.88-0.92, max 4.
  // Tolerance: mean <= 1.25 levels, at most 0.1% of samples off by more than 4.
  const { decodeWithLibvips } = require('./decode') as typeof import('./decode');
  for (const [w, h] of [
    [500, 375],
    [333, 500],
  ]) {
    const jpeg = await photoLike(w, h).jpeg({ quality: 90 }).toBuffer();
    for (const resize of ['squash', 'center-crop'] as const) {
      const fast = await decodeImage(jpeg, { size: 256, resize });
      const vips = await decodeWithLibvips(jpeg, { size: 256, resize });
      let sum = 0,
        over4 = 0;
      for (let i = 0; i < fast.data.length; i++) {
        const e = Math.abs(fast.data[i] - vips.data[i]);
        sum += e;
        if (e > 4) over4++;
      }
      const mean = sum / fast.data.length;
      assert.ok(mean <= 1.25 && over4 <= fast.data.length / 1000, `${w}x${h} ${resize}: mean ${mean.toFixed(3)}, ${over4} samples off by more than 4`);
    }
  }
});

test('a true 1-component grayscale JPEG becomes R = G = B', async () => {
  const jpeg = await raw(40, 30, 1, (x, y) => (x * 6 + y * 3) & 255)
    .toColourspace('b-w')
    .jpeg()
    .toBuffer();
  const img = await decodeImage(jpeg, { size: 16, resize: 'squash' });
  for (let i = 0; i < 256; i++) assert.ok(img.data[i] === img.data[256 + i] && img.data[i] === img.data[512 + i], `pixel ${i}`);
  assert.ok(img.data[255] > img.data[0], 'the gradient survives');
});

test('DecodeStage with worker threads: same images and skip reasons as without', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'decode-workers-'));
  try {
    const jpeg = await photoLike(120, 90).jpeg({ quality: 85 }).toBuffer();
    writeFileSync(join(dir, 'a.jpg'), jpeg);
    writeFileSync(join(dir, 'b.png'), await photoLike(50, 60).png().toBuffer()); // libvips path
    writeFileSync(join(dir, 'c.jpg'), jpeg.subarray(0, Math.floor(jpeg.length * 0.6))); // truncated
    writeFileSync(join(dir, 'd.jpg'), Buffer.alloc(0));
    writeFileSync(join(dir, 'e.jpg'), await photoLike(90, 120).jpeg().withMetadata({ orientation: 6 }).toBuffer()); // rotated: libvips
    writeFileSync(join(dir, 'f.jpg'), jpeg);
    const names = ['a.jpg', 'b.png', 'c.jpg', 'd.jpg', 'missing.jpg', 'e.jpg', '.', 'f.jpg'];
    const run = async (workers: number) => {
      const items: ItemRecord[] = names.map((key) => ({ type: 'item', path: join(dir, key), label: 0, key }));
      const skips: string[] = [];
      const out: ImageRecord[] = [];
      await pipeline(
        Readable.from(wholeStream(makeHeader('item'), items)),
        new DecodeStage({ size: 32, resize: 'squash', workers, onSkip: (k, r) => skips.push(`${k}: ${r.replace(/ \(.*/, '')}`) }),
        new Writable({
          objectMode: true,
          write(r, _e, cb) {
            if (r.type === 'image') out.push(r);
            cb();
          },
        }),
      );
      return { out, skips };
    };
    const plain = await run(0);
    const threaded = await run(2);
    assert.deepEqual(
      threaded.out.map((r) => r.key),
      ['a.jpg', 'b.png', 'e.jpg', 'f.jpg'],
    );
    assert.deepEqual(
      threaded.out.map((r) => r.key),
      plain.out.map((r) => r.key),
    );
    for (let i = 0; i < plain.out.length; i++) assert.deepEqual(threaded.out[i].data, plain.out[i].data, plain.out[i].key);
    assert.deepEqual(threaded.skips, plain.skips);
    assert.deepEqual(threaded.skips, ['c.jpg: truncated or corrupt image', 'd.jpg: empty file', 'missing.jpg: file not found', '.: not a regular file']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a decode worker thread that dies stops the stage with an error, instead of hanging or skipping every file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'decode-dead-worker-'));
  try {
    const jpeg = await photoLike(120, 90).jpeg({ quality: 85 }).toBuffer();
    for (let i = 0; i < 6; i++) writeFileSync(join(dir, `${i}.jpg`), jpeg);
    const stage = new DecodeStage({ size: 32, resize: 'squash', workers: 1, concurrency: 2 });
    const pool = (stage as unknown as { pool: { slots: { worker: { terminate(): Promise<number> } }[] } }).pool;
    let emitted = 0;
    const items: ItemRecord[] = [0, 1, 2, 3, 4, 5].map((i) => ({ type: 'item', path: join(dir, `${i}.jpg`), label: 0, key: `${i}` }));
    const run = pipeline(
      Readable.from(wholeStream(makeHeader('item'), items)),
      stage,
      new Writable({
        objectMode: true,
        write(r, _e, cb) {
          // the worker dies (as on an uncaught error in it) after the first image
          if (r.type === 'image' && ++emitted === 1) void pool.slots[0].worker.terminate();
          cb();
        },
      }),
    );
    await assert.rejects(run, /a decode worker thread died \(exit code 1\); stopped at .*\.jpg/);
    assert.ok(stage.skipped === 0, 'no file was reported as skipped');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the fast path takes only plain JPEGs of a sensible size; the rest is left to libvips', async () => {
  const { plainJpegHeader } = require('./decode-fast') as typeof import('./decode-fast');
  const jpeg = await photoLike(64, 48).jpeg().toBuffer();
  const opts = { size: 32, resize: 'squash' as const };
  assert.ok(plainJpegHeader(jpeg, opts));
  assert.equal(plainJpegHeader(jpeg, { size: 16, resize: 'squash' }), undefined, 'reduction over 3x: libvips shrinks on load');
  assert.ok(plainJpegHeader(jpeg, { size: 16, resize: 'center-crop' }), 'center-crop reduces the shorter side 3x');
  assert.equal(plainJpegHeader(await photoLike(64, 48).png().toBuffer(), opts), undefined);
  assert.equal(plainJpegHeader(await photoLike(64, 48).jpeg().withMetadata({ orientation: 3 }).toBuffer(), opts), undefined);
  assert.equal(plainJpegHeader(await photoLike(64, 48).jpeg().withIccProfile('p3').toBuffer(), opts), undefined);
  assert.equal(plainJpegHeader(await photoLike(64, 48).toColourspace('cmyk').jpeg().toBuffer(), opts), undefined);
  // a header that claims 17000 x 17000 (289M pixels, over libvips' limit) is not trusted with an allocation
  const huge = Buffer.from(jpeg);
  const sof = huge.indexOf(Buffer.from([0xff, 0xc0]));
  huge.writeUInt16BE(17000, sof + 5);
  huge.writeUInt16BE(17000, sof + 7);
  assert.equal(plainJpegHeader(huge, { size: 8192, resize: 'squash' }), undefined);
  await assert.rejects(decodeImage(huge, { size: 8192, resize: 'squash' }));
});
