import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NamedTensors } from '@alexnet-stream/core';
import { alexnetSpec, type ModelSpec, narrowSpec, parameterList } from '@alexnet-stream/model-alexnet';
import { float, GraphBuilder, int, ints } from './graph-builder';
import { importOnnxWeights } from './import-onnx';
import { lowerInference } from './lower';
import { writeOnnx } from './files';

const dir = mkdtempSync(join(tmpdir(), 'import-onnx-'));
// Full-size models: 1.4 GB of files per run, removed at the end.
after(() => rmSync(dir, { recursive: true, force: true }));

const made = new Map<string, NamedTensors>();

/** Distinct values per tensor so that a swapped or transposed tensor cannot pass (made once per spec). */
function weightsFor(spec: ModelSpec): NamedTensors {
  const key = JSON.stringify(spec);
  if (!made.has(key)) made.set(key, makeWeights(spec));
  return made.get(key)!;
}

function makeWeights(spec: ModelSpec): NamedTensors {
  const w: NamedTensors = {};
  parameterList(spec).forEach((p, k) => {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const t = new Float32Array(n);
    for (let i = 0; i < n; i++) t[i] = Math.fround(k + 1 + (i % 9973) * 1e-4 + Math.floor(i / 9973) * 1e-8);
    w[p.name] = t;
  });
  return w;
}

/** [rows, cols] → [cols, rows], by 64x64 blocks (a plain double loop takes ~1 s for fc6). */
function transpose(t: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(t.length);
  for (let r0 = 0; r0 < rows; r0 += 64)
    for (let c0 = 0; c0 < cols; c0 += 64)
      for (let r = r0; r < Math.min(r0 + 64, rows); r++) for (let c = c0; c < Math.min(c0 + 64, cols); c++) out[c * rows + r] = t[r * cols + c];
  return out;
}

/** Each model file is written once per test file (a full-size AlexNet is 244 MB to encode and write). */
const written = new Map<string, string>();
function once(key: string, write: () => string): string {
  if (!written.has(key)) written.set(key, write());
  return written.get(key)!;
}

/**
 * The ONNX Model Zoo's bvlcalexnet as converted from Caffe2: input `data_0` [1,3,224,224],
 * initializers `conv1_w_0`…, conv → relu → LRN → MaxPool with ceil-mode end padding,
 * a Reshape with a constant shape, Gemm transB=1, Dropout nodes, Softmax `prob_1`.
 */
function bvlcZooModel(w: NamedTensors, options: { lrnBeta?: number; fcTransB0?: boolean } = {}): string {
  return once(`bvlc ${JSON.stringify(options)}`, () => writeBvlcZooModel(w, options));
}

function writeBvlcZooModel(w: NamedTensors, options: { lrnBeta?: number; fcTransB0?: boolean }): string {
  const spec = alexnetSpec('bvlc-alexnet');
  const shapes = new Map(parameterList(spec).map((p) => [p.name, p.shape]));
  const g = new GraphBuilder('bvlcalexnet');
  let x = g.input('data_0', 'float32', [1, 3, 224, 224]);
  const conv = (i: number, k: number, s: number, p: number, group: number) => {
    const W = g.initializer(`conv${i}_w_0`, w[`conv${i}.weight`], shapes.get(`conv${i}.weight`)!);
    const B = g.initializer(`conv${i}_b_0`, w[`conv${i}.bias`], shapes.get(`conv${i}.bias`)!);
    x = g.op(
      'Conv',
      [x, W, B],
      { kernel_shape: ints([k, k]), strides: ints([s, s]), pads: ints([p, p, p, p]), group: int(group), dilations: ints([1, 1]) },
      `conv${i}_1`,
    );
    x = g.op('Relu', [x], {}, `conv${i}_2`);
  };
  const lrn = (i: number) => (x = g.op('LRN', [x], { size: int(5), alpha: float(1e-4), beta: float(options.lrnBeta ?? 0.75), bias: float(1) }, `norm${i}_1`));
  const pool = (i: number) => (x = g.op('MaxPool', [x], { kernel_shape: ints([3, 3]), strides: ints([2, 2]), pads: ints([0, 0, 1, 1]) }, `pool${i}_1`));
  conv(1, 11, 4, 0, 1);
  lrn(1);
  pool(1);
  conv(2, 5, 1, 2, 2);
  lrn(2);
  pool(2);
  conv(3, 3, 1, 1, 1);
  conv(4, 3, 1, 1, 2);
  conv(5, 3, 1, 1, 2);
  pool(5);
  const shape = g.initializer('OC2_DUMMY_1', [1, 9216], [2]);
  x = g.op('Reshape', [x, shape], {}, 'OC2_DUMMY_0');
  for (const [i, out, inF] of [
    [6, 4096, 9216],
    [7, 4096, 4096],
    [8, 1000, 4096],
  ] as const) {
    const transB = options.fcTransB0 ? 0 : 1;
    const data = transB ? w[`fc${i}.weight`] : transpose(w[`fc${i}.weight`], out, inF);
    const W = g.initializer(`fc${i}_w_0`, data, transB ? [out, inF] : [inF, out]);
    const B = g.initializer(`fc${i}_b_0`, w[`fc${i}.bias`], [out]);
    x = g.op('Gemm', [x, W, B], { transB: int(transB) }, `fc${i}_1`);
    if (i < 8) {
      x = g.op('Relu', [x], {}, `fc${i}_2`);
      x = g.node('Dropout', [x], {}, { outputs: [`fc${i}_3`, `_fc${i}_mask_1`] })[0];
    }
  }
  g.output(g.op('Softmax', [x], { axis: int(1) }, 'prob_1'), 'float32', [1, 1000]);
  const path = join(dir, `bvlc-${Math.random().toString(36).slice(2)}.onnx`);
  writeOnnx(path, g.model({ opset: 9 }));
  return path;
}

/**
 * torch.onnx.export(torchvision.models.alexnet().eval()): `features.N.weight`, a 1x1
 * AveragePool for AdaptiveAvgPool2d((6,6)), Flatten, Gemm `classifier.{1,4,6}` (no Dropout
 * in eval), and fc7 as MatMul + Add (as older exporters emit) to cover that form too.
 */
function torchvisionModel(w: NamedTensors, numClasses: number): string {
  return once(`torchvision ${numClasses}`, () => writeTorchvisionModel(w, numClasses));
}

function writeTorchvisionModel(w: NamedTensors, numClasses: number): string {
  const spec = alexnetSpec('torchvision-alexnet', { numClasses });
  const shapes = new Map(parameterList(spec).map((p) => [p.name, p.shape]));
  const g = new GraphBuilder('main_graph');
  let x = g.input('input.1', 'float32', ['batch', 3, 224, 224]);
  const convs = [
    [0, 1, 11, 4, 2],
    [3, 2, 5, 1, 2],
    [6, 3, 3, 1, 1],
    [8, 4, 3, 1, 1],
    [10, 5, 3, 1, 1],
  ] as const;
  for (const [idx, i, k, s, p] of convs) {
    const W = g.initializer(`features.${idx}.weight`, w[`conv${i}.weight`], shapes.get(`conv${i}.weight`)!);
    const B = g.initializer(`features.${idx}.bias`, w[`conv${i}.bias`], shapes.get(`conv${i}.bias`)!);
    x = g.op('Conv', [x, W, B], { kernel_shape: ints([k, k]), strides: ints([s, s]), pads: ints([p, p, p, p]), group: int(1), dilations: ints([1, 1]) });
    x = g.op('Relu', [x]);
    if (i === 1 || i === 2 || i === 5)
      x = g.op('MaxPool', [x], { kernel_shape: ints([3, 3]), strides: ints([2, 2]), pads: ints([0, 0, 0, 0]), ceil_mode: int(0) });
  }
  x = g.op('AveragePool', [x], { kernel_shape: ints([1, 1]), strides: ints([1, 1]) });
  x = g.op('Flatten', [x], { axis: int(1) });
  const fc = (idx: number, i: number) => {
    const W = g.initializer(`classifier.${idx}.weight`, w[`fc${i}.weight`], shapes.get(`fc${i}.weight`)!);
    const B = g.initializer(`classifier.${idx}.bias`, w[`fc${i}.bias`], shapes.get(`fc${i}.bias`)!);
    return g.op('Gemm', [x, W, B], { alpha: float(1), beta: float(1), transB: int(1) });
  };
  x = g.op('Relu', [fc(1, 6)]);
  const [out7, in7] = shapes.get('fc7.weight')!;
  const W7 = g.initializer('onnx::MatMul_7', transpose(w['fc7.weight'], out7, in7), [in7, out7]);
  x = g.op('MatMul', [x, W7]);
  x = g.op('Add', [g.initializer('classifier.4.bias', w['fc7.bias'], [out7]), x]);
  x = g.op('Relu', [x]);
  g.output(fc(6, 8), 'float32', ['batch', numClasses], '50');
  const path = join(dir, `tv-${Math.random().toString(36).slice(2)}.onnx`);
  writeOnnx(path, g.model({ opset: 13, producer: 'pytorch' }));
  return path;
}

function assertSameWeights(actual: NamedTensors, expected: NamedTensors): void {
  assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort());
  for (const name of Object.keys(expected)) {
    assert.ok(
      Buffer.from(actual[name].buffer, actual[name].byteOffset, actual[name].byteLength).equals(
        Buffer.from(expected[name].buffer, expected[name].byteOffset, expected[name].byteLength),
      ),
      `${name} differs`,
    );
  }
}

test('bvlcalexnet (ONNX Model Zoo layout, ceil-mode pool padding) imports as bvlc-alexnet, bit-exact', () => {
  const spec = alexnetSpec('bvlc-alexnet');
  const w = weightsFor(spec);
  const imported = importOnnxWeights(bvlcZooModel(w));
  assert.equal(imported.spec.preset, 'bvlc-alexnet');
  assert.equal(imported.spec.numClasses, 1000);
  assert.match(imported.notes.join(), /ceil mode/);
  assertSameWeights(imported.weights, w);
});

test('Gemm with transB=0 ([in, out] weights) is transposed to [out, in]', () => {
  const w = weightsFor(alexnetSpec('bvlc-alexnet'));
  assertSameWeights(importOnnxWeights(bvlcZooModel(w, { fcTransB0: true })).weights, w);
});

test('a torchvision export (features.N / classifier.N, Flatten, MatMul+Add) imports as torchvision-alexnet', () => {
  const spec = alexnetSpec('torchvision-alexnet', { numClasses: 10 });
  const w = weightsFor(spec);
  const imported = importOnnxWeights(torchvisionModel(w, 10));
  assert.equal(imported.spec.preset, 'torchvision-alexnet');
  assert.equal(imported.spec.numClasses, 10);
  assertSameWeights(imported.weights, w);
});

test('our own export round-trips: spec (from the metadata), class names and bit-exact weights', () => {
  // The spec comes from the metadata, not from matching shapes to a preset: a narrowed one does.
  const spec = narrowSpec(alexnetSpec('theano-alexnet', { numClasses: 4, dropout: 0.3 }), 8, 64);
  const w = weightsFor(spec);
  const path = join(dir, 'ours.onnx');
  writeOnnx(path, lowerInference(spec, w, { classNames: ['a', 'b', 'c', 'd'] }));
  const imported = importOnnxWeights(path);
  assert.deepEqual(imported.spec, spec);
  assert.deepEqual(imported.classNames, ['a', 'b', 'c', 'd']);
  assertSameWeights(imported.weights, w);
});

test('another architecture is refused naming what differs', () => {
  const w = weightsFor(alexnetSpec('bvlc-alexnet'));
  assert.throws(
    () => importOnnxWeights(bvlcZooModel(w, { lrnBeta: 0.5 })),
    (e: Error & { exitCode?: number }) =>
      e.exitCode === 2 &&
      /not an AlexNet of the presets.*layer 3 \(norm1_1\) is LRN size 5 alpha 0\.0001 beta 0\.5 bias 1, bvlc-alexnet has norm1: LRN size 5 alpha 0\.0001 beta 0\.75/.test(
        e.message,
      ),
  );
  // A small CNN: conv -> relu -> global pool -> fc.
  const g = new GraphBuilder('tiny');
  let x = g.input('x', 'float32', [1, 3, 32, 32]);
  x = g.op('Conv', [x, g.initializer('w', new Float32Array(8 * 27), [8, 3, 3, 3]), g.initializer('b', new Float32Array(8), [8])], {
    kernel_shape: ints([3, 3]),
  });
  x = g.op('GlobalAveragePool', [g.op('Relu', [x])]);
  g.output(x, 'float32', [1, 8, 1, 1]);
  const path = join(dir, 'tiny.onnx');
  writeOnnx(path, g.model());
  assert.throws(() => importOnnxWeights(path), /tiny\.onnx: GlobalAveragePool node .* after 2 recognised layers is not an AlexNet layer/);
});

test('a truncated .onnx file is refused naming the file (exit code 2)', () => {
  const w = weightsFor(alexnetSpec('torchvision-alexnet', { numClasses: 10 }));
  const path = torchvisionModel(w, 10);
  const cut = join(dir, 'cut.onnx');
  writeFileSync(cut, readFileSync(path).subarray(0, 1_000_000));
  assert.throws(
    () => importOnnxWeights(cut),
    (e: Error & { exitCode?: number }) => e.exitCode === 2 && /cut\.onnx: not a readable ONNX model/.test(e.message),
  );
});
