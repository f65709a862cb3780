/**
 * The tfjs lowering against hand loops (naive-reference.test-util.ts, float64, NCHW, straight
 * from the ONNX op definitions) and hand-computed cases.
 *
 * Tolerance: the lowering runs in float32. Each output is a sum of at most a few thousand
 * products; float32 rounding (ε ≈ 6e-8) accumulated over such sums stays well below 1e-5 of
 * the largest output magnitude, so single-op checks use 1e-5 relative (to the tensor's largest
 * |value|). Whole-network checks chain ~20 ops and dot products of up to 4096 terms: 1e-4.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '@alexnet-stream/core';
import { alexnetSpec, inferShapes, type LayerSpec, type ModelSpec, narrowSpec, PRESETS } from '@alexnet-stream/model-alexnet';
import { loadTfjs } from './backend';
import { drawDropoutMask, tfjsForward, weightsToTensors } from './forward';
import { conv2dNaive, fcNaive, initWeightsForTest, lrnNaive, maxPoolNaive, maxRelativeError, naiveForward, randomArray } from './naive-reference.test-util';

const OP_TOLERANCE = 1e-5;
const NET_TOLERANCE = 1e-4;

function specOf(inputChannels: number, inputSize: number, layers: LayerSpec[], numClasses = 2): ModelSpec {
  return { specVersion: 1, preset: 'theano-alexnet', inputChannels, inputSize, numClasses, layers };
}

async function runForward(
  spec: ModelSpec,
  weights: Record<string, Float32Array>,
  input: Float32Array,
  n: number,
  training = false,
  masks?: Record<string, Float32Array>,
) {
  const { tf } = await loadTfjs();
  const params = weightsToTensors(tf, spec, weights);
  const x = tf.tensor4d(input, [n, spec.inputChannels, spec.inputSize, spec.inputSize]);
  const maskTensors = masks ? Object.fromEntries(Object.entries(masks).map(([k, v]) => [k, tf.tensor(v, inferMaskShape(spec, k, n))])) : undefined;
  const y = tfjsForward(tf, spec, params, x, { training, dropoutMasks: maskTensors });
  const out = { data: y.dataSync() as Float32Array, shape: y.shape };
  tf.dispose([y, x, ...Object.values(params), ...Object.values(maskTensors ?? {})]);
  return out;
}

function inferMaskShape(spec: ModelSpec, layerName: string, n: number): number[] {
  const at = inferShapes(spec).find((s) => s.layer.name === layerName);
  if (!at) throw new Error(`no layer ${layerName}`);
  return [n, ...at.input];
}

const convCases = [
  { name: 'stride 1, pad 0, group 1', c: 3, size: 7, out: 4, k: 3, s: 1, p: 0, g: 1 },
  { name: 'stride 2, pad 1, group 2', c: 4, size: 9, out: 6, k: 3, s: 2, p: 1, g: 2 },
  { name: 'stride 4, pad 2, group 2, 5x5', c: 6, size: 13, out: 4, k: 5, s: 4, p: 2, g: 2 },
];
for (const cc of convCases) {
  test(`conv (${cc.name}) equals a naive convolution loop`, async () => {
    const spec = specOf(cc.c, cc.size, [
      {
        kind: 'conv',
        name: 'c',
        outChannels: cc.out,
        kernel: cc.k,
        stride: cc.s,
        pad: cc.p,
        group: cc.g,
        weightInit: { dist: 'normal', std: 1 },
        biasInit: { dist: 'normal', std: 1 },
      },
      { kind: 'flatten', name: 'f' },
    ]);
    const rng = new Rng(11);
    const n = 2;
    const input = randomArray(rng, n * cc.c * cc.size * cc.size);
    const w = initWeightsForTest(spec, 5);
    const got = await runForward(spec, w, input, n);
    const want = conv2dNaive(
      { data: Float64Array.from(input), shape: [n, cc.c, cc.size, cc.size] },
      w['c.weight'],
      w['c.bias'],
      cc.out,
      cc.k,
      cc.s,
      cc.p,
      cc.g,
    );
    assert.deepEqual(got.shape, [n, want.data.length / n]); // flatten of NCHW
    assert.ok(maxRelativeError(got.data, want.data) < OP_TOLERANCE, `rel err ${maxRelativeError(got.data, want.data)}`);
  });
}

test('grouped conv: output block j depends only on input block j', async () => {
  // Hand case: 2 input channels, group 2, 1x1 kernels w = [2, 3], bias [0, 0]: y0 = 2·x0, y1 = 3·x1.
  const spec = specOf(2, 1, [
    {
      kind: 'conv',
      name: 'c',
      outChannels: 2,
      kernel: 1,
      stride: 1,
      pad: 0,
      group: 2,
      weightInit: { dist: 'constant', value: 0 },
      biasInit: { dist: 'constant', value: 0 },
    },
    { kind: 'flatten', name: 'f' },
  ]);
  const got = await runForward(spec, { 'c.weight': Float32Array.of(2, 3), 'c.bias': Float32Array.of(0, 0) }, Float32Array.of(5, 7), 1);
  assert.deepEqual(Array.from(got.data), [10, 21]);
});

for (const pad of [0, 1]) {
  test(`maxpool 3x3/2 (overlapping, pad ${pad}) equals a naive loop`, async () => {
    const spec = specOf(3, 9, [
      { kind: 'maxpool', name: 'p', kernel: 3, stride: 2, pad },
      { kind: 'flatten', name: 'f' },
    ]);
    const n = 2;
    // negative values too, so that −∞ (not 0) padding matters when pad > 0
    const input = randomArray(new Rng(3), n * 3 * 81);
    const got = await runForward(spec, {}, input, n);
    const want = maxPoolNaive({ data: Float64Array.from(input), shape: [n, 3, 9, 9] }, 3, 2, pad);
    assert.deepEqual(got.shape, [n, want.data.length / n]);
    assert.ok(maxRelativeError(got.data, want.data) < OP_TOLERANCE);
  });
}

test('maxpool hand case: 4x4 → 1x1 windows overlap at the middle row/column', async () => {
  const spec = specOf(1, 5, [
    { kind: 'maxpool', name: 'p', kernel: 3, stride: 2, pad: 0 },
    { kind: 'flatten', name: 'f' },
  ]);
  // 5x5 input 0..24: windows at (0,0), (0,2), (2,0), (2,2); each max is its bottom-right corner
  const input = Float32Array.from({ length: 25 }, (_, i) => i);
  const got = await runForward(spec, {}, input, 1);
  assert.deepEqual(Array.from(got.data), [12, 14, 22, 24]);
});

test('LRN hand case: size 3, alpha 3, beta 1, bias 1 on channels [1, 2, 3]', async () => {
  // y_c = x_c / (1 + 3/3 · Σ_{window} x²): windows {0,1}, {0,1,2}, {1,2}: 1/(1+5), 2/(1+14), 3/(1+13)
  const spec = specOf(3, 1, [
    { kind: 'lrn', name: 'n', size: 3, alpha: 3, beta: 1, bias: 1 },
    { kind: 'flatten', name: 'f' },
  ]);
  const got = await runForward(spec, {}, Float32Array.of(1, 2, 3), 1);
  const want = [1 / 6, 2 / 15, 3 / 14];
  assert.ok(maxRelativeError(got.data, want) < OP_TOLERANCE, `${Array.from(got.data)} vs ${want}`);
});

test("LRN with the seed's constants is x / (2 + 1e-4 Σ x²)^0.75 (α not divided by n)", async () => {
  const spec = alexnetSpec('theano-alexnet');
  const norm = spec.layers.find((l) => l.kind === 'lrn')!;
  const lrnSpec = specOf(7, 2, [norm, { kind: 'flatten', name: 'f' }]);
  const input = randomArray(new Rng(9), 7 * 4, 40); // |x| up to 40: the denominator matters
  const got = await runForward(lrnSpec, {}, input, 1);
  const want = new Float64Array(input.length);
  for (let c = 0; c < 7; c++)
    for (let p = 0; p < 4; p++) {
      let s = 0;
      for (let d = Math.max(0, c - 2); d <= Math.min(6, c + 2); d++) s += input[d * 4 + p] ** 2;
      want[c * 4 + p] = input[c * 4 + p] / (2 + 1e-4 * s) ** 0.75;
    }
  assert.ok(maxRelativeError(got.data, want) < OP_TOLERANCE);
});

test('LRN (size 5, AlexNet-like values) equals the closed form by loops', async () => {
  const spec = specOf(8, 3, [
    { kind: 'lrn', name: 'n', size: 5, alpha: 1e-2, beta: 0.75, bias: 1 },
    { kind: 'flatten', name: 'f' },
  ]);
  const n = 2;
  const input = randomArray(new Rng(4), n * 8 * 9, 10);
  const got = await runForward(spec, {}, input, n);
  const want = lrnNaive({ data: Float64Array.from(input), shape: [n, 8, 3, 3] }, 5, 1e-2, 0.75, 1);
  assert.ok(maxRelativeError(got.data, want.data) < OP_TOLERANCE);
});

test('flatten is channel-major (C, H, W), as an NCHW reshape', async () => {
  const spec = specOf(2, 2, [{ kind: 'flatten', name: 'f' }]);
  const input = Float32Array.from({ length: 16 }, (_, i) => i); // [2, 2, 2, 2]
  const got = await runForward(spec, {}, input, 2);
  assert.deepEqual(got.shape, [2, 8]);
  assert.deepEqual(Array.from(got.data), Array.from(input));
});

test('fc is x·Wᵀ + b with W [out, in]', async () => {
  const spec = specOf(1, 2, [
    { kind: 'flatten', name: 'f' },
    { kind: 'fc', name: 'fc', outFeatures: 2, weightInit: { dist: 'constant', value: 0 }, biasInit: { dist: 'constant', value: 0 } },
  ]);
  // x = [1, 2, 3, 4]; W rows [1, 0, 0, 0] and [0, 1, 1, 1]; b = [10, 20] → [11, 29]
  const got = await runForward(
    spec,
    { 'fc.weight': Float32Array.of(1, 0, 0, 0, 0, 1, 1, 1), 'fc.bias': Float32Array.of(10, 20) },
    Float32Array.of(1, 2, 3, 4),
    1,
  );
  assert.deepEqual(Array.from(got.data), [11, 29]);
  const w = randomArray(new Rng(2), 3 * 4),
    b = randomArray(new Rng(3), 3);
  const spec3 = { ...spec, layers: [spec.layers[0], { ...spec.layers[1], outFeatures: 3 } as LayerSpec] };
  const got3 = await runForward(spec3, { 'fc.weight': w, 'fc.bias': b }, Float32Array.of(1, 2, 3, 4), 1);
  assert.ok(maxRelativeError(got3.data, fcNaive({ data: Float64Array.of(1, 2, 3, 4), shape: [1, 4] }, w, b, 3).data) < OP_TOLERANCE);
});

test('dropout: identity when not training; x·mask/(1−p) with a given mask; seeded masks repeat', async () => {
  const spec = specOf(1, 2, [
    { kind: 'flatten', name: 'f' },
    { kind: 'fc', name: 'fc', outFeatures: 4, weightInit: { dist: 'constant', value: 0 }, biasInit: { dist: 'constant', value: 0 } },
    { kind: 'dropout', name: 'd', rate: 0.75 },
  ]);
  const w = { 'fc.weight': Float32Array.from({ length: 16 }, (_, i) => (i % 5 === 0 ? 1 : 0)), 'fc.bias': new Float32Array(4) }; // identity
  const x = Float32Array.of(1, 2, 3, 4);
  assert.deepEqual(Array.from((await runForward(spec, w, x, 1)).data), [1, 2, 3, 4]);
  const masked = await runForward(spec, w, x, 1, true, { d: Float32Array.of(1, 0, 0, 1) });
  assert.deepEqual(Array.from(masked.data), [4, 0, 0, 16]); // kept values scaled by 1/(1−0.75)

  const { tf } = await loadTfjs();
  const params = weightsToTensors(tf, spec, w);
  const input = tf.tensor4d(x, [1, 1, 2, 2]);
  const draw = (seed: number) => {
    const y = tfjsForward(tf, spec, params, input, { training: true, rng: new Rng(seed) });
    const out = Array.from(y.dataSync());
    y.dispose();
    return out;
  };
  // The drawn mask is drawDropoutMask(rng) for the same seed: the documented draw order.
  const expectMask = drawDropoutMask(new Rng(8), [1, 4], 0.75);
  assert.deepEqual(
    draw(8),
    Array.from(x, (v, i) => v * expectMask[i] * 4),
  );
  assert.deepEqual(draw(8), draw(8));
  assert.throws(() => tfjsForward(tf, spec, params, input, { training: true }), /needs dropoutMasks\.d or an rng/);
  tf.dispose([input, ...Object.values(params)]);
});

test('drawDropoutMask keeps about 1 − rate', () => {
  const m = drawDropoutMask(new Rng(1), [100, 100], 0.5);
  const kept = m.reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(kept - 5000) < 5 * 50, `${kept}`); // binomial sd = 50
  assert.ok(m.every((v) => v === 0 || v === 1));
});

test('weightsToTensors names a missing or mis-sized parameter', async () => {
  const { tf } = await loadTfjs();
  const spec = alexnetSpec('theano-alexnet', { inputSize: 67, numClasses: 5 });
  assert.throws(() => weightsToTensors(tf, spec, {}), /missing parameter conv1\.weight/);
  const w = initWeightsForTest(spec, 1);
  w['fc8.bias'] = new Float32Array(3);
  assert.throws(() => weightsToTensors(tf, spec, w), /fc8\.bias has 3 values, expected 5/);
});

// Every preset at a reduced input size (67: the smallest that keeps pool5 at 1x1 … 67 → 15 → 7
// → 7 → 3 → 3 → 1) and reduced widths (narrowSpec: conv channels / 8, fc features / 64; layer
// order, kernels, strides, groups and LRN constants as the preset's), against the float64
// loops, training with given masks and in evaluation. (Full widths cost ~40 s of float64 loops
// for the same layer arithmetic; the full-size forward is checked against onnxruntime by
// bench:parity.)
for (const preset of PRESETS) {
  test(`preset ${preset} at inputSize 67, 5 classes, reduced widths: shape and values match the naive forward`, async () => {
    const spec = narrowSpec(alexnetSpec(preset, { inputSize: 67, numClasses: 5 }), 8, 64);
    const n = 2;
    const w = initWeightsForTest(spec, 21, 10); // 10x the init std: logits well above rounding
    const input = randomArray(new Rng(22), n * 3 * 67 * 67, 100);
    const evalOut = await runForward(spec, w, input, n);
    assert.deepEqual(evalOut.shape, [n, 5]);
    const want = naiveForward(spec, w, input, n);
    assert.ok(maxRelativeError(evalOut.data, want.data) < NET_TOLERANCE, `eval rel err ${maxRelativeError(evalOut.data, want.data)}`);

    // Training mode (given masks) where dropout sits differently: after (theano) / before (torchvision) fc.
    if (preset !== 'theano-alexnet' && preset !== 'torchvision-alexnet') return;
    const rng = new Rng(23);
    const masks = { drop6: drawDropoutMask(rng, inferMaskShape(spec, 'drop6', n), 0.5), drop7: drawDropoutMask(rng, inferMaskShape(spec, 'drop7', n), 0.5) };
    const trainOut = await runForward(spec, w, input, n, true, masks);
    const wantTrain = naiveForward(spec, w, input, n, masks);
    assert.ok(maxRelativeError(trainOut.data, wantTrain.data) < NET_TOLERANCE, `train rel err ${maxRelativeError(trainOut.data, wantTrain.data)}`);
    assert.ok(maxRelativeError(trainOut.data, evalOut.data) > 1e-3, 'dropout changed nothing');
  });
}
