/**
 * The ingest half of the CLI, end to end with real processes and real pipes:
 * make-demo-data, scan | decode (| batch --out-dir), on a data set with the bad files that
 * real dumps contain.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { decodeRecords, type PipelineRun, runPipeline } from './pipeline-helpers';
import sharp from 'sharp';
import type { ImageRecord, ItemRecord } from '@alexnet-stream/stream-io';

const CLI = resolve(__dirname, '../../apps/cli/bin/alexnet-stream.js');
const cli = `"${process.execPath}" "${CLI}"`;
let dir: string;
let data: string;

const sh = (script: string, input?: Buffer) => runPipeline(dir, script, input);

const records = decodeRecords;

const BAD = ['disk/zero-bytes.jpg', 'disk/notes.jpg', 'square/truncated.JPEG'];
const ODD = ['disk/png-named.JPEG', 'square/cmyk.jpg', 'triangle/gray.jpeg', 'triangle/rgba.png', 'vertical-stripes/rotated.jpg'];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ingest-e2e-'));
  data = join(dir, 'data');
  const made = spawnSync(process.execPath, [CLI, 'make-demo-data', '--out', data, '--seed', '3', '--train-per-class', '3', '--val-per-class', '1']);
  assert.equal(made.status, 0, made.stderr.toString());
  const train = join(data, 'train');
  const src = join(train, 'disk', 'disk_0000.jpg');
  // bad files: zero bytes, text named .jpg, a truncated JPEG
  writeFileSync(join(train, BAD[0]), Buffer.alloc(0));
  writeFileSync(join(train, BAD[1]), 'this is not an image\n');
  const jpeg = readFileSync(src);
  writeFileSync(join(train, BAD[2]), jpeg.subarray(0, Math.floor(jpeg.length / 2)));
  // odd but decodable: PNG bytes named .JPEG, CMYK JPEG, grayscale, RGBA PNG, EXIF-rotated
  await sharp(src).png().toFile(join(train, ODD[0]));
  await sharp(src).toColourspace('cmyk').jpeg().toFile(join(train, ODD[1]));
  await sharp(src).grayscale().jpeg().toFile(join(train, ODD[2]));
  await sharp(src).ensureAlpha(0.5).png().toFile(join(train, ODD[3]));
  await sharp(src).jpeg().withMetadata({ orientation: 6 }).toFile(join(train, ODD[4]));
  copyFileSync(src, join(dir, 'stray.jpg')); // outside the data set: ignored
  mkdirSync(join(dir, 'empty', 'a'), { recursive: true });
});

after(() => rmSync(dir, { recursive: true, force: true }));

const TOTAL = 6 * 3 + BAD.length + ODD.length;

test('scan | decode: odd files decoded, bad files skipped with one warning each, exit 0', async () => {
  const r = sh(`${cli} scan data/train 2> scan.err | ${cli} decode --size 32 2> decode.err`);
  assert.deepEqual(r.status, [0, 0]);
  const out = await records(r.stdout);
  const header = out[0] as { kind: string; classNames: string[] };
  assert.equal(header.kind, 'image');
  assert.deepEqual(header.classNames, ['checkerboard', 'disk', 'horizontal-stripes', 'square', 'triangle', 'vertical-stripes']);
  const images = out.slice(1, -1) as ImageRecord[];
  assert.equal(images.length, TOTAL - BAD.length);
  // the trailer accounts for every item: decoded + skipped = scanned
  assert.deepEqual(out[out.length - 1], { type: 'trailer', records: TOTAL - BAD.length, skipped: BAD.length, producer: 'alexnet-stream decode' });
  for (const img of images) assert.deepEqual([img.channels, img.height, img.width, img.data.length], [3, 32, 32, 3 * 32 * 32]);
  for (const key of ODD)
    assert.ok(
      images.some((i) => i.key === key),
      `${key} decoded`,
    );
  for (const key of BAD) assert.ok(!images.some((i) => i.key === key), `${key} skipped`);
  const err = readFileSync(join(dir, 'decode.err'), 'utf8');
  const warnings = err.split('\n').filter((l) => l.includes('warning: skipped'));
  assert.equal(warnings.length, 3, err);
  assert.match(err, /skipped \S*zero-bytes\.jpg: empty file/);
  assert.match(err, /skipped \S*notes\.jpg: not an image/);
  assert.match(err, /skipped \S*truncated\.JPEG: truncated or corrupt/);
  assert.match(err, new RegExp(`${TOTAL - 3} images decoded, 3 skipped`));
  assert.match(readFileSync(join(dir, 'scan.err'), 'utf8'), new RegExp(`${TOTAL} of ${TOTAL} items, 6 classes`));
});

test('decode --strict exits 1 when a file was skipped, 0 when none was', () => {
  assert.deepEqual(sh(`${cli} scan data/train | ${cli} decode --size 8 --strict > /dev/null`).status, [0, 1]);
  const clean = sh(`${cli} scan --list data/val.txt --root data/val --classes data/classes.txt | ${cli} decode --size 8 --strict > /dev/null`);
  assert.deepEqual(clean.status, [0, 0], clean.stderr);
});

test('--shard 0/2 and 1/2 split the items exactly; the same seed gives identical bytes', async () => {
  const all = sh(`${cli} scan data/train --shuffle --seed 9 2>/dev/null | ${cli} decode --size 8 2>/dev/null`);
  const again = sh(`${cli} scan data/train --shuffle --seed 9 2>/dev/null | ${cli} decode --size 8 --concurrency 1 2>/dev/null`);
  assert.ok(all.stdout.equals(again.stdout), 'same seed, same bytes (also with another --concurrency)');
  const other = sh(`${cli} scan data/train --shuffle --seed 10 2>/dev/null | ${cli} decode --size 8 2>/dev/null`);
  assert.ok(!all.stdout.equals(other.stdout));
  const keys = async (r: PipelineRun) => (await records(r.stdout)).slice(1, -1).map((x) => (x as ImageRecord | ItemRecord).key);
  const s0 = await keys(sh(`${cli} scan data/train --shuffle --seed 9 --shard 0/2 2>/dev/null`));
  const s1 = await keys(sh(`${cli} scan data/train --shuffle --seed 9 --shard 1/2 2>/dev/null`));
  const full = await keys(sh(`${cli} scan data/train --shuffle --seed 9 2>/dev/null`));
  assert.equal(full.length, TOTAL);
  assert.deepEqual([...s0, ...s1].sort(), [...full].sort());
  assert.equal(new Set([...s0, ...s1]).size, TOTAL);
  assert.deepEqual(
    s0,
    full.filter((_, i) => i % 2 === 0),
  );
  const limited = await keys(sh(`${cli} scan data/train --shuffle --seed 9 --shard 1/2 --limit 3 2>/dev/null`));
  assert.deepEqual(limited, s1.slice(0, 3));
});

test('scan | decode | batch --out-dir writes shards holding every decodable image', () => {
  const r = sh(
    `${cli} scan data/train --shuffle --seed 1 2>/dev/null | ${cli} decode --size 16 2>/dev/null | ${cli} batch --size 4 --out-dir shards 2> batch.err`,
  );
  assert.deepEqual(r.status, [0, 0, 0], readFileSync(join(dir, 'batch.err'), 'utf8'));
  const index = JSON.parse(readFileSync(join(dir, 'shards', 'index.json'), 'utf8'));
  assert.ok(JSON.stringify(index).includes(`"images":${TOTAL - 3}`), JSON.stringify(index).slice(0, 400));
});

test('usage and whole-job errors: exit 2 with a message naming the problem', () => {
  const size = sh(`${cli} scan data/train 2>/dev/null | ${cli} decode --size 0`);
  assert.equal(size.status[1], 2);
  assert.match(size.stderr, /--size/);
  const resize = sh(`${cli} scan data/train 2>/dev/null | ${cli} decode --resize stretch`);
  assert.equal(resize.status[1], 2);
  assert.match(resize.stderr, /--resize/);
  const missing = sh(`${cli} scan nowhere`);
  assert.deepEqual(missing.status, [2]);
  assert.match(missing.stderr, /nowhere does not exist/);
  const empty = sh(`${cli} scan empty`);
  assert.deepEqual(empty.status, [2]);
  assert.match(empty.stderr, /no images found/);
  writeFileSync(join(dir, 'bad.txt'), 'a.jpg 1\nb.jpg x\n');
  const badList = sh(`${cli} scan --list bad.txt --root data`);
  assert.deepEqual(badList.status, [2]);
  assert.match(badList.stderr, /bad\.txt:2: label "x"/);
  const shard = sh(`${cli} scan data/train --shard 2/2`);
  assert.deepEqual(shard.status, [2]);
  assert.match(shard.stderr, /--shard/);
  // decode refuses a stream of another kind at its header
  const kind = sh(`${cli} scan data/train 2>/dev/null | ${cli} decode --size 8 2>/dev/null | ${cli} decode --size 8`);
  assert.equal(kind.status[2], 2);
  assert.match(kind.stderr, /reads item records but the stream carries image records/);
  assert.ok(existsSync(join(dir, 'data', 'classes.txt')));
});
