/**
 * predict's preprocessing (onnx-export, which loads no image codec and does not depend on
 * stream-io) must give the same float32 values as the pipeline's augment stage with a center
 * plan: `centerCropMinusMean` against stream-io's `cropMirrorSubtract`, bit for bit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '@alexnet-stream/core';
import { centerCropMinusMean, meanFromChannels } from '@alexnet-stream/onnx-export';
import { type BatchRecord, centerOffset, cropMirrorSubtract } from '@alexnet-stream/stream-io';

test("centerCropMinusMean equals augment's center crop minus the mean image, bit for bit", () => {
  const rng = new Rng(5);
  for (const [size, crop] of [
    [256, 227],
    [67, 63],
    [9, 4],
  ]) {
    const pixels = Uint8Array.from({ length: 3 * size * size }, () => rng.nextInt(256));
    const mean = { channels: 3, height: size, width: size, data: Float32Array.from({ length: 3 * size * size }, () => 255 * rng.nextFloat()) };
    const ours = new Float32Array(3 * crop * crop);
    centerCropMinusMean(pixels, mean, crop, ours);
    const batch: BatchRecord = {
      type: 'batch',
      dtype: 'uint8',
      shape: [1, 3, size, size],
      layout: 'NCHW',
      data: pixels,
      labels: new Int32Array(1),
      keys: ['x'],
    };
    const offset = centerOffset(size, crop);
    const pipeline = cropMirrorSubtract(batch, mean, { crop, offsetY: Int32Array.of(offset), offsetX: Int32Array.of(offset), mirror: new Uint8Array(1) });
    assert.deepEqual(Buffer.from(ours.buffer), Buffer.from(pipeline.buffer), `${size} -> ${crop}`);
  }
});

test('meanFromChannels spreads per-channel means over a size x size image', () => {
  const m = meanFromChannels([1, 2, 3], 2);
  assert.deepEqual([m.channels, m.height, m.width], [3, 2, 2]);
  assert.deepEqual(Array.from(m.data), [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
});
