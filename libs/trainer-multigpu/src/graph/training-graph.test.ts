/**
 * The whole training graph against tfjs: reduced-width AlexNets (every layer kind, groups,
 * stride 4, overlapping pools, LRN before and after pool, dropout with the same masks fed to both)
 * at 67x67. The gradient graph's loss and gradients are compared with tfjs autodiff through
 * `tfjsForward` (engines/tfjs), the train graph's one-step update with `sgdUpdateReference`
 * applied to tfjs' gradients, and the eval graph's loss/error counts with tfjs' logits.
 *
 * Tolerances (relative to each tensor's largest |value|). Both sides run float32, but the
 * network chains ~20 ops whose sums are ordered differently (im2col GEMMs, ConvTranspose, dilated
 * Conv, ScatterElements vs tfjs' loops), and MaxPool/ReLU make the backward pass piecewise: a
 * float32 difference in the forward could route a gradient differently only at near-ties, which
 * random inputs avoid. Measured (printed as test diagnostics): every gradient within 1.5e-6
 * (conv1/conv2 through pool + LRN included), so GRAD_TOLERANCE = 1e-5 leaves ~7x headroom.
 * That is far tighter than DESIGN's 1e-3..4e-3 for conv1/conv2 against PyTorch: there the sums
 * ran over ~10⁶ terms (227x227, batch 32) and PyTorch's cuDNN-free CPU kernels used other
 * orders; here the net is narrow (sums over ≤ 10⁴ terms) and both sides use float32 accumulators
 * of similar length. The loss is a mean of N logs: 1e-5. The update W' = W + μV − lr·(g + λW)
 * inherits the gradient tolerance on ΔW, plus W's own float32 rounding.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type * as tfjs from '@tensorflow/tfjs';
import { type NamedTensors, Rng } from '@alexnet-stream/core';
import { alexnetSpec, initParameters, inferShapes, type ModelSpec, type PresetName, parameterList } from '@alexnet-stream/model-alexnet';
import { encodeModel, loadOnnxRuntime, type Ort } from '@alexnet-stream/onnx-export';
import { DEFAULT_OPTIMIZER, type OptimizerConfig } from '../engine';
import { loadTfjs } from '../engines/tfjs/backend';
import { weightsToTensors } from '../engines/tfjs/forward';
import { countTopKErrors, tfjsLossAndGradients, tfjsSoftmaxCrossEntropy } from '../engines/tfjs/loss';
import { sgdUpdateReference } from '../engines/tfjs/sgd-reference';
import { buildGraph, gradName, maskName, newName, velocityName } from './training-graph';
import { DEFAULT_LOWERING, type LoweringOptions, PORTABLE_LOWERING } from './rules';
import { maxRelativeError, randomArray, reducedSpec, runModel, sizeOf } from './graph.test-util';

const ort = loadOnnxRuntime();

const GRAD_TOLERANCE = 1e-5;
const LOSS_TOLERANCE = 1e-5;

interface Case {
  spec: ModelSpec;
  n: number;
  data: Float32Array;
  labels: Int32Array;
  weights: NamedTensors;
  /** Keep masks (0/1) by dropout layer, [N, …]. */
  keep: Record<string, Float32Array>;
  maskShapes: Record<string, number[]>;
}

function makeCase(preset: PresetName, n: number, seed: number): Case {
  const spec = reducedSpec(preset);
  const rng = new Rng(seed);
  // Scaled like mean-subtracted pixels (±60), so that LRN's Σx² term matters.
  const data = randomArray(rng, n * 3 * spec.inputSize * spec.inputSize, 60);
  const labels = Int32Array.from({ length: n }, () => rng.nextInt(spec.numClasses));
  const weights = initParameters(spec, seed);
  // Wider weights than AlexNet's N(0, 0.01) so that the narrow net's logits are not ~0.
  for (const p of parameterList(spec)) if (p.role === 'weight') weights[p.name] = weights[p.name].map((v) => v * 4);
  const keep: Record<string, Float32Array> = {};
  const maskShapes: Record<string, number[]> = {};
  for (const { layer, output } of inferShapes(spec)) {
    if (layer.kind !== 'dropout') continue;
    maskShapes[layer.name] = [n, ...output];
    keep[layer.name] = Float32Array.from({ length: n * sizeOf(output) }, () => (rng.nextFloat() >= layer.rate ? 1 : 0));
  }
  return { spec, n, data, labels, weights, keep, maskShapes };
}

function ortFeeds(c: Case, extra: Record<string, Float32Array> = {}, withMasks = true): Record<string, Ort.Tensor> {
  const s = c.spec.inputSize;
  const feeds: Record<string, Ort.Tensor> = {
    data: new ort.Tensor('float32', c.data, [c.n, 3, s, s]),
    labels: new ort.Tensor('int32', c.labels, [c.n]),
  };
  for (const p of parameterList(c.spec)) feeds[p.name] = new ort.Tensor('float32', c.weights[p.name], p.shape);
  if (withMasks) {
    for (const l of c.spec.layers) {
      if (l.kind !== 'dropout') continue;
      const scaled = c.keep[l.name].map((k) => k / (1 - l.rate)); // the graph's mask input is keep/(1 − rate)
      feeds[maskName(l.name)] = new ort.Tensor('float32', scaled, c.maskShapes[l.name]);
    }
  }
  for (const [name, data] of Object.entries(extra)) {
    const p = parameterList(c.spec).find((q) => velocityName(q.name) === name);
    feeds[name] = new ort.Tensor('float32', data, p ? p.shape : []);
  }
  return feeds;
}

const references = new Map<Case, ReturnType<typeof tfjsReferenceUncached>>();
/** tfjs' loss, logits and gradients for a case (cached: several tests share one case). */
function tfjsReference(c: Case, training: boolean) {
  if (!training) return tfjsReferenceUncached(c, false);
  if (!references.has(c)) references.set(c, tfjsReferenceUncached(c, true));
  return references.get(c)!;
}

async function tfjsReferenceUncached(c: Case, training: boolean) {
  const { tf } = await loadTfjs();
  const params = weightsToTensors(tf, c.spec, c.weights);
  const x = tf.tensor4d(c.data, [c.n, 3, c.spec.inputSize, c.spec.inputSize]);
  const masks: Record<string, tfjs.Tensor> = {};
  for (const [name, keep] of Object.entries(c.keep)) masks[name] = tf.tensor(keep, c.maskShapes[name]);
  try {
    return tfjsLossAndGradients(tf, c.spec, params, x, c.labels, { training, dropoutMasks: masks });
  } finally {
    tf.dispose([x, ...Object.values(params), ...Object.values(masks)]);
  }
}

const cases = { 'theano-alexnet': makeCase('theano-alexnet', 3, 21), 'bvlc-alexnet': makeCase('bvlc-alexnet', 2, 22) };

function _tfjsSoftmaxCrossEntropyValue(tf: Awaited<ReturnType<typeof loadTfjs>>['tf'], logits: tfjs.Tensor2D, labels: Int32Array): number {
  const loss = tfjsSoftmaxCrossEntropy(tf, logits, labels);
  const value = loss.dataSync()[0];
  loss.dispose();
  return value;
}

const wholeNetLowerings: [string, LoweringOptions][] = [
  ['', DEFAULT_LOWERING],
  [', dW by Gather im2col', { ...DEFAULT_LOWERING, convWeightGrad: 'gather' }],
];
for (const preset of ['theano-alexnet', 'bvlc-alexnet'] as const)
  for (const [variant, lowering] of wholeNetLowerings) {
    test(`${preset} (reduced widths, 67x67, dropout${variant}): gradient graph equals tfjs autodiff for every parameter`, async (t) => {
      const c = cases[preset];
      const got = await runModel(buildGraph(c.spec, 'gradients', undefined, lowering).model, ortFeeds(c));
      const want = await tfjsReference(c, true);
      assert.ok(Math.abs(got.loss[0] - want.loss) < LOSS_TOLERANCE * Math.max(1, want.loss), `loss ${got.loss[0]} vs ${want.loss}`);
      const errors: string[] = [];
      for (const p of parameterList(c.spec)) {
        const err = maxRelativeError(got[gradName(p.name)], want.grads[p.name]);
        errors.push(`${p.name} ${err.toExponential(1)}`);
        assert.ok(err < GRAD_TOLERANCE, `${p.name}: relative error ${err.toExponential(2)}`);
      }
      t.diagnostic(`relative errors: ${errors.join(', ')}`);
    });
  }

/**
 * Label smoothing: the graph's hand-written backward, (softmax − q)/N with q = (1 − ε)·onehot + ε/K,
 * against tfjs autodiff of the smoothed loss written independently with tfjs ops
 * (`tfjsSoftmaxCrossEntropy(…, ε)`), with the same tolerances as plain cross-entropy: the change
 * is one extra term per logit in d loss/d logits, so the float32 sums downstream are the same
 * sums. The two portable and CPU lowerings share the targets (one expression in buildGraph), and
 * both are checked. The check cannot pass with smoothing ignored: ε = 0.2 moves every gradient
 * by far more than the tolerance (asserted below).
 */
for (const portable of [false, true]) {
  test(`label smoothing 0.2 (${portable ? 'portable' : 'CPU'} lowering): gradient graph's loss and every gradient equal tfjs autodiff of the smoothed loss`, async (t) => {
    const c = cases['theano-alexnet'];
    const epsilon = 0.2;
    const lowering = portable ? PORTABLE_LOWERING : DEFAULT_LOWERING;
    const got = await runModel(buildGraph(c.spec, 'gradients', undefined, lowering, { labelSmoothing: epsilon }).model, ortFeeds(c));
    const plain = await tfjsReference(c, true);
    const { tf } = await loadTfjs();
    const params = weightsToTensors(tf, c.spec, c.weights);
    const x = tf.tensor4d(c.data, [c.n, 3, c.spec.inputSize, c.spec.inputSize]);
    const masks: Record<string, tfjs.Tensor> = {};
    for (const [name, keep] of Object.entries(c.keep)) masks[name] = tf.tensor(keep, c.maskShapes[name]);
    let want;
    try {
      want = tfjsLossAndGradients(tf, c.spec, params, x, c.labels, { training: true, dropoutMasks: masks, labelSmoothing: epsilon });
    } finally {
      tf.dispose([x, ...Object.values(params), ...Object.values(masks)]);
    }
    // The smoothed loss by hand from tfjs' logits (float64): mean of −Σ_k q_k log softmax_k.
    const k = c.spec.numClasses;
    let byHand = 0;
    for (let i = 0; i < c.n; i++) {
      const row = Array.from(want.logits.subarray(i * k, (i + 1) * k));
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
      for (let j = 0; j < k; j++) byHand -= ((j === c.labels[i] ? 1 - epsilon : 0) + epsilon / k) * (row[j] - lse);
    }
    byHand /= c.n;
    assert.ok(Math.abs(want.loss - byHand) < LOSS_TOLERANCE * Math.max(1, byHand), `tfjs smoothed loss ${want.loss} vs by hand ${byHand}`);
    assert.ok(Math.abs(got.loss[0] - want.loss) < LOSS_TOLERANCE * Math.max(1, want.loss), `loss ${got.loss[0]} vs ${want.loss}`);
    const errors: string[] = [];
    for (const p of parameterList(c.spec)) {
      const err = maxRelativeError(got[gradName(p.name)], want.grads[p.name]);
      errors.push(`${p.name} ${err.toExponential(1)}`);
      assert.ok(err < GRAD_TOLERANCE, `${p.name}: relative error ${err.toExponential(2)}`);
    }
    // Smoothing really changes the gradient (so the check above could fail): fc8's moves by > 1%.
    assert.ok(maxRelativeError(plain.grads['fc8.weight'], want.grads['fc8.weight']) > 1e-2, "ε = 0.2 changes fc8's gradient");
    t.diagnostic(`relative errors: ${errors.join(', ')}`);
  });
}

test('label smoothing: the eval graph still reports plain cross-entropy; ε outside [0, 1) is refused', async () => {
  const c = makeCase('theano-alexnet', 4, 25);
  const plain = await runModel(buildGraph(c.spec, 'eval').model, ortFeeds(c, {}, false));
  const smoothed = await runModel(buildGraph(c.spec, 'eval', undefined, DEFAULT_LOWERING, { labelSmoothing: 0.3 }).model, ortFeeds(c, {}, false));
  assert.equal(smoothed.loss[0], plain.loss[0]);
  assert.throws(() => buildGraph(c.spec, 'gradients', undefined, DEFAULT_LOWERING, { labelSmoothing: 1 }), /label smoothing must be in \[0, 1\), got 1/);
});

const optimizers: [string, OptimizerConfig][] = [
  ['momentum', DEFAULT_OPTIMIZER],
  ['nesterov', { ...DEFAULT_OPTIMIZER, nesterov: true }],
  ['plain SGD', { ...DEFAULT_OPTIMIZER, useMomentum: false }],
];
for (const [label, optimizer] of optimizers) {
  test(`train graph (${label}): one step equals sgdUpdateReference on tfjs' gradients`, async () => {
    const c = cases['theano-alexnet'];
    const rng = new Rng(23);
    const params = parameterList(c.spec);
    const velocities: NamedTensors = Object.fromEntries(params.map((p) => [p.name, randomArray(rng, sizeOf(p.shape), 1e-3)]));
    const lr = 0.05;
    const extra: Record<string, Float32Array> = { lr: Float32Array.of(lr) };
    if (optimizer.useMomentum) for (const p of params) extra[velocityName(p.name)] = velocities[p.name];
    const got = await runModel(buildGraph(c.spec, 'train', optimizer).model, ortFeeds(c, extra));
    const tfRef = await tfjsReference(c, true);
    const roles = Object.fromEntries(params.map((p) => [p.name, p.role]));
    const want = sgdUpdateReference(c.weights, tfRef.grads, velocities, lr, optimizer, roles);
    for (const p of params) {
      // W' − W (the step) to the gradient tolerance of its size, plus W's own float32 rounding
      // (a few ulps of |W|: W' is stored in float32, and a small step is below W's precision).
      const w0 = c.weights[p.name],
        wGot = got[newName(p.name)],
        wWant = want.weights[p.name];
      let maxDiff = 0,
        maxDelta = 0,
        maxW = 0;
      for (let i = 0; i < w0.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(wGot[i] - wWant[i]));
        maxDelta = Math.max(maxDelta, Math.abs(wWant[i] - w0[i]));
        maxW = Math.max(maxW, Math.abs(w0[i]));
      }
      assert.ok(maxDiff <= GRAD_TOLERANCE * maxDelta + 4 * 2 ** -24 * maxW, `${p.name}: |ΔW error| ${maxDiff} for |ΔW| ${maxDelta}, |W| ${maxW}`);
      if (optimizer.useMomentum) {
        const err = maxRelativeError(got[newName(velocityName(p.name))], want.velocities[p.name]);
        assert.ok(err < GRAD_TOLERANCE, `${p.name}: velocity relative error ${err}`);
      } else {
        assert.equal(got[newName(velocityName(p.name))], undefined); // plain SGD has no velocity outputs
      }
    }
  });
}

test('eval graph: loss and top-1/top-5 error counts equal tfjs (no dropout), logits too', async () => {
  const c = makeCase('theano-alexnet', 4, 24);
  const got = await runModel(buildGraph(c.spec, 'eval').model, ortFeeds(c, {}, false));
  const want = await tfjsReference(c, false);
  assert.ok(maxRelativeError(got.logits, want.logits) < LOSS_TOLERANCE, `logits: ${maxRelativeError(got.logits, want.logits)}`);
  assert.ok(Math.abs(got.loss[0] - want.loss) < LOSS_TOLERANCE * Math.max(1, want.loss));
  assert.equal(got.top1_errors[0], countTopKErrors(want.logits, c.labels, c.spec.numClasses, 1));
  assert.equal(got.top5_errors[0], countTopKErrors(want.logits, c.labels, c.spec.numClasses, 5));
});

test('error counts on a hand-made case: label ranks 1, 2, 6 and 5 of 6 classes', async () => {
  // A one-layer net: fc with identity weights and zero bias, so logits = the input features.
  const spec: ModelSpec = {
    specVersion: 1,
    preset: 'theano-alexnet',
    inputChannels: 1,
    inputSize: 1,
    numClasses: 6,
    layers: [
      { kind: 'flatten', name: 'f' },
      { kind: 'fc', name: 'fc', outFeatures: 6, weightInit: { dist: 'constant', value: 0 }, biasInit: { dist: 'constant', value: 0 } },
    ],
  };
  const model = buildGraph({ ...spec, inputChannels: 6 }, 'eval').model;
  const logits = Float32Array.of(9, 1, 2, 3, 4, 5, /**/ 5, 9, 1, 2, 3, 4, /**/ 9, 8, 7, 6, 5, 4, /**/ 9, 8, 7, 6, 5, 4);
  const labels = Int32Array.of(0, 0, 5, 4); // ranks 1, 2, 6, 5
  const eye = new Float32Array(36).map((_, i) => (i % 7 === 0 ? 1 : 0));
  const got = await runModel(model, {
    data: new ort.Tensor('float32', logits, [4, 6, 1, 1]),
    labels: new ort.Tensor('int32', labels, [4]),
    'fc.weight': new ort.Tensor('float32', eye, [6, 6]),
    'fc.bias': new ort.Tensor('float32', new Float32Array(6), [6]),
  });
  assert.equal(got.top1_errors[0], 3);
  assert.equal(got.top5_errors[0], 1);
  // loss: mean of logsumexp(row) − row[label]
  const lse = (r: number[]) => Math.log(r.reduce((s, v) => s + Math.exp(v), 0));
  const rows = [0, 1, 2, 3].map((i) => Array.from(logits.subarray(6 * i, 6 * i + 6)));
  const want = rows.reduce((s, r, i) => s + lse(r) - r[labels[i]], 0) / 4;
  assert.ok(Math.abs(got.loss[0] - want) < 1e-5);
});

test('full-size theano-alexnet 227x227: the training graph builds and loads in onnxruntime', async () => {
  const spec = alexnetSpec('theano-alexnet');
  const graph = buildGraph(spec, 'train', DEFAULT_OPTIMIZER);
  const session = await ort.InferenceSession.create(encodeModel(graph.model), { graphOptimizationLevel: 'basic', logSeverityLevel: 3 });
  try {
    const params = parameterList(spec);
    assert.deepEqual(
      [...session.inputNames].sort(),
      ['data', 'labels', 'lr', maskName('drop6'), maskName('drop7'), ...params.map((p) => p.name), ...params.map((p) => velocityName(p.name))].sort(),
    );
    assert.deepEqual(
      [...session.outputNames].sort(),
      ['loss', 'top1_errors', 'top5_errors', ...params.map((p) => newName(p.name)), ...params.map((p) => newName(velocityName(p.name)))].sort(),
    );
  } finally {
    await session.release();
  }
});
