import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeNpy } from '@alexnet-stream/core';
import type { ModelSpec } from './spec';
import { initParameters } from './init';
import {
  exportTheanoNpy,
  importMeanImage,
  importTheanoNpy,
  theanoEpochs,
  theanoFiles,
  theanoLearningRate,
  theanoNumClasses,
  transpose2d,
} from './import-theano';

/** conv 4->6 (group 2, 3x3) on 4x5x5 input, then fc 54->3: the seed's grouped layout in miniature. */
const tinyGrouped: ModelSpec = {
  specVersion: 1,
  preset: 'theano-alexnet',
  inputChannels: 4,
  inputSize: 5,
  numClasses: 3,
  layers: [
    {
      kind: 'conv',
      name: 'conv1',
      outChannels: 6,
      kernel: 3,
      stride: 1,
      pad: 0,
      group: 2,
      weightInit: { dist: 'normal', std: 1 },
      biasInit: { dist: 'normal', std: 1 },
    },
    { kind: 'flatten', name: 'flatten' },
    { kind: 'fc', name: 'fc8', outFeatures: 3, weightInit: { dist: 'normal', std: 1 }, biasInit: { dist: 'normal', std: 1 } },
  ],
};

test("theanoFiles lists the seed's names and shapes by layer index", () => {
  assert.deepEqual(
    theanoFiles(tinyGrouped, 7).map((f) => `${f.file} ${f.param} (${f.shape.join(',')})`),
    [
      'W0_0_7.npy conv1.weight (2,3,3,3)',
      'W1_0_7.npy conv1.weight (2,3,3,3)',
      'b0_0_7.npy conv1.bias (3)',
      'b1_0_7.npy conv1.bias (3)',
      'W_1_7.npy fc8.weight (54,3)',
      'b_1_7.npy fc8.bias (3)',
    ],
  );
  const g4: ModelSpec = { ...tinyGrouped, layers: tinyGrouped.layers.map((l) => (l.kind === 'conv' ? { ...l, group: 4, outChannels: 8 } : l)) };
  assert.throws(() => theanoFiles(g4, 1), /conv1: group 4 has no theano_alexnet file layout/);
});

test('a small grouped conv by hand: c01b halves, flipped, become OIHW', () => {
  const dir = mkdtempSync(join(tmpdir(), 'theano-unit-'));
  const w = initParameters(tinyGrouped, 3);
  exportTheanoNpy(tinyGrouped, w, dir, 1);
  // Overwrite W1 with a hand-made kernel: only [c=1, y=0, x=2, o=2] is set.
  const k = new Float32Array(2 * 3 * 3 * 3);
  k[((1 * 3 + 0) * 3 + 2) * 3 + 2] = 5;
  writeFileSync(join(dir, 'W1_0_1.npy'), encodeNpy(k, [2, 3, 3, 3]));
  const flipped = importTheanoNpy(dir, 1, tinyGrouped)['conv1.weight'];
  const plain = importTheanoNpy(dir, 1, tinyGrouped, { flip: false })['conv1.weight'];
  // Output channel 3 + 2 = 5, input 1 of its group; flipped: y 0 -> 2, x 2 -> 0.
  const at = (o: number, c: number, y: number, x: number) => ((o * 2 + c) * 3 + y) * 3 + x;
  assert.equal(flipped[at(5, 1, 2, 0)], 5);
  assert.equal(plain[at(5, 1, 0, 2)], 5);
  assert.equal(
    flipped.slice(3 * 18).reduce((a, b) => a + Math.abs(b), 0),
    5,
    'nothing else in group 1',
  );
  assert.deepEqual(flipped.slice(0, 3 * 18), w['conv1.weight'].slice(0, 3 * 18), 'group 0 untouched');
  rmSync(dir, { recursive: true });
});

test('missing files: all named, with the epochs that are there', () => {
  const dir = mkdtempSync(join(tmpdir(), 'theano-unit-'));
  exportTheanoNpy(tinyGrouped, initParameters(tinyGrouped, 3), dir, 4);
  assert.deepEqual(theanoEpochs(dir), [4]);
  assert.equal(theanoNumClasses(dir, 4, 1), 3);
  assert.throws(
    () => importTheanoNpy(dir, 5, tinyGrouped),
    /W0_0_5.npy: missing \(and 5 more: W1_0_5.npy, b0_0_5.npy, b1_0_5.npy, W_1_5.npy, b_1_5.npy\); epochs found there: 4/,
  );
  unlinkSync(join(dir, 'b1_0_4.npy'));
  assert.throws(
    () => importTheanoNpy(dir, 4, tinyGrouped),
    (e: Error) => e.name === 'InputError' && /b1_0_4.npy: missing; epochs found there: 4$/.test(e.message),
  );
  assert.equal(theanoLearningRate(dir, 4), undefined);
  writeFileSync(join(dir, 'lr_4.npy'), encodeNpy(new Float32Array([0.001]), []));
  assert.equal(theanoLearningRate(dir, 4), Math.fround(0.001));
  assert.ok(readdirSync(dir).every((n) => !n.includes('.tmp')));
  rmSync(dir, { recursive: true });
});

test('mean image: CHW float32 as is; HWC and float64/uint8 converted with a notice; other shapes refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'theano-unit-'));
  const chw = Float32Array.from({ length: 3 * 2 * 4 }, (_, i) => i);
  writeFileSync(join(dir, 'chw.npy'), encodeNpy(chw, [3, 2, 4]));
  const a = importMeanImage(join(dir, 'chw.npy'));
  assert.deepEqual(a.shape, [3, 2, 4]);
  assert.deepEqual(a.data, chw);
  assert.equal(a.notice, undefined);
  const hwc = Uint8Array.from({ length: 2 * 4 * 3 }, (_, i) => i);
  writeFileSync(join(dir, 'hwc.npy'), encodeNpy(hwc, [2, 4, 3]));
  const b = importMeanImage(join(dir, 'hwc.npy'));
  assert.deepEqual(b.shape, [3, 2, 4]);
  assert.equal(b.data[(2 * 2 + 1) * 4 + 3], hwc[(1 * 4 + 3) * 3 + 2]);
  assert.match(b.notice!, /converted uint8 to float32; read \(2, 4, 3\) as HWC/);
  writeFileSync(join(dir, 'bad.npy'), encodeNpy(new Float32Array(8), [2, 4]));
  assert.throws(() => importMeanImage(join(dir, 'bad.npy')), /bad.npy: shape \(2, 4\), expected a mean image \(3, H, W\)/);
  rmSync(dir, { recursive: true });
});

test('transpose2d handles sizes that are not multiples of its tile', () => {
  const rows = 70,
    cols = 131;
  const src = Float32Array.from({ length: rows * cols }, (_, i) => i);
  const t = transpose2d(src, rows, cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) assert.equal(t[c * rows + r], src[r * cols + c]);
});
