/**
 * The tfjs engine: autodiff gradients against float64 central finite differences of the naive
 * loops (naive-reference.test-util.ts), one update step against `sgdUpdateReference`, the
 * optimizer formulas against hand-computed numbers, and the engine's contract (loss goes down,
 * evaluate is pure, copies, RNG state).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type NamedTensors, Rng } from '@alexnet-stream/core';
import { type ModelSpec, type ParamInfo, parameterList } from '@alexnet-stream/model-alexnet';
import { DEFAULT_OPTIMIZER, type EngineBatch, type OptimizerConfig } from '../../engine';
import { loadTfjs } from './backend';
import { drawDropoutMask, weightsToTensors } from './forward';
import { countTopKErrors, tfjsLossAndGradients } from './loss';
import { createTfjsEngine } from './engine';
import { sgdUpdateReference } from './sgd-reference';
import { initWeightsForTest, maxRelativeError, naiveForward, randomArray, softmaxCrossEntropyNaive } from './naive-reference.test-util';

type ParamRole = ParamInfo['role'];

/**
 * Every layer kind on a tiny input: conv (stride 2, pad 1) → ReLU → overlapping maxpool →
 * LRN (a strong one: α/size·Σx² ≈ 1, so its backward matters) → grouped conv → ReLU → flatten
 * → fc → ReLU → dropout → fc. 207 parameters.
 */
const tinySpec: ModelSpec = {
  specVersion: 1,
  preset: 'theano-alexnet',
  inputChannels: 3,
  inputSize: 9,
  numClasses: 4,
  layers: [
    {
      kind: 'conv',
      name: 'conv1',
      outChannels: 4,
      kernel: 3,
      stride: 2,
      pad: 1,
      group: 1,
      weightInit: { dist: 'normal', std: 0.3 },
      biasInit: { dist: 'normal', std: 0.1 },
    },
    { kind: 'relu', name: 'relu1' },
    { kind: 'maxpool', name: 'pool1', kernel: 3, stride: 2, pad: 0 },
    { kind: 'lrn', name: 'norm1', size: 3, alpha: 1.5, beta: 0.75, bias: 1 },
    {
      kind: 'conv',
      name: 'conv2',
      outChannels: 4,
      kernel: 2,
      stride: 1,
      pad: 0,
      group: 2,
      weightInit: { dist: 'normal', std: 0.5 },
      biasInit: { dist: 'normal', std: 0.1 },
    },
    { kind: 'relu', name: 'relu2' },
    { kind: 'flatten', name: 'flatten' },
    { kind: 'fc', name: 'fc1', outFeatures: 6, weightInit: { dist: 'normal', std: 0.5 }, biasInit: { dist: 'normal', std: 0.1 } },
    { kind: 'relu', name: 'relu3' },
    { kind: 'dropout', name: 'drop1', rate: 0.5 },
    { kind: 'fc', name: 'fc2', outFeatures: 4, weightInit: { dist: 'normal', std: 0.5 }, biasInit: { dist: 'normal', std: 0.1 } },
  ],
};
const N = 3;

function tinyBatch(seed: number): EngineBatch {
  const rng = new Rng(seed);
  return { data: randomArray(rng, N * 3 * 81, 2), labels: Int32Array.from({ length: N }, () => rng.nextInt(4)), size: N };
}

const roles: Record<string, ParamRole> = Object.fromEntries(parameterList(tinySpec).map((p) => [p.name, p.role]));

/** Gradients of tfjs autodiff for weights `w` with dropout masks drawn from Rng(rngSeed). */
async function tfGradients(w: NamedTensors, batch: EngineBatch, rng: Rng) {
  const { tf } = await loadTfjs();
  const params = weightsToTensors(tf, tinySpec, w);
  const x = tf.tensor4d(batch.data, [batch.size, 3, 9, 9]);
  const result = tfjsLossAndGradients(tf, tinySpec, params, x, batch.labels, { training: true, rng });
  tf.dispose([x, ...Object.values(params)]);
  return result;
}

test('autodiff gradients (through conv, pool, LRN, grouped conv, fc, dropout) match float64 central differences', async () => {
  const w = initWeightsForTest(tinySpec, 1);
  const batch = tinyBatch(2);
  const masks = { drop1: drawDropoutMask(new Rng(3), [N, 6], 0.5) };
  const tfResult = await tfGradients(w, batch, new Rng(3)); // draws the same mask as above

  const w64: Record<string, Float64Array> = Object.fromEntries(Object.entries(w).map(([k, v]) => [k, Float64Array.from(v)]));
  const loss = () => softmaxCrossEntropyNaive(naiveForward(tinySpec, w64, batch.data, N, masks), batch.labels);
  // Loss of the two implementations (float32 vs float64): ≤ 1e-5 relative.
  assert.ok(Math.abs(tfResult.loss - loss()) <= 1e-5 * Math.abs(loss()), `loss ${tfResult.loss} vs ${loss()}`);

  // Central differences in float64 with h = 1e-6: truncation O(h²·f''') and rounding O(1e-16/h)
  // are both < 1e-9, far below the float32 autodiff's own error (float32 ε ≈ 6e-8 through ~10
  // ops: ~1e-6 of the largest gradient). A relu/maxpool kink within h of a sample would show
  // as a gross mismatch; with random data that has probability ~1e-6. Tolerance: 1e-4 of the
  // tensor's largest |gradient|.
  const h = 1e-6;
  for (const p of parameterList(tinySpec)) {
    const fd = new Float64Array(w64[p.name].length);
    for (let i = 0; i < fd.length; i++) {
      const saved = w64[p.name][i];
      w64[p.name][i] = saved + h;
      const up = loss();
      w64[p.name][i] = saved - h;
      const down = loss();
      w64[p.name][i] = saved;
      fd[i] = (up - down) / (2 * h);
    }
    const err = maxRelativeError(tfResult.grads[p.name], fd);
    assert.ok(err < 1e-4, `${p.name}: max error ${err} of max |grad|`);
    assert.ok(
      fd.some((v) => Math.abs(v) > 1e-4),
      `${p.name}: gradient is ~0, the check would be vacuous`,
    );
  }
});

test('sgdUpdateReference: hand-computed momentum, Nesterov and plain SGD steps', () => {
  // W = 2, g = 0.5, v = 0.1, lr = 0.1, μ = 0.9, λ = 0.01; bias b = 1, g = 0.5, v = 0.1, 2x lr
  const w = { a: Float32Array.of(2), b: Float32Array.of(1) };
  const g = { a: Float32Array.of(0.5), b: Float32Array.of(0.5) };
  const v = { a: Float32Array.of(0.1), b: Float32Array.of(0.1) };
  const r: Record<string, ParamRole> = { a: 'weight', b: 'bias' };
  const base: OptimizerConfig = { useMomentum: true, nesterov: false, momentum: 0.9, weightDecay: 0.01, biasLrMultiplier: 2 };
  const close = (x: number, y: number) => assert.ok(Math.abs(x - y) < 1e-6, `${x} vs ${y}`);

  // momentum: g' = 0.5 + 0.01·2 = 0.52; v = 0.09 − 0.052 = 0.038; W = 2.038
  //           bias: v = 0.09 − 0.2·0.5 = −0.01; b = 0.99
  let u = sgdUpdateReference(w, g, v, 0.1, base, r);
  close(u.velocities.a[0], 0.038);
  close(u.weights.a[0], 2.038);
  close(u.velocities.b[0], -0.01);
  close(u.weights.b[0], 0.99);

  // Nesterov (seed): v = 0.81·0.1 − 1.9·0.1·0.52 = 0.081 − 0.0988 = −0.0178; W = 1.9822
  //           bias: v = 0.081 − 1.9·0.2·0.5 = −0.109; b = 0.891
  u = sgdUpdateReference(w, g, v, 0.1, { ...base, nesterov: true }, r);
  close(u.velocities.a[0], -0.0178);
  close(u.weights.a[0], 1.9822);
  close(u.velocities.b[0], -0.109);
  close(u.weights.b[0], 0.891);

  // plain SGD: W = 2 − 0.1·0.52 = 1.948; b = 1 − 0.2·0.5 = 0.9; velocities unchanged
  u = sgdUpdateReference(w, g, v, 0.1, { ...base, useMomentum: false }, r);
  close(u.weights.a[0], 1.948);
  close(u.weights.b[0], 0.9);
  close(u.velocities.a[0], 0.1);
  close(u.velocities.b[0], 0.1);
  assert.equal(w.a[0], 2); // inputs untouched
});

for (const [label, optimizer] of [
  ['momentum', DEFAULT_OPTIMIZER],
  ['Nesterov', { ...DEFAULT_OPTIMIZER, nesterov: true }],
  ['plain SGD', { ...DEFAULT_OPTIMIZER, useMomentum: false }],
] as const) {
  test(`one engine step (${label}) equals sgdUpdateReference applied to autodiff gradients`, async () => {
    const w0 = initWeightsForTest(tinySpec, 4);
    const v0: NamedTensors = Object.fromEntries(Object.entries(w0).map(([k, a], i) => [k, randomArray(new Rng(100 + i), a.length, 0.01)]));
    const batch = tinyBatch(5);
    const lr = 0.05;
    const engine = await createTfjsEngine(tinySpec, w0, { optimizer, seed: 6 });
    engine.setVelocities(v0);
    const rngState = engine.getRngState();
    const metrics = await engine.step(batch, lr);

    const ref = await tfGradients(w0, batch, new Rng(rngState as never)); // the same dropout draws
    const want = sgdUpdateReference(w0, ref.grads, v0, lr, optimizer, roles);
    const gotW = engine.getWeights(),
      gotV = engine.getVelocities();
    for (const name of Object.keys(roles)) {
      // float32 tfjs ops vs float64-then-rounded: a few ulps of the values involved.
      assert.ok(maxRelativeError(gotW[name], want.weights[name]) < 1e-6, `${name} weights`);
      assert.ok(maxRelativeError(gotV[name], want.velocities[name]) < 1e-5, `${name} velocities`);
      assert.ok(maxRelativeError(gotW[name], w0[name]) > 1e-7, `${name} did not change`);
    }
    assert.ok(Math.abs(metrics.loss - ref.loss) < 1e-6);
    assert.equal(metrics.size, N);
    assert.equal(metrics.top1Errors, countTopKErrors(ref.logits, batch.labels, 4, 1));
    assert.equal(metrics.top5Errors, countTopKErrors(ref.logits, batch.labels, 4, 4));
    await engine.dispose();
  });
}

test('a few steps on a fixed batch reduce the loss', async () => {
  const engine = await createTfjsEngine(tinySpec, initWeightsForTest(tinySpec, 7), { optimizer: DEFAULT_OPTIMIZER, seed: 8 });
  const batch = tinyBatch(9);
  const before = (await engine.evaluate(batch)).loss;
  for (let i = 0; i < 30; i++) await engine.step(batch, 0.05);
  const after = (await engine.evaluate(batch)).loss;
  assert.ok(after < 0.7 * before, `loss ${before} → ${after}`);
  await engine.dispose();
});

test('evaluate: no dropout, no update, deterministic, equals the naive forward', async () => {
  const w = initWeightsForTest(tinySpec, 10);
  const engine = await createTfjsEngine(tinySpec, w, { optimizer: DEFAULT_OPTIMIZER, seed: 11 });
  const batch = tinyBatch(12);
  const rng = engine.getRngState();
  const a = await engine.evaluate(batch),
    b = await engine.evaluate(batch);
  assert.deepEqual(a, b);
  assert.deepEqual(engine.getRngState(), rng); // no masks drawn
  assert.deepEqual(engine.getWeights(), w);
  const logits = naiveForward(tinySpec, w, batch.data, N);
  assert.ok(Math.abs(a.loss - softmaxCrossEntropyNaive(logits, batch.labels)) < 1e-5 * a.loss);
  assert.equal(a.top1Errors, countTopKErrors(logits.data, batch.labels, 4, 1));
  await engine.dispose();
});

test('weights, velocities and RNG state: copies in and out; same state, same step', async () => {
  const w = initWeightsForTest(tinySpec, 13);
  const a = await createTfjsEngine(tinySpec, w, { optimizer: DEFAULT_OPTIMIZER, seed: 14 });
  const b = await createTfjsEngine(tinySpec, initWeightsForTest(tinySpec, 99), { optimizer: DEFAULT_OPTIMIZER, seed: 15 });
  const got = a.getWeights();
  got['fc2.bias'][0] += 1; // mutating a copy changes nothing inside
  assert.deepEqual(a.getWeights(), w);
  w['conv1.weight'][0] += 1; // nor does mutating the array given at creation
  assert.notDeepEqual(a.getWeights()['conv1.weight'], w['conv1.weight']);
  w['conv1.weight'][0] -= 1;

  b.setWeights(a.getWeights());
  b.setVelocities(a.getVelocities());
  b.setRngState(a.getRngState());
  const batch = tinyBatch(16);
  assert.deepEqual(await a.step(batch, 0.01), await b.step(batch, 0.01));
  assert.deepEqual(a.getWeights(), b.getWeights());
  assert.deepEqual(a.getVelocities(), b.getVelocities());
  assert.ok(Object.values(a.getVelocities()).some((v) => v.some((x) => x !== 0)));

  assert.throws(() => b.setWeights({}), /setWeights: missing conv1\.weight/);
  assert.throws(() => b.setRngState({ s: [1, 2] }), /for state but received \{"s":\[1,2\]\}/);
  await assert.rejects(b.step({ ...batch, labels: Int32Array.of(0, 1, 4) }, 0.01), /label 4 outside 0\.\.3/);
  await a.dispose();
  await b.dispose();
  await assert.rejects(a.evaluate(batch), /after dispose/);
});

test("top-k error counts: k = min(5, numClasses), ties in the label's favour", () => {
  // 2 images, 6 classes
  const logits = [0, 1, 2, 3, 4, 5, /**/ 5, 5, 1, 1, 1, 1];
  assert.equal(countTopKErrors(logits, [5, 0], 6, 1), 0);
  assert.equal(countTopKErrors(logits, [4, 1], 6, 1), 1); // image 0 ranks 2nd; image 1 ties for 1st
  assert.equal(countTopKErrors(logits, [0, 2], 6, 5), 1); // label 0 is 6th: a top-5 error; ties for 3rd: fine
  assert.equal(countTopKErrors([NaN, NaN], [0], 2, 1), 1);
});

test('step and evaluate leave no tensors behind', async () => {
  const { tf } = await loadTfjs();
  const engine = await createTfjsEngine(tinySpec, initWeightsForTest(tinySpec, 17), { optimizer: { nesterov: true }, seed: 18 });
  const batch = tinyBatch(19);
  await engine.step(batch, 0.01); // first call may allocate lazily
  const before = tf.memory().numTensors;
  await engine.step(batch, 0.01);
  await engine.evaluate(batch);
  engine.getWeights();
  engine.setVelocities(engine.getVelocities());
  assert.equal(tf.memory().numTensors, before);
  await engine.dispose();
});

test('createTfjsEngine validates its options', async () => {
  const w = initWeightsForTest(tinySpec, 1);
  await assert.rejects(createTfjsEngine(tinySpec, w, { optimizer: { ...DEFAULT_OPTIMIZER, momentum: 1.5 }, seed: 1 }), /optimizer\.momentum/);
  await assert.rejects(createTfjsEngine(tinySpec, w, { optimizer: DEFAULT_OPTIMIZER, seed: 0.5 }), /seed/);
});
