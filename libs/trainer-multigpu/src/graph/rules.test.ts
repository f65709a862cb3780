/**
 * Every backward rule of rules.ts, one layer at a time, against two independent references:
 *
 * - tfjs autodiff (pure-JS cpu backend): grads of Σ f(x)·dy w.r.t. x, W, b, where f is written
 *   with tfjs ops (grouped conv as split → conv2d → concat, as tfjs has no group argument;
 *   LRN with alpha/size because tfjs does not divide alpha by the window size).
 * - central finite differences in float64 (JS loops) along random directions, where tfjs lacks
 *   the op or its semantics differ (grouped conv, LRN in ONNX semantics, stride 4 with odd sizes).
 *
 * Tolerances. onnxruntime and tfjs both compute in float32; each gradient element is a sum of
 * at most a few thousand products, accumulated in different orders (im2col GEMM, ConvTranspose,
 * dilated Conv vs tfjs' direct loops), so they differ by a few float32 ulps of the largest
 * terms: TF_TOLERANCE = 2e-5 of the tensor's largest |value|. Finite differences in float64 with
 * h = 1e-4 have O(h²) ≈ 1e-8 truncation error; the float32 gradient's ⟨g, v⟩ over ~10⁴ terms
 * carries ~1e-6 relative rounding: FD_TOLERANCE = 1e-4 relative to Σ|g·v|.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { Rng } from '@alexnet-stream/core';
import { type ConvLayer, type LayerSpec, type Shape, windowOutputSize } from '@alexnet-stream/model-alexnet';
import { loadOnnxRuntime } from '@alexnet-stream/onnx-export';
import { NCHWC_DOMAIN } from './conv-lowering';
import { DEFAULT_LOWERING, type LoweringOptions } from './rules';
import { nchwcBlockSize } from '../engines/onnxruntime/nchwc';
import { convF64, directionalDerivative, dot, lrnF64, maxRelativeError, oneLayerGraph, randomArray, runModel, sizeOf } from './graph.test-util';

const ort = loadOnnxRuntime();

const TF_TOLERANCE = 2e-5;
const FD_TOLERANCE = 1e-4;

type Tensors = Record<string, Float32Array>;

async function runRule(
  layer: LayerSpec,
  n: number,
  inShape: Shape,
  outShape: Shape,
  values: Tensors,
  paramShapes?: { weight: number[]; bias: number[] },
  lowering: LoweringOptions = DEFAULT_LOWERING,
) {
  const { model, inputs } = oneLayerGraph(layer, n, inShape, outShape, paramShapes, lowering);
  const feeds = Object.fromEntries(Object.entries(inputs).map(([name, shape]) => [name, new ort.Tensor('float32', values[name], shape)]));
  return runModel(model, feeds);
}

/** tfjs: grads of Σ f(args)·dy w.r.t. every arg, NCHW in and out. */
function tfGrads(
  f: (...args: tf.Tensor[]) => tf.Tensor,
  args: { data: Float32Array; shape: number[] }[],
  dy: Float32Array,
): { y: Float32Array; grads: Float32Array[] } {
  return tf.tidy(() => {
    const ts = args.map((a) => tf.tensor(a.data, a.shape));
    const y = f(...ts);
    const dyT = tf.tensor(dy, y.shape);
    const grads = tf.grads((...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), dyT)))(ts);
    return { y: y.dataSync() as Float32Array, grads: grads.map((g) => g.dataSync() as Float32Array) };
  });
}

function tfConv(l: ConvLayer) {
  return (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => {
    const p = l.pad;
    const xh = tf.pad(tf.transpose(x, [0, 2, 3, 1]), [
      [0, 0],
      [p, p],
      [p, p],
      [0, 0],
    ]) as tf.Tensor4D;
    const wh = tf.transpose(w, [2, 3, 1, 0]) as tf.Tensor4D; // OIHW → HWIO
    const xs = l.group === 1 ? [xh] : tf.split(xh, l.group, 3);
    const ws = l.group === 1 ? [wh] : tf.split(wh, l.group, 3);
    const y = tf.concat(
      xs.map((xi, i) => tf.conv2d(xi as tf.Tensor4D, ws[i] as tf.Tensor4D, l.stride, 'valid')),
      3,
    );
    return tf.transpose(tf.add(y, b), [0, 3, 1, 2]);
  };
}

const convCases = [
  { name: '3x3 stride 1 pad 1', c: 3, size: 9, out: 4, k: 3, s: 1, p: 1, g: 1 },
  { name: '7x7 stride 4 pad 0 on 21x21 (output_padding 2, dW cropped)', c: 3, size: 21, out: 4, k: 7, s: 4, p: 0, g: 1 },
  { name: '5x5 stride 1 pad 2 group 2', c: 4, size: 7, out: 6, k: 5, s: 1, p: 2, g: 2 },
  { name: '3x3 stride 2 pad 1 group 2 on 8x8 (even size, output_padding 1)', c: 4, size: 8, out: 4, k: 3, s: 2, p: 1, g: 2 },
  { name: '11x11 stride 4 pad 0 on 27x27 (conv1-like: SpaceToDepth im2col, input cropped)', c: 3, size: 27, out: 5, k: 11, s: 4, p: 0, g: 1 },
  { name: '5x5 stride 2 pad 2 on 10x10 (SpaceToDepth im2col, input padded at the end)', c: 2, size: 10, out: 3, k: 5, s: 2, p: 2, g: 1 },
];

const loweringVariants: [string, LoweringOptions][] = [
  ['fast lowering: dX by flipped-kernel Conv, dW by im2col Gemm', DEFAULT_LOWERING],
  ['dW by Gather im2col + MatMul', { ...DEFAULT_LOWERING, convWeightGrad: 'gather' }],
  ['DESIGN lowering: dX by ConvTranspose, dW by dilated Conv', { ...DEFAULT_LOWERING, convInputGrad: 'convTranspose', convWeightGrad: 'dilatedConv' }],
];

type ConvCase = (typeof convCases)[number];

/** One conv layer of `cc`, batch 2, with seeded random input, weights, bias and output gradient. */
function convSetup(cc: ConvCase, seed: number) {
  const layer: ConvLayer = {
    kind: 'conv',
    name: 'c',
    outChannels: cc.out,
    kernel: cc.k,
    stride: cc.s,
    pad: cc.p,
    group: cc.g,
    weightInit: { dist: 'constant', value: 0 },
    biasInit: { dist: 'constant', value: 0 },
  };
  const n = 2;
  const o = windowOutputSize(cc.size, cc.k, cc.s, cc.p);
  const inShape = [cc.c, cc.size, cc.size],
    outShape = [cc.out, o, o];
  const paramShapes = { weight: [cc.out, cc.c / cc.g, cc.k, cc.k], bias: [cc.out] };
  const rng = new Rng(seed);
  const values: Tensors = {
    x: randomArray(rng, n * sizeOf(inShape)),
    weight: randomArray(rng, sizeOf(paramShapes.weight), 0.3),
    bias: randomArray(rng, cc.out),
    dy: randomArray(rng, n * sizeOf(outShape)),
  };
  return { layer, n, inShape, outShape, paramShapes, values };
}

/** y, dX, dW, db of the lowered rule against tfjs autodiff. */
async function assertConvMatchesTfjs(cc: ConvCase, setup: ReturnType<typeof convSetup>, lowering: LoweringOptions) {
  const { layer, n, inShape, outShape, paramShapes, values } = setup;
  const got = await runRule(layer, n, inShape, outShape, values, paramShapes, lowering);
  const want = tfGrads(
    tfConv(layer),
    [
      { data: values.x, shape: [n, ...inShape] },
      { data: values.weight, shape: paramShapes.weight },
      { data: values.bias, shape: [cc.out] },
    ],
    values.dy,
  );
  assert.ok(maxRelativeError(got.y, want.y) < TF_TOLERANCE, `y: ${maxRelativeError(got.y, want.y)}`);
  for (const [i, name] of (['dx', 'dWeight', 'dBias'] as const).entries()) {
    const err = maxRelativeError(got[name], want.grads[i]);
    assert.ok(err < TF_TOLERANCE, `${name}: relative error ${err}`);
  }
}

for (const cc of convCases)
  for (const [variant, lowering] of loweringVariants) {
    const setup = convSetup(cc, 1);
    const { layer, n, inShape, outShape, paramShapes, values } = setup;

    test(`conv ${cc.name} (${variant}): dX, dW, db equal tfjs autodiff`, () => assertConvMatchesTfjs(cc, setup, lowering));

    test(`conv ${cc.name} (${variant}): dX, dW, db equal float64 central differences`, async () => {
      const got = await runRule(layer, n, inShape, outShape, values, paramShapes, lowering);
      const xShape = [n, ...inShape];
      const objective = (x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number>) =>
        dot(convF64(x, xShape, w, b, cc.out, cc.k, cc.s, cc.p, cc.g), values.dy);
      const dirRng = new Rng(2);
      const checks: [string, Float32Array, (t: Float64Array) => number, Float32Array][] = [
        ['dx', got.dx, (t) => objective(t, values.weight, values.bias), values.x],
        ['dWeight', got.dWeight, (t) => objective(values.x, t, values.bias), values.weight],
        ['dBias', got.dBias, (t) => objective(values.x, values.weight, t), values.bias],
      ];
      for (const [name, grad, f, theta] of checks) {
        const v = randomArray(dirRng, theta.length);
        const fd = directionalDerivative(f, theta, v);
        const scale = grad.reduce((s, g, i) => s + Math.abs(g * v[i]), 0);
        assert.ok(Math.abs(dot(grad, v) - fd) < FD_TOLERANCE * scale, `${name}: ⟨g,v⟩ ${dot(grad, v)} vs finite difference ${fd}`);
      }
    });
  }

// onnxruntime's NCHWc kernels (forward and stride-1 dX) need channel counts in whole blocks of 8
// (AVX2) or 16 (AVX-512): these cases fit both, one per path of `convolve` (image input not
// blocked; blocked input; grouped).
const nchwcCases = [
  { name: '11x11 stride 4 on a 3-channel 27x27 image (input not blocked)', c: 3, size: 27, out: 16, k: 11, s: 4, p: 0, g: 1 },
  { name: '3x3 stride 1 pad 1, 16 -> 32 channels', c: 16, size: 6, out: 32, k: 3, s: 1, p: 1, g: 1 },
  { name: '5x5 stride 1 pad 2 group 2, 32 -> 32 channels', c: 32, size: 7, out: 32, k: 5, s: 1, p: 2, g: 2 },
];
for (const cc of nchwcCases) {
  test(`conv ${cc.name} on NCHWc kernels: y, dX, dW, db equal tfjs autodiff`, async (t) => {
    const block = await nchwcBlockSize();
    if (!block) return t.skip('this onnxruntime build has no NCHWc kernels for this CPU');
    const setup = convSetup(cc, 3);
    const { layer, n, inShape, outShape, paramShapes } = setup;
    const lowering = { ...DEFAULT_LOWERING, nchwcBlock: block };
    const { model } = oneLayerGraph(layer, n, inShape, outShape, paramShapes, lowering);
    const nchwcConvs = model.graph!.node!.filter((node) => node.domain === NCHWC_DOMAIN && node.opType === 'Conv').length;
    assert.equal(nchwcConvs, cc.s === 1 ? 2 : 1, 'forward (and stride-1 dX) convolutions lowered to NCHWc kernels');
    await assertConvMatchesTfjs(cc, setup, lowering);
  });
}

test('relu: dX = dY·(Y > 0) equals tfjs autodiff', async () => {
  const shape = [3, 4, 4],
    n = 2,
    rng = new Rng(3);
  const values = { x: randomArray(rng, n * sizeOf(shape)), dy: randomArray(rng, n * sizeOf(shape)) };
  const got = await runRule({ kind: 'relu', name: 'r' }, n, shape, shape, values);
  const want = tfGrads((x) => tf.relu(x), [{ data: values.x, shape: [n, ...shape] }], values.dy);
  assert.deepEqual(got.y, want.y);
  const plusZero = (a: Float32Array) => Array.from(a, (v) => v + 0); // −0 (tfjs' dy·0) equals 0
  assert.deepEqual(plusZero(got.dx), plusZero(want.grads[0])); // a select: exact
});

for (const size of [7, 8, 13]) {
  test(`maxpool 3x3/2 (overlapping windows) on ${size}x${size}: Indices + ScatterElements(add) equals tfjs autodiff`, async () => {
    const c = 3,
      n = 2,
      o = windowOutputSize(size, 3, 2, 0),
      rng = new Rng(size);
    const values = { x: randomArray(rng, n * c * size * size), dy: randomArray(rng, n * c * o * o) };
    const got = await runRule({ kind: 'maxpool', name: 'p', kernel: 3, stride: 2, pad: 0 }, n, [c, size, size], [c, o, o], values);
    const want = tfGrads(
      (x) => tf.transpose(tf.maxPool(tf.transpose(x, [0, 2, 3, 1]) as tf.Tensor4D, 3, 2, 'valid'), [0, 3, 1, 2]),
      [{ data: values.x, shape: [n, c, size, size] }],
      values.dy,
    );
    assert.deepEqual(got.y, want.y);
    // Each input element receives the sum of at most 4 window gradients (overlap): exact up to
    // the order of those few additions.
    assert.ok(maxRelativeError(got.dx, want.grads[0]) < 1e-6, `dx: ${maxRelativeError(got.dx, want.grads[0])}`);
  });
}

const lrnCases = [
  { name: 'theano-alexnet constants, scaled inputs', size: 5, alpha: 5e-4, beta: 0.75, bias: 2, scale: 30 },
  { name: 'strong normalisation (alpha 0.5, bias 1)', size: 5, alpha: 0.5, beta: 0.75, bias: 1, scale: 2 },
  { name: 'size 3', size: 3, alpha: 0.3, beta: 0.6, bias: 1.5, scale: 2 },
];
for (const lc of lrnCases) {
  const c = 7,
    h = 3,
    n = 2,
    shape = [c, h, h];
  const layer: LayerSpec = { kind: 'lrn', name: 'n', size: lc.size, alpha: lc.alpha, beta: lc.beta, bias: lc.bias };
  const rng = new Rng(4);
  const values = { x: randomArray(rng, n * sizeOf(shape), lc.scale), dy: randomArray(rng, n * sizeOf(shape)) };

  test(`lrn (${lc.name}): closed-form backward equals tfjs autodiff (alpha/size)`, async () => {
    const got = await runRule(layer, n, shape, shape, values);
    const f = (x: tf.Tensor) =>
      tf.transpose(
        tf.localResponseNormalization(tf.transpose(x, [0, 2, 3, 1]) as tf.Tensor4D, (lc.size - 1) / 2, lc.bias, lc.alpha / lc.size, lc.beta),
        [0, 3, 1, 2],
      );
    const want = tfGrads(f, [{ data: values.x, shape: [n, ...shape] }], values.dy);
    assert.ok(maxRelativeError(got.y, want.y) < TF_TOLERANCE, `y: ${maxRelativeError(got.y, want.y)}`);
    assert.ok(maxRelativeError(got.dx, want.grads[0]) < TF_TOLERANCE, `dx: ${maxRelativeError(got.dx, want.grads[0])}`);
  });

  test(`lrn (${lc.name}): closed-form backward equals float64 central differences (ONNX semantics)`, async () => {
    const got = await runRule(layer, n, shape, shape, values);
    const y64 = lrnF64(values.x, [n, ...shape], lc.size, lc.alpha, lc.beta, lc.bias);
    assert.ok(maxRelativeError(got.y, y64) < 1e-5, `forward: ${maxRelativeError(got.y, y64)}`);
    const dirRng = new Rng(5);
    for (let trial = 0; trial < 3; trial++) {
      const v = randomArray(dirRng, values.x.length);
      const fd = directionalDerivative((t) => dot(lrnF64(t, [n, ...shape], lc.size, lc.alpha, lc.beta, lc.bias), values.dy), values.x, v);
      const scale = got.dx.reduce((s, g, i) => s + Math.abs(g * v[i]), 0);
      assert.ok(Math.abs(dot(got.dx, v) - fd) < FD_TOLERANCE * scale, `⟨dx,v⟩ ${dot(got.dx, v)} vs finite difference ${fd}`);
    }
  });
}

test('fc: dX = dY·W, dW = dYᵀ·X, db = Σ dY equal tfjs autodiff', async () => {
  const n = 3,
    fin = 20,
    fout = 7,
    rng = new Rng(6);
  const layer: LayerSpec = { kind: 'fc', name: 'f', outFeatures: fout, weightInit: { dist: 'constant', value: 0 }, biasInit: { dist: 'constant', value: 0 } };
  const values = { x: randomArray(rng, n * fin), weight: randomArray(rng, fout * fin), bias: randomArray(rng, fout), dy: randomArray(rng, n * fout) };
  const got = await runRule(layer, n, [fin], [fout], values, { weight: [fout, fin], bias: [fout] });
  const want = tfGrads(
    (x, w, b) => tf.add(tf.matMul(x as tf.Tensor2D, w as tf.Tensor2D, false, true), b),
    [
      { data: values.x, shape: [n, fin] },
      { data: values.weight, shape: [fout, fin] },
      { data: values.bias, shape: [fout] },
    ],
    values.dy,
  );
  assert.ok(maxRelativeError(got.y, want.y) < TF_TOLERANCE);
  for (const [i, name] of (['dx', 'dWeight', 'dBias'] as const).entries()) {
    assert.ok(maxRelativeError(got[name], want.grads[i]) < TF_TOLERANCE, `${name}: ${maxRelativeError(got[name], want.grads[i])}`);
  }
});

test('dropout: forward and backward multiply by the same (scaled) mask', async () => {
  const n = 2,
    f = 10,
    rng = new Rng(7);
  const mask = Float32Array.from({ length: n * f }, () => (rng.nextFloat() >= 0.5 ? 2 : 0));
  const values = { x: randomArray(rng, n * f), dy: randomArray(rng, n * f), mask };
  const got = await runRule({ kind: 'dropout', name: 'd', rate: 0.5 }, n, [f], [f], values);
  assert.deepEqual(
    got.y,
    values.x.map((v, i) => v * mask[i]),
  );
  assert.deepEqual(
    got.dx,
    values.dy.map((v, i) => v * mask[i]),
  );
  assert.ok(mask.includes(0) && mask.includes(2)); // both branches exercised
});

test('flatten: backward reshapes dY back to C×H×W', async () => {
  const n = 2,
    shape = [2, 3, 3],
    rng = new Rng(8);
  const values = { x: randomArray(rng, n * 18), dy: randomArray(rng, n * 18) };
  const got = await runRule({ kind: 'flatten', name: 'fl' }, n, shape, [18], values);
  assert.deepEqual(got.y, values.x);
  assert.deepEqual(got.dx, values.dy);
});
