/**
 * The shard/augment half of the CLI end to end, with real processes and pipes:
 * scan | decode | mean | batch --out-dir, read | augment | inspect, and the failure cases
 * (corrupt shard, killed writer, foreign or inconsistent streams) with their exit codes.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { decodeNpy, Rng } from '@alexnet-stream/core';
import { decodeRecords, runPipeline } from './pipeline-helpers';
import {
  type BatchRecord,
  centerOffset,
  cropMirrorSubtract,
  type ImageRecord,
  makeHeader,
  makeTrailer,
  packRecord,
  planCrops,
  readShardIndex,
  wholeStream,
} from '@alexnet-stream/stream-io';

const CLI = resolve(__dirname, '../../apps/cli/bin/alexnet-stream.js');
const cli = `"${process.execPath}" "${CLI}"`;
let dir: string;

const sh = (script: string, input?: Buffer) => runPipeline(dir, script, input);

const records = decodeRecords;

/** An image stream built in the test: `count` seeded 3xSxS images. */
function imageStream(count: number, size: number, seed = 1): { bytes: Buffer; images: ImageRecord[] } {
  const rng = new Rng(seed);
  const images: ImageRecord[] = Array.from({ length: count }, (_, i) => ({
    type: 'image',
    key: `c${i % 3}/img${i}.jpg`,
    label: i % 3,
    channels: 3,
    height: size,
    width: size,
    data: new Uint8Array(3 * size * size).map(() => rng.nextUint32() & 255),
  }));
  const bytes = Buffer.concat([...wholeStream(makeHeader('image', { classNames: ['c0', 'c1', 'c2'] }), images)].map(packRecord));
  return { bytes, images };
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'shards-e2e-'));
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('a stage writing to a slow reader waits for it and delivers every byte before it exits', async () => {
  // 3 MB of batches through a 64 KB pipe whose reader starts a second late: the stage must
  // wait for it, and must not exit with records still queued in its own stdout buffer.
  const { bytes, images } = imageStream(250, 64, 7);
  writeFileSync(join(dir, 'slow-in.msgpack'), bytes);
  const r = sh(`${cli} batch --size 16 < slow-in.msgpack | (sleep 1; cat) > slow-out.msgpack`);
  assert.deepEqual(r.status, [0, 0], r.stderr);
  const batches = (await records(readFileSync(join(dir, 'slow-out.msgpack')))).slice(1, -1) as BatchRecord[];
  assert.equal(batches.length, 16);
  const pixels = Buffer.concat(batches.map((b) => Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength)));
  assert.deepEqual(pixels, Buffer.concat(images.map((i) => Buffer.from(i.data))));
});

test('batch --out-dir | read round trip gives back every image; mean passes the stream through', async () => {
  const { bytes, images } = imageStream(10, 16);
  writeFileSync(join(dir, 'images.msgpack'), bytes);
  const r = sh(`${cli} mean --out mean.npy < images.msgpack | ${cli} batch --size 4 --out-dir shards`);
  assert.deepEqual(r.status, [0, 0], r.stderr);
  assert.match(r.stderr, /10 images in 3 batches \(1 partial\) in 3 shards under shards \(prefix train\)/);
  const index = await readShardIndex(join(dir, 'shards'));
  assert.deepEqual(index.prefixes.train.classNames, ['c0', 'c1', 'c2']);

  const read = sh(`${cli} read shards`);
  assert.deepEqual(read.status, [0], read.stderr);
  const out = await records(read.stdout);
  const batches = out.slice(1, -1) as BatchRecord[];
  assert.deepEqual(
    batches.map((b) => b.shape[0]),
    [4, 4, 2],
  );
  assert.deepEqual(
    batches.flatMap((b) => b.keys),
    images.map((i) => i.key),
  );
  const pixels = Buffer.concat(batches.map((b) => Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength)));
  assert.deepEqual(pixels, Buffer.concat(images.map((i) => Buffer.from(i.data))));

  // mean.npy = per-pixel mean of the 10 images, float32 3x16x16
  const mean = decodeNpy(readFileSync(join(dir, 'mean.npy')));
  assert.deepEqual(mean.shape, [3, 16, 16]);
  for (const p of [0, 100, 767]) {
    const expected = Math.fround(images.reduce((s, i) => s + i.data[p], 0) / images.length);
    assert.equal((mean.data as Float32Array)[p], expected);
  }
  // the same dir as input: mean of the shard set equals the stream's
  const fromDir = sh(`${cli} mean --out mean2.npy shards`);
  assert.deepEqual(fromDir.status, [0], fromDir.stderr);
  assert.equal(fromDir.stdout.length, 0);
  assert.deepEqual(readFileSync(join(dir, 'mean2.npy')), readFileSync(join(dir, 'mean.npy')));
});

test('read --shuffle-batches | augment: same seeds give byte-identical output; --center matches the library', async () => {
  const run = (seed: number) => sh(`${cli} read shards --shuffle-batches --seed ${seed} | ${cli} augment --mean mean.npy --crop 12 --mirror --seed 5`);
  const a = run(1);
  assert.deepEqual(a.status, [0, 0], a.stderr);
  assert.deepEqual(run(1).stdout, a.stdout);
  assert.notDeepEqual(run(2).stdout, a.stdout);
  const augmented = (await records(a.stdout)).slice(1, -1) as BatchRecord[];
  assert.ok(augmented.every((b) => b.dtype === 'float32' && b.shape[2] === 12 && b.shape[3] === 12));

  const center = sh(`${cli} read shards | ${cli} augment --mean mean.npy --crop 12 --center`);
  assert.deepEqual(center.status, [0, 0], center.stderr);
  const got = (await records(center.stdout)).slice(1, -1) as BatchRecord[];
  const raw = (await records(sh(`${cli} read shards`).stdout)).slice(1, -1) as BatchRecord[];
  const meanArray = decodeNpy(readFileSync(join(dir, 'mean.npy')));
  const mean = { channels: 3, height: 16, width: 16, data: meanArray.data as Float32Array };
  assert.equal(centerOffset(16, 12), 2);
  for (let k = 0; k < raw.length; k++) {
    const plan = planCrops(raw[k].shape[0], { crop: 12, height: 16, width: 16, center: true }, new Rng(0));
    assert.deepEqual(Array.from(got[k].data), Array.from(cropMirrorSubtract(raw[k], mean, plan)));
  }
});

test('inspect summarises a stream (text and --json) and a shard dir', () => {
  const json = sh(`${cli} read shards | ${cli} inspect --json`);
  assert.deepEqual(json.status, [0, 0], json.stderr);
  const summary = JSON.parse(json.stdout.toString());
  assert.equal(summary.images, 10);
  assert.equal(summary.partialBatches, 1);
  assert.deepEqual(summary.labels, { 0: 4, 1: 3, 2: 3 });
  assert.equal(summary.channels.length, 3);
  const text = sh(`${cli} inspect shards --contact-sheet sheet.png --count 5`);
  assert.deepEqual(text.status, [0], text.stderr);
  assert.match(
    text.stdout.toString(),
    /train: 10 images in 3 batches of 4 \(1 partial\), 3 shard files, images 3x16x16, 3 labels, all sha256 checksums verified/,
  );
  assert.ok(readFileSync(join(dir, 'sheet.png')).subarray(1, 4).toString() === 'PNG');
});

test('a corrupt or truncated shard stops read with exit 2 naming the file', () => {
  sh(`${cli} batch --size 4 --out-dir bad < images.msgpack`);
  const file = join(dir, 'bad', 'train-00001.msgpack');
  const bytes = readFileSync(file);
  bytes[bytes.length - 10] ^= 1;
  writeFileSync(file, bytes);
  const r = sh(`${cli} read bad > /dev/null`);
  assert.deepEqual(r.status, [2]);
  assert.match(r.stderr, /alexnet-stream read: .*bad\/train-00001\.msgpack: sha256 checksum mismatch/);
  writeFileSync(file, bytes.subarray(0, 100));
  const t = sh(`${cli} read bad --no-verify > /dev/null`);
  assert.deepEqual(t.status, [2]);
  assert.match(t.stderr, /train-00001\.msgpack: (truncated|corrupt) shard/);
});

test('a writer killed mid-run leaves nothing a reader takes as a complete set', async () => {
  const { bytes } = imageStream(40, 16, 2);
  const child = spawn(process.execPath, [CLI, 'batch', '--size', '4', '--out-dir', join(dir, 'killed')], { stdio: ['pipe', 'ignore', 'pipe'] });
  child.stdin.write(bytes.subarray(0, Math.floor(bytes.length / 2))); // half the stream, then no end
  const shardsDir = join(dir, 'killed');
  for (let i = 0; i < 500 && !(existsSync(shardsDir) && readdirSync(shardsDir).some((n) => n.endsWith('.msgpack'))); i++)
    await new Promise((r) => setTimeout(r, 10));
  assert.ok(
    readdirSync(shardsDir).some((n) => n.endsWith('.msgpack')),
    'some shards were written before the kill',
  );
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const r = sh(`${cli} read killed > /dev/null`);
  assert.deepEqual(r.status, [2]);
  assert.match(r.stderr, /killed: no index\.json: not a shard directory, or its writer did not finish/);
});

test('foreign or inconsistent input and bad options exit 2 with a clear message', () => {
  const two = imageStream(2, 16).images;
  const mixed = Buffer.concat([...wholeStream(makeHeader('image', { classNames: ['c0', 'c1', 'c2'] }), [...two, imageStream(1, 8).images[0]])].map(packRecord));
  writeFileSync(join(dir, 'mixed.msgpack'), mixed);
  const f32: BatchRecord = {
    type: 'batch',
    dtype: 'float32',
    shape: [1, 3, 16, 16],
    layout: 'NCHW',
    data: new Float32Array(768),
    labels: new Int32Array(1),
    keys: ['f'],
  };
  writeFileSync(
    join(dir, 'float32.msgpack'),
    Buffer.concat([packRecord(makeHeader('batch')), packRecord(f32), packRecord(makeTrailer({ records: 1, images: 1 }))]),
  );
  const cases: [string, RegExp][] = [
    [`${cli} batch --size 4 < mixed.msgpack > /dev/null`, /batch: record 4 \(c0\/img0\.jpg\): image is 3x8x8 but the batch holds 3x16x16 images/],
    [
      `${cli} augment --mean mean.npy --crop 12 < float32.msgpack > /dev/null`,
      /augment: record 2 \(batch starting with f\): augment reads uint8 batches, this one is float32 \(already augmented\?\)/,
    ],
    [`${cli} augment --mean mean.npy --crop 17 < float32.msgpack > /dev/null`, /augment: Expected a --crop no larger than the 16x16 images but received 17/],
    [`${cli} batch --size 0 < images.msgpack`, /Expected an integer between 1 and 1048576 for --size but received 0\n/],
    [`${cli} read no-such-dir`, /read: no-such-dir: no such directory/],
    [`${cli} read shards --prefix val`, /no complete shard set with prefix "val" \(it has "train"/],
    [`${cli} augment --mean missing.npy < images.msgpack`, /missing\.npy: cannot read the mean image \(no such file\)/],
    [`${cli} augment --mean mean.npy --crop 12 < images.msgpack`, /stdin: augment reads batch records but the stream carries image records/],
    [`echo hello | ${cli} batch --size 2`, /stdin(: not a valid msgpack record stream| record 1: expected a record)/],
    [`${cli} augment --mean mean.npy --center --mirror < /dev/null`, /--center takes the fixed center crop without mirroring/],
  ];
  for (const [script, message] of cases) {
    const r = sh(script);
    assert.equal(r.status[r.status.length - 1], 2, `${script}\n${r.stderr}`);
    assert.match(r.stderr, message, script);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});
