import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Rng } from '@alexnet-stream/core';
import { AugmentStage, augmentBatch, centerOffset, cropMirrorSubtract, planCrops } from './augment';
import type { MeanImage } from '@alexnet-stream/core';
import { type BatchRecord, type DataRecord, makeHeader, type StreamRecord, wholeStream } from './records';

function randomBatch(n: number, c: number, h: number, w: number, seed = 1): BatchRecord {
  const rng = new Rng(seed);
  const data = new Uint8Array(n * c * h * w).map(() => rng.nextUint32() & 255);
  return {
    type: 'batch',
    dtype: 'uint8',
    shape: [n, c, h, w],
    layout: 'NCHW',
    data,
    labels: Int32Array.from({ length: n }, (_, i) => i),
    keys: Array.from({ length: n }, (_, i) => `k${i}`),
  };
}

function randomMean(c: number, h: number, w: number): MeanImage {
  const rng = new Rng(99);
  return { channels: c, height: h, width: w, data: new Float32Array(c * h * w).map(() => rng.nextFloat() * 255) };
}

/**
 * Independent reference written the seed's way: subtract the mean from the full image, mirror
 * the whole image (reverse columns), then crop; with plain nested arrays, no index tricks.
 */
function reference(batch: BatchRecord, mean: MeanImage, oy: number[], ox: number[], mirror: number[], crop: number): number[] {
  const [n, c, h, w] = batch.shape;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) {
      const img: number[][] = [];
      for (let y = 0; y < h; y++) {
        const row: number[] = [];
        for (let x = 0; x < w; x++) row.push(Math.fround(batch.data[((i * c + ch) * h + y) * w + x] - mean.data[(ch * h + y) * w + x]));
        img.push(mirror[i] ? row.reverse() : row);
      }
      for (let y = 0; y < crop; y++) for (let x = 0; x < crop; x++) out.push(img[oy[i] + y][ox[i] + x]);
    }
  }
  return out;
}

test('crop/mirror/subtract matches the seed-order reference for random plans', () => {
  const batch = randomBatch(6, 3, 9, 11);
  const mean = randomMean(3, 9, 11);
  const plan = planCrops(6, { crop: 5, height: 9, width: 11, mirror: true }, new Rng(5));
  assert.ok(plan.mirror.includes(1) && plan.mirror.includes(0), 'the plan exercises both mirrored and plain images');
  const got = Array.from(cropMirrorSubtract(batch, mean, plan));
  assert.deepEqual(got, reference(batch, mean, Array.from(plan.offsetY), Array.from(plan.offsetX), Array.from(plan.mirror), 5));
});

test('center crop: offset 14 for 256 -> 227, no mirror; values equal the reference', () => {
  assert.equal(centerOffset(256, 227), 14);
  const plan = planCrops(3, { crop: 227, height: 256, width: 256, center: true, mirror: true }, new Rng(0));
  assert.deepEqual(Array.from(plan.offsetY), [14, 14, 14]);
  assert.deepEqual(Array.from(plan.offsetX), [14, 14, 14]);
  assert.deepEqual(Array.from(plan.mirror), [0, 0, 0]);
  const batch = randomBatch(2, 3, 8, 8);
  const mean = randomMean(3, 8, 8);
  const small = planCrops(2, { crop: 5, height: 8, width: 8, center: true }, new Rng(0));
  assert.deepEqual(Array.from(cropMirrorSubtract(batch, mean, small)), reference(batch, mean, [1, 1], [1, 1], [0, 0], 5));
});

test('per-batch plans (one shared crop, the mean-crop path) match the reference, mirrored or not; cached center crops too', () => {
  const batch = randomBatch(5, 3, 9, 10);
  const mean = randomMean(3, 9, 10);
  const seen = new Set<number>();
  for (let seed = 0; seen.size < 2 && seed < 50; seed++) {
    const plan = planCrops(5, { crop: 6, height: 9, width: 10, mirror: true, perBatch: true }, new Rng(seed));
    seen.add(plan.mirror[0]);
    const expected = reference(batch, mean, Array.from(plan.offsetY), Array.from(plan.offsetX), Array.from(plan.mirror), 6);
    assert.deepEqual(Array.from(cropMirrorSubtract(batch, mean, plan)), expected, `seed ${seed}`);
  }
  assert.equal(seen.size, 2, 'both mirrored and plain per-batch plans were checked');
  const center = planCrops(5, { crop: 6, height: 9, width: 10, center: true }, new Rng(0));
  const first = Array.from(cropMirrorSubtract(batch, mean, center));
  assert.deepEqual(Array.from(cropMirrorSubtract(batch, mean, center)), first); // second call: cached mean crop
  assert.deepEqual(first, reference(batch, mean, Array(5).fill(1), Array(5).fill(2), Array(5).fill(0), 6));
});

test('per-batch draws one offset/mirror for all images; per-image varies; offsets cover 0..H-crop', () => {
  const perBatch = planCrops(64, { crop: 3, height: 8, width: 8, mirror: true, perBatch: true }, new Rng(2));
  assert.equal(new Set(perBatch.offsetY).size, 1);
  assert.equal(new Set(perBatch.offsetX).size, 1);
  assert.equal(new Set(perBatch.mirror).size, 1);
  const perImage = planCrops(2000, { crop: 3, height: 8, width: 8, mirror: true }, new Rng(2));
  assert.deepEqual([...new Set(perImage.offsetY)].sort(), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual([...new Set(perImage.offsetX)].sort(), [0, 1, 2, 3, 4, 5]);
  const mirrored = perImage.mirror.reduce((a, b) => a + b, 0);
  assert.ok(mirrored > 900 && mirrored < 1100, `about half mirrored (${mirrored}/2000)`); // 5 sigma ≈ 112
  const plain = planCrops(100, { crop: 3, height: 8, width: 8 }, new Rng(2));
  assert.ok(
    plain.mirror.every((m) => m === 0),
    'no mirror unless asked',
  );
});

test('same seed gives the same crops and bytes; another seed differs', () => {
  const batch = randomBatch(4, 3, 10, 10);
  const mean = randomMean(3, 10, 10);
  const params = { crop: 7, mirror: true };
  const a = augmentBatch(batch, mean, params, new Rng(11));
  const b = augmentBatch(batch, mean, params, new Rng(11));
  const c = augmentBatch(batch, mean, params, new Rng(12));
  assert.deepEqual(Buffer.from(a.data.buffer), Buffer.from(b.data.buffer));
  assert.notDeepEqual(Buffer.from(a.data.buffer), Buffer.from(c.data.buffer));
  assert.deepEqual(a.shape, [4, 3, 7, 7]);
  assert.equal(a.dtype, 'float32');
});

test('writes into a preallocated output buffer and refuses one too small', () => {
  const batch = randomBatch(2, 3, 6, 6);
  const mean = randomMean(3, 6, 6);
  const plan = planCrops(2, { crop: 4, height: 6, width: 6, mirror: true }, new Rng(1));
  const out = new Float32Array(2 * 3 * 16);
  assert.equal(cropMirrorSubtract(batch, mean, plan, out), out);
  assert.deepEqual(Array.from(out), Array.from(cropMirrorSubtract(batch, mean, plan)));
  assert.throws(() => cropMirrorSubtract(batch, mean, plan, new Float32Array(10)), /output holds 10 values, 96 needed/);
});

/** The stage over a whole batch stream of `batches` (header and trailer added). */
async function runStage(batches: DataRecord[], options: ConstructorParameters<typeof AugmentStage>[0]): Promise<StreamRecord[]> {
  const out: StreamRecord[] = [];
  await pipeline(
    Readable.from(wholeStream(makeHeader('batch'), batches)),
    new AugmentStage(options),
    new Writable({
      objectMode: true,
      write(r, _e, cb) {
        out.push(r);
        cb();
      },
    }),
  );
  return out;
}

test('AugmentStage: float32 input, a size unlike the mean, a too-large crop are refused clearly', async () => {
  const mean = randomMean(3, 6, 6);
  const batch = randomBatch(2, 3, 6, 6);
  const [header, out, trailer] = await runStage([batch], { mean, crop: 4, center: true });
  assert.equal((header as unknown as { augment: { crop: number } }).augment.crop, 4);
  assert.equal((header as unknown as { imageSize: number }).imageSize, 4, 'the header declares the cropped size');
  assert.deepEqual((out as BatchRecord).shape, [2, 3, 4, 4]);
  assert.deepEqual(trailer, { type: 'trailer', records: 1, images: 2, producer: 'alexnet-stream augment' });
  const f32 = { ...batch, dtype: 'float32' as const, data: new Float32Array(batch.data.length) };
  await assert.rejects(runStage([f32], { mean, crop: 4 }), /record 2 \(batch starting with k0\): augment reads uint8 batches, this one is float32/);
  await assert.rejects(runStage([randomBatch(1, 3, 7, 7)], { mean, crop: 4 }), /3x7x7 images but the mean image is 3x6x6/);
  assert.throws(() => new AugmentStage({ mean, crop: 7 }), /Expected a crop no larger than the 6x6 images but received 7/);
  assert.throws(
    () => new AugmentStage({ mean, crop: 4, center: true, mirror: true }),
    /center takes the fixed center crop without mirroring; it cannot be combined with mirror or perBatch/,
  );
});
