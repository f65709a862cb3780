/**
 * The onnxruntime engine on a reduced-width theano-alexnet (67x67): steps against the
 * reference path (tfjs autodiff with the same seeded dropout masks + sgdUpdateReference), state
 * buffers reused across steps and groups of steps in one run, partial batches, evaluate, get/set
 * state, exact resume, and the errors a user can hit.
 *
 * Tolerance: after two steps the weights' change is compared with the reference's to 1e-5 of
 * its size (the graph tests measure ≤ 1.5e-6 for one gradient; two chained steps roughly
 * double it), plus W's own float32 rounding.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type NamedTensors, Rng } from '@alexnet-stream/core';
import { initParameters, type ModelSpec, parameterList } from '@alexnet-stream/model-alexnet';
import { type BatchGroup, DEFAULT_OPTIMIZER, type EngineBatch } from '../../engine';
import { loadTfjs } from '../tfjs/backend';
import { weightsToTensors } from '../tfjs/forward';
import { tfjsLossAndGradients } from '../tfjs/loss';
import { sgdUpdateReference } from '../tfjs/sgd-reference';
import { reducedSpec } from '../../graph/graph.test-util';
import { createOrtEngine, executionProvidersFor } from './engine';

const tinySpec = (): ModelSpec => reducedSpec('theano-alexnet', 67, 10);

function batchOf(spec: ModelSpec, size: number, seed: number): EngineBatch {
  const rng = new Rng(seed);
  const data = Float32Array.from({ length: size * 3 * spec.inputSize ** 2 }, () => 60 * (2 * rng.nextFloat() - 1));
  return { data, labels: Int32Array.from({ length: size }, () => rng.nextInt(spec.numClasses)), size };
}

function weightsOf(spec: ModelSpec): NamedTensors {
  const w = initParameters(spec, 3);
  for (const p of parameterList(spec)) if (p.role === 'weight') w[p.name] = w[p.name].map((v) => v * 4);
  return w;
}

function assertClose(got: NamedTensors, want: NamedTensors, before: NamedTensors, what: string): void {
  for (const name of Object.keys(want)) {
    let maxDiff = 0,
      maxDelta = 0,
      maxW = 0;
    for (let i = 0; i < want[name].length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(got[name][i] - want[name][i]));
      maxDelta = Math.max(maxDelta, Math.abs(want[name][i] - before[name][i]));
      maxW = Math.max(maxW, Math.abs(want[name][i]));
    }
    assert.ok(maxDiff <= 1e-5 * maxDelta + 8 * 2 ** -24 * maxW, `${what} ${name}: error ${maxDiff} for change ${maxDelta}`);
  }
}

test('two steps with dropout equal tfjs autodiff + sgdUpdateReference (same seeded masks); metrics too', async () => {
  const spec = tinySpec();
  const w0 = weightsOf(spec);
  const engine = await createOrtEngine(spec, w0, { seed: 7, intraOpThreads: 1 });
  const { tf } = await loadTfjs();
  const rng = new Rng(7); // the engine's mask stream, drawn in the same order by tfjsForward
  const roles = Object.fromEntries(parameterList(spec).map((p) => [p.name, p.role]));
  let weights = w0;
  let velocities: NamedTensors = Object.fromEntries(parameterList(spec).map((p) => [p.name, new Float32Array(w0[p.name].length)]));
  for (const [i, lr] of [0.01, 0.02].entries()) {
    const batch = batchOf(spec, 3, 100 + i);
    const metrics = await engine.step(batch, lr);
    const params = weightsToTensors(tf, spec, weights);
    const x = tf.tensor4d(batch.data, [3, 3, 67, 67]);
    const ref = tfjsLossAndGradients(tf, spec, params, x, batch.labels, { training: true, rng });
    tf.dispose([x, ...Object.values(params)]);
    assert.ok(Math.abs(metrics.loss - ref.loss) < 1e-5 * Math.max(1, ref.loss), `step ${i}: loss ${metrics.loss} vs ${ref.loss}`);
    assert.equal(metrics.size, 3);
    const before = weights;
    ({ weights, velocities } = sgdUpdateReference(weights, ref.grads, velocities, lr, DEFAULT_OPTIMIZER, roles));
    assertClose(engine.getWeights(), weights, before, `step ${i} weights`);
  }
  assertClose(
    engine.getVelocities(),
    velocities,
    Object.fromEntries(Object.keys(velocities).map((k) => [k, new Float32Array(velocities[k].length)])),
    'velocities',
  );
  await engine.dispose();
});

test('partial batches, evaluate, and exact resume from weights + velocities + rng state', async () => {
  const spec = tinySpec();
  const a = await createOrtEngine(spec, weightsOf(spec), { seed: 9, intraOpThreads: 1 });
  await a.step(batchOf(spec, 4, 1), 0.01);
  await a.step(batchOf(spec, 2, 2), 0.01); // a partial last batch: same session (dynamic N)
  const saved = { weights: a.getWeights(), velocities: a.getVelocities(), rng: a.getRngState() };
  const b = await createOrtEngine(spec, saved.weights, { seed: 12345, intraOpThreads: 1 });
  b.setVelocities(saved.velocities);
  b.setRngState(JSON.parse(JSON.stringify(saved.rng))); // as a checkpoint's state.json stores it
  const next = batchOf(spec, 4, 3);
  const ma = await a.step(next, 0.005);
  const mb = await b.step(next, 0.005);
  assert.deepEqual(mb, ma);
  assert.deepEqual(b.getWeights(), a.getWeights()); // bitwise: same graph, same inputs, same masks
  assert.deepEqual(b.getVelocities(), a.getVelocities());

  const evalBatch = batchOf(spec, 5, 4);
  const e1 = await a.evaluate(evalBatch);
  const e2 = await a.evaluate(evalBatch);
  assert.deepEqual(e1, e2); // no dropout, no update
  assert.equal(e1.size, 5);
  assert.ok(e1.top5Errors <= e1.top1Errors && e1.top1Errors <= 5);
  assert.ok(Number.isFinite(e1.loss) && e1.loss > 0);
  await a.dispose();
  await b.dispose();
});

function stacked(batches: EngineBatch[]): BatchGroup {
  const data = new Float32Array(batches.reduce((n, b) => n + b.data.length, 0));
  const labels = new Int32Array(batches.reduce((n, b) => n + b.labels.length, 0));
  let d = 0,
    l = 0;
  for (const b of batches) {
    data.set(b.data, d);
    labels.set(b.labels, l);
    d += b.data.length;
    l += b.labels.length;
  }
  return { data, labels, size: batches[0].size, count: batches.length };
}

test('a group of steps in one run equals the same steps one by one (bitwise), dropout stream included', async () => {
  const spec = tinySpec();
  const w0 = weightsOf(spec);
  const grouped = await createOrtEngine(spec, w0, { seed: 5, intraOpThreads: 1, stepsPerRun: 3 });
  const single = await createOrtEngine(spec, w0, { seed: 5, intraOpThreads: 1, stepsPerRun: 3 });
  const batches = [1, 2, 3, 4].map((i) => batchOf(spec, 3, 20 + i));
  const groupMetrics = [...(await grouped.stepGroup(stacked(batches.slice(0, 3)), 0.01)), ...(await grouped.stepGroup(stacked(batches.slice(3)), 0.01))];
  const singleMetrics = [];
  for (const b of batches) singleMetrics.push(await single.step(b, 0.01));
  assert.deepEqual(groupMetrics, singleMetrics);
  assert.equal(new Set(groupMetrics.map((m) => m.loss)).size, 4); // four different steps, not one repeated
  assert.deepEqual(grouped.getWeights(), single.getWeights());
  assert.deepEqual(grouped.getVelocities(), single.getVelocities());
  assert.deepEqual(grouped.getRngState(), single.getRngState());
  assert.notDeepEqual(grouped.getWeights(), w0);

  await assert.rejects(grouped.stepGroup(stacked(batchesOf4()), 0.01), /Expected an integer between 1 and 3 for count but received 4/);
  const bad = stacked(batches.slice(0, 2));
  bad.labels[4] = 10;
  await assert.rejects(grouped.stepGroup(bad, 0.01), /label 10 of image 1 of batch 2 is outside \[0, 10\)/);
  await assert.rejects(grouped.stepGroup({ ...bad, count: 3 }, 0.01), /data has .* values, expected 3 batches of 3x3x67x67/);
  await grouped.dispose();
  await single.dispose();

  function batchesOf4(): EngineBatch[] {
    return [0, 1, 2, 3].map((i) => batchOf(spec, 1, i));
  }
});

test('setWeights replaces the weights the next step reads, and getWeights returns copies', async () => {
  const spec = tinySpec();
  const engine = await createOrtEngine(spec, weightsOf(spec), { intraOpThreads: 1 });
  await engine.step(batchOf(spec, 2, 1), 0.01); // the state buffers have been a run's output once
  const fresh = weightsOf(spec);
  engine.setWeights(fresh);
  assert.deepEqual(engine.getWeights(), fresh);
  const copy = engine.getWeights();
  copy['fc8.bias'][0] = 42;
  assert.notEqual(engine.getWeights()['fc8.bias'][0], 42);
  await engine.dispose();
});

test('bad input: clear errors naming what is wrong', async () => {
  const spec = tinySpec();
  const engine = await createOrtEngine(spec, weightsOf(spec), { intraOpThreads: 1, batchSize: 4 });
  const good = batchOf(spec, 2, 1);
  await assert.rejects(engine.step({ ...good, labels: Int32Array.of(0, 10) }, 0.01), /label 10 of image 1 is outside \[0, 10\)/);
  await assert.rejects(engine.step({ ...good, size: 3 }, 0.01), /data has .* values, expected 3x3x67x67/);
  await assert.rejects(engine.step(batchOf(spec, 5, 1), 0.01), /more than the engine's batchSize 4/);
  await assert.rejects(engine.step(good, Number.NaN), { code: 'ERR_INVALID_PARAMETER', message: 'Expected a finite number for lr but received NaN' });
  assert.throws(() => engine.setWeights({ ...weightsOf(spec), 'conv1.weight': new Float32Array(3) }), /conv1.weight has 3 values/);
  assert.throws(() => engine.setRngState({ s: [1, 2] }), /Expected \{ s: \[4 uint32\], spareNormal \} \(from getRngState\) for state but received/);
  await engine.dispose();
  await assert.rejects(createOrtEngine(spec, {}, {}), /missing parameter conv1.weight/);
});

test('devices map to execution providers; CUDA without the CUDA binaries is explained in one line', async () => {
  assert.deepEqual(executionProvidersFor(['cpu', 'cuda:1', 'cuda', 'webgpu']), ['cpu', { name: 'cuda', deviceId: 1 }, { name: 'cuda', deviceId: 0 }, 'webgpu']);
  assert.throws(() => executionProvidersFor(['gpu0']), /Expected cpu, webgpu\[:<index>\] or cuda\[:<index>\] for device but received "gpu0"/);
  const spec = tinySpec();
  try {
    const engine = await createOrtEngine(spec, weightsOf(spec), { devices: ['cuda:0'] });
    await engine.dispose(); // this onnxruntime-node has CUDA: nothing to explain
  } catch (err) {
    assert.equal((err as { exitCode?: number }).exitCode, 2);
    assert.match(
      (err as Error).message,
      /^cuda: (this onnxruntime-node has no CUDA provider — reinstall with ONNXRUNTIME_NODE_INSTALL=cuda12, needs CUDA 12 and cuDNN 9|the CUDA provider did not start)/,
    );
    assert.doesNotMatch((err as Error).message, /\n/);
  }
});
