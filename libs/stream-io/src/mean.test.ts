import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { encodeNpy } from '@alexnet-stream/core';
import { MeanAccumulator, MeanStage, readMeanNpy, writeMeanNpy } from './mean';
import { type BatchRecord, type ImageRecord, makeHeader, makeTrailer, type StreamRecord } from './records';

function image(key: string, values: number[], c = 1, h = 1, w = values.length / c / h): ImageRecord {
  return { type: 'image', key, label: 0, channels: c, height: h, width: w, data: Uint8Array.from(values) };
}

test('mean of images equals the hand-computed mean, per pixel', () => {
  const acc = new MeanAccumulator();
  acc.addImage(image('a', [0, 10, 255, 1], 1, 2, 2));
  acc.addImage(image('b', [3, 20, 254, 2], 1, 2, 2));
  acc.addImage(image('c', [3, 0, 0, 0], 1, 2, 2));
  const m = acc.mean();
  assert.deepEqual([m.channels, m.height, m.width], [1, 2, 2]);
  // (0+3+3)/3 = 2, (10+20+0)/3 = 10, (255+254+0)/3 = 169.666…, (1+2+0)/3 = 1
  assert.deepEqual(Array.from(m.data), [2, 10, Math.fround(509 / 3), 1]);
  assert.equal(acc.count, 3);
});

test('a batch adds each of its images; float64 accumulation keeps 1e6 images exact', () => {
  const acc = new MeanAccumulator();
  const batch: BatchRecord = {
    type: 'batch',
    dtype: 'uint8',
    shape: [2, 1, 1, 2],
    layout: 'NCHW',
    data: Uint8Array.from([1, 2, 3, 4]),
    labels: new Int32Array(2),
    keys: ['x', 'y'],
  };
  acc.addBatch(batch);
  assert.deepEqual(Array.from(acc.mean().data), [2, 3]);
  // float32 accumulation would lose integers above 2^24 = 16.7M: 1e6 x 255 = 2.55e8 must stay exact.
  const big = new MeanAccumulator();
  const one = image('k', [255, 1]);
  for (let i = 0; i < 1_000_000; i++) big.addImage(one);
  big.addImage(image('k', [0, 0]));
  assert.equal(big.mean().data[0], Math.fround((255 * 1e6) / (1e6 + 1)));
});

test('images of different sizes and an empty mean are refused by name', () => {
  const acc = new MeanAccumulator();
  acc.addImage(image('a.jpg', [1, 2, 3], 3, 1, 1));
  assert.throws(() => acc.addImage(image('b.jpg', [1, 2, 3, 4, 5, 6], 3, 1, 2)), /b\.jpg: image is 3x1x2 but earlier images are 3x1x1/);
  assert.throws(() => new MeanAccumulator().mean(), /empty dataset/);
  const f32: BatchRecord = {
    type: 'batch',
    dtype: 'float32',
    shape: [1, 1, 1, 1],
    layout: 'NCHW',
    data: new Float32Array(1),
    labels: new Int32Array(1),
    keys: ['z'],
  };
  assert.throws(() => acc.addBatch(f32), /float32 \(already augmented\?\)/);
});

test('MeanStage passes every record through unchanged and accumulates', async () => {
  const records: StreamRecord[] = [makeHeader('image'), image('a', [2, 4]), image('b', [4, 8]), makeTrailer({ records: 2 })];
  const out: StreamRecord[] = [];
  const stage = new MeanStage();
  await pipeline(
    Readable.from(records),
    stage,
    new Writable({
      objectMode: true,
      write(r, _e, cb) {
        out.push(r);
        cb();
      },
    }),
  );
  assert.equal(out.length, 4);
  for (let i = 0; i < 4; i++) assert.equal(out[i], records[i]);
  assert.deepEqual(Array.from(stage.accumulator.mean().data), [3, 6]);
  // without its trailer the input is incomplete: the stage fails instead of ending
  await assert.rejects(
    pipeline(
      Readable.from(records.slice(0, 3)),
      new MeanStage(),
      new Writable({
        objectMode: true,
        write(_r, _e, cb) {
          cb();
        },
      }),
    ),
    /ended after 2 records without its trailer/,
  );
});

test('mean.npy round trip: float32 (C,H,W), atomic (no temp file left), seed-style float64 accepted', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mean-'));
  try {
    const path = join(dir, 'mean.npy');
    await writeMeanNpy(path, { channels: 3, height: 1, width: 2, data: Float32Array.from([1, 2, 3, 4, 5, 6.5]) });
    assert.deepEqual(await readdir(dir), ['mean.npy']);
    const back = await readMeanNpy(path);
    assert.deepEqual([back.channels, back.height, back.width], [3, 1, 2]);
    assert.deepEqual(Array.from(back.data), [1, 2, 3, 4, 5, 6.5]);
    assert.match((await readFile(path)).subarray(0, 128).toString('latin1'), /'descr': '<f4'.*'shape': \(3, 1, 2\)/);
    const f64 = join(dir, 'f64.npy');
    await writeMeanNpy(f64, back); // overwrite path
    const { writeFile } = await import('node:fs/promises');
    await writeFile(f64, encodeNpy(Float64Array.from([0.5, 1.5]), [1, 1, 2]));
    assert.deepEqual(Array.from((await readMeanNpy(f64)).data), [0.5, 1.5]);
    await writeFile(f64, encodeNpy(Float32Array.from([0.5, 1.5]), [2]));
    await assert.rejects(readMeanNpy(f64), /must have shape \(C, H, W\), this one is \(2\)/);
    await assert.rejects(readMeanNpy(join(dir, 'nope.npy')), /nope\.npy: cannot read the mean image \(no such file\)/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
