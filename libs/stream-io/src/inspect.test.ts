import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BatchStage } from './batch';
import { formatShardDirSummary, formatSummary, inspectRecords, inspectShardDir } from './inspect';
import { type BatchRecord, type ImageRecord, makeHeader, wholeStream } from './records';
import { ShardWriter } from './shard-writer';

const img = (key: string, label: number, values: number[]): ImageRecord => ({
  type: 'image',
  key,
  label,
  channels: 2,
  height: 1,
  width: 2,
  data: Uint8Array.from(values),
});

test('image stream summary: counts, shapes, label histogram, per-channel mean/std/min/max by hand', () => {
  const s = inspectRecords([
    makeHeader('image', { classNames: ['cat', 'dog'], producer: 'test' }),
    img('a', 0, [0, 10, 100, 100]),
    img('b', 1, [20, 30, 50, 250]),
    img('c', 1, [0, 0, 0, 0]),
  ]);
  assert.equal(s.kind, 'image');
  assert.equal(s.records, 3);
  assert.equal(s.images, 3);
  assert.deepEqual(s.shapes, { '2x1x2': 3 });
  assert.deepEqual(s.labels, { 0: 1, 1: 2 });
  // channel 0 values: 0 10 20 30 0 0 → mean 10, E[x²] = (100+400+900)/6 = 233.33, var = 133.33
  assert.equal(s.channels[0].mean, 10);
  assert.ok(Math.abs(s.channels[0].std - Math.sqrt(400 / 3)) < 1e-12);
  assert.deepEqual([s.channels[0].min, s.channels[0].max], [0, 30]);
  // channel 1 values: 100 100 50 250 0 0 → mean 83.33…
  assert.ok(Math.abs(s.channels[1].mean - 500 / 6) < 1e-12);
  assert.deepEqual([s.channels[1].min, s.channels[1].max], [0, 250]);
  const text = formatSummary(s, 'stdin');
  assert.match(text, /records: 3, images: 3/);
  assert.match(text, /\s1 dog\s+2 #+/);
});

test('batch streams count images inside batches and partial batches; float32 stats', () => {
  const b: BatchRecord = {
    type: 'batch',
    dtype: 'float32',
    shape: [2, 1, 1, 2],
    layout: 'NCHW',
    data: Float32Array.from([-1.5, 1.5, 0.5, -0.5]),
    labels: Int32Array.from([3, 3]),
    keys: ['x', 'y'],
    partial: true,
  };
  const s = inspectRecords([makeHeader('batch'), b]);
  assert.equal(s.images, 2);
  assert.equal(s.partialBatches, 1);
  assert.deepEqual(s.shapes, { '2x1x1x2 float32': 1 });
  assert.deepEqual(s.labels, { 3: 2 });
  assert.deepEqual(s.channels, [{ mean: 0, std: Math.sqrt((2.25 * 2 + 0.25 * 2) / 4), min: -1.5, max: 1.5 }]);
});

test('shard dir summary covers every prefix with its index facts', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'inspect-'));
  try {
    for (const [prefix, n] of [
      ['train', 5],
      ['val', 2],
    ] as const) {
      const images = Array.from(
        { length: n },
        (_, i): ImageRecord => ({ type: 'image', key: `${prefix}${i}`, label: i % 2, channels: 3, height: 1, width: 2, data: new Uint8Array(6).fill(i) }),
      );
      await pipeline(
        Readable.from(wholeStream(makeHeader('image', { classNames: ['cat', 'dog'] }), images)),
        new BatchStage({ batchSize: 2 }),
        new ShardWriter({ dir, prefix, fsync: false }),
      );
    }
    const result = await inspectShardDir(dir);
    assert.deepEqual(Object.keys(result.prefixes), ['train', 'val']);
    assert.equal(result.prefixes.train.summary.images, 5);
    assert.equal(result.prefixes.train.index.partialBatches, 1);
    assert.equal(result.prefixes.val.summary.images, 2);
    assert.equal(result.prefixes.train.summary.complete, true, 'every set read to its trailer');
    assert.equal(result.prefixes.train.summary.channels[0].max, 4);
    const text = formatShardDirSummary(result);
    assert.match(text, /train: 5 images in 3 batches of 2 \(1 partial\), 3 shard files, images 3x1x2, 2 labels, all sha256 checksums verified/);
    await assert.rejects(inspectShardDir(dir, { prefix: 'test' }), /no complete shard set with prefix "test"/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
