#!/usr/bin/env node
// The GPU check's runner (scripts/gpu/check.sh starts it): needs only Node and onnxruntime-node
// (+ onnxruntime-common), nothing else from this repo, and the graphs of make-graphs.mjs.
//
//   node runner.cjs <graphs-dir>
//
// Prints, one "name: value" line each (and a JSON summary as the last line):
//   backends / adapter       listSupportedBackends() and whether a WebGPU adapter works
//   infer.b<N>               the exported AlexNet on webgpu vs the CPU provider: max |Δlogit|
//                            relative to the largest logit, img/s on each
//   step.*                   one SGD step on identical weights, velocities, batch and masks:
//                            webgpu (portable graph) vs CPU (CPU graph); max relative difference
//                            of the update (W' − W) over all parameters (target ≤ 1e-3), seconds
//   train.b<N>               webgpu training img/s with the state kept on the GPU (as
//                            `--devices webgpu` trains), for ~TRAIN_SECONDS per batch size
//   transfer.*               seconds to upload all weights+velocities, and to download them
//   profile.top              onnxruntime's profiler over a few steps: op types by summed time
// Knobs (environment): INFER_BATCHES (1,32,128), STEP_BATCH (32), TRAIN_BATCHES (128,256),
// TRAIN_SECONDS (30), PROFILE_STEPS (3), SKIP_CPU_INFER_SPEED (unset).
'use strict';
process.env.ORT_DISABLE_TELEMETRY = '1';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const dir = path.resolve(process.argv[2] || '.');
const ort = require(process.env.ORT_NODE_DIR ? path.resolve(process.env.ORT_NODE_DIR) : 'onnxruntime-node');
const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8'));
const list = (name, dflt) => (process.env[name] ?? dflt).split(',').filter(Boolean).map(Number);
const INFER_BATCHES = list('INFER_BATCHES', '1,32,128');
const STEP_BATCH = Number(process.env.STEP_BATCH ?? 32);
const TRAIN_BATCHES = list('TRAIN_BATCHES', '128,256');
const TRAIN_SECONDS = Number(process.env.TRAIN_SECONDS ?? 30);
const PROFILE_STEPS = Number(process.env.PROFILE_STEPS ?? 3);
const summary = {};
const say = (name, value) => {
  summary[name] = value;
  process.stdout.write(`${name}: ${typeof value === 'string' ? value : JSON.stringify(value)}\n`);
};
const now = () => Number(process.hrtime.bigint()) / 1e9;
const S = meta.inputSize,
  C = meta.inputChannels,
  K = meta.numClasses;
const sizeOf = (shape) => shape.reduce((a, b) => a * b, 1);

// xorshift128 + Box-Muller: a fixed stream, so every run feeds the same numbers.
function rng(seed) {
  let a = seed >>> 0 || 1,
    b = 362436069,
    c = 521288629,
    d = 88675123,
    spare;
  const next = () => {
    const t = a ^ (a << 11);
    a = b;
    b = c;
    c = d;
    d = (d ^ (d >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    return d / 4294967296;
  };
  const normal = () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const u = Math.max(next(), 1e-12),
      v = next(),
      r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
  return { next, normal };
}

function makeWeights() {
  const file = path.join(dir, meta.weightsFile);
  const r = rng(1);
  const buffer = Buffer.alloc(meta.weightsBytes);
  const weights = {};
  for (const p of meta.params) {
    const w = new Float32Array(buffer.buffer, buffer.byteOffset + p.offset, p.length / 4);
    if (p.init.dist === 'normal') for (let i = 0; i < w.length; i++) w[i] = (p.init.mean ?? 0) + p.init.std * r.normal();
    else if (p.init.dist === 'constant') w.fill(p.init.value);
    else throw new Error(`runner: init ${p.init.dist} not implemented`);
    weights[p.name] = w;
  }
  fs.writeFileSync(file, buffer);
  return weights;
}

function batch(n, seed) {
  const r = rng(seed);
  return {
    data: Float32Array.from({ length: n * C * S * S }, () => 60 * (2 * r.next() - 1)),
    labels: Int32Array.from({ length: n }, () => Math.floor(r.next() * K)),
  };
}

const webgpuOptions = (extra = {}) => ({ executionProviders: ['webgpu'], graphOptimizationLevel: 'all', logSeverityLevel: 3, ...extra });
const cpuOptions = (extra = {}) => ({
  executionProviders: ['cpu'],
  graphOptimizationLevel: 'all',
  intraOpNumThreads: os.availableParallelism?.() ?? os.cpus().length,
  logSeverityLevel: 3,
  ...extra,
});

async function timeRuns(fn, seconds, minRuns = 3) {
  await fn(); // warm-up (shader compilation, memory planning)
  let runs = 0;
  const t0 = now();
  while (runs < minRuns || now() - t0 < seconds) {
    await fn();
    runs++;
  }
  return (now() - t0) / runs;
}

function maxRelDiff(a, b) {
  let d = 0,
    m = 1e-30;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

async function inference(weights) {
  const model = path.join(dir, 'alexnet-infer.onnx');
  const t0 = now();
  const gpu = await ort.InferenceSession.create(model, webgpuOptions());
  say('infer.webgpu_session_seconds', +(now() - t0).toFixed(2));
  const cpu = await ort.InferenceSession.create(model, cpuOptions());
  for (const n of INFER_BATCHES) {
    const b = batch(n, 100 + n);
    const feeds = { data: new ort.Tensor('float32', b.data, [n, C, S, S]) };
    const want = (await cpu.run(feeds, ['logits'])).logits.data;
    const got = (await gpu.run(feeds, ['logits'])).logits.data;
    const gpuSeconds = await timeRuns(() => gpu.run(feeds, ['logits']), 3);
    const cpuSeconds = process.env.SKIP_CPU_INFER_SPEED ? NaN : await timeRuns(() => cpu.run(feeds, ['logits']), 1, 1);
    say(`infer.b${n}`, {
      maxRelDiff: +maxRelDiff(got, want).toExponential(2),
      webgpuImgPerSec: +(n / gpuSeconds).toFixed(1),
      cpuImgPerSec: +(n / cpuSeconds).toFixed(1),
    });
  }
  await gpu.release();
  await cpu.release();
  void weights;
}

function stepFeeds(weights, velocities, n, seed) {
  const b = batch(n, seed);
  const r = rng(seed + 1);
  const feeds = {
    data: new ort.Tensor('float32', b.data, [n, C, S, S]),
    labels: new ort.Tensor('int32', b.labels, [n]),
    lr: new ort.Tensor('float32', Float32Array.of(0.01), []),
  };
  for (const m of meta.masks) {
    const keep = 1 / (1 - m.rate);
    feeds[m.input] = new ort.Tensor(
      'float32',
      Float32Array.from({ length: n * sizeOf(m.shape) }, () => (r.next() >= m.rate ? keep : 0)),
      [n, ...m.shape],
    );
  }
  for (const p of meta.params) {
    feeds[p.name] = new ort.Tensor('float32', weights[p.name], p.shape);
    feeds[`${p.name}.velocity`] = new ort.Tensor('float32', velocities[p.name], p.shape);
  }
  return feeds;
}

const stateOutputs = () => meta.params.flatMap((p) => [`${p.name}.new`, `${p.name}.velocity.new`]);
const METRICS = ['loss', 'top1_errors', 'top5_errors'];

async function stepCheck(weights) {
  const r = rng(7);
  const velocities = Object.fromEntries(meta.params.map((p) => [p.name, Float32Array.from({ length: sizeOf(p.shape) }, () => 1e-4 * r.normal())]));
  const feeds = stepFeeds(weights, velocities, STEP_BATCH, 11);
  const cpu = await ort.InferenceSession.create(path.join(dir, 'train-cpu.onnx'), cpuOptions());
  let t0 = now();
  const want = await cpu.run(feeds);
  say('step.cpu_seconds', +(now() - t0).toFixed(3));
  await cpu.release();
  const gpu = await ort.InferenceSession.create(path.join(dir, 'train-portable.onnx'), webgpuOptions());
  t0 = now();
  const got = await gpu.run(feeds);
  say('step.webgpu_first_seconds', +(now() - t0).toFixed(3));
  t0 = now();
  await gpu.run(feeds);
  say('step.webgpu_seconds', +(now() - t0).toFixed(3));
  await gpu.release();
  // Two measures of the update's difference. Max relative: max |Δgpu − Δcpu| / max |Δcpu| per
  // parameter. Relative L2: ‖Δgpu − Δcpu‖ / ‖Δcpu‖. Kernels agree to ~2e-6 (lavapipe); a whole
  // step differs more where float32 rounding puts a pre-activation on the other side of 0 (a
  // ReLU mask flips) or changes a max-pool's argmax between near-equal values: the gradient then
  // flows through another element, and every layer below sees it (docs/gpus.md).
  let worst = 0,
    worstName = '',
    worstL2 = 0,
    worstL2Name = '';
  for (const p of meta.params) {
    const w = weights[p.name];
    const g = got[`${p.name}.new`].data,
      c = want[`${p.name}.new`].data;
    let diff = 0,
      ref = 1e-30,
      num = 0,
      den = 1e-60;
    for (let i = 0; i < w.length; i++) {
      const dg = g[i] - w[i],
        dc = c[i] - w[i];
      diff = Math.max(diff, Math.abs(dg - dc));
      ref = Math.max(ref, Math.abs(dc));
      num += (dg - dc) ** 2;
      den += dc ** 2;
    }
    if (diff / ref > worst) {
      worst = diff / ref;
      worstName = p.name;
    }
    if (Math.sqrt(num / den) > worstL2) {
      worstL2 = Math.sqrt(num / den);
      worstL2Name = p.name;
    }
  }
  say('step.batch', STEP_BATCH);
  say('step.loss', { webgpu: got.loss.data[0], cpu: want.loss.data[0] });
  say('step.max_rel_update_diff', { value: +worst.toExponential(2), param: worstName, target: 1e-3, met: worst <= 1e-3 });
  say('step.rel_l2_update_diff', { value: +worstL2.toExponential(2), param: worstL2Name });
}

async function trainSpeed(weights) {
  const zeros = Object.fromEntries(meta.params.map((p) => [p.name, new Float32Array(sizeOf(p.shape))]));
  const preferredOutputLocation = {
    ...Object.fromEntries(stateOutputs().map((n) => [n, 'gpu-buffer'])),
    ...Object.fromEntries(METRICS.map((m) => [m, 'cpu'])),
  };
  const session = await ort.InferenceSession.create(path.join(dir, 'train-portable.onnx'), webgpuOptions({ preferredOutputLocation }));
  const download = await ort.InferenceSession.create(path.join(dir, 'download.onnx'), webgpuOptions());
  for (const n of TRAIN_BATCHES) {
    const feeds = stepFeeds(weights, zeros, n, 21);
    const hostState = Object.fromEntries(
      meta.params.flatMap((p) => [
        [p.name, feeds[p.name]],
        [`${p.name}.velocity`, feeds[`${p.name}.velocity`]],
      ]),
    );
    let state = hostState;
    const step = async () => {
      const out = await session.run({ ...feeds, ...state }, [...METRICS, ...stateOutputs()]);
      const next = Object.fromEntries(
        meta.params.flatMap((p) => [
          [p.name, out[`${p.name}.new`]],
          [`${p.name}.velocity`, out[`${p.name}.velocity.new`]],
        ]),
      );
      for (const t of Object.values(state)) if (t.location === 'gpu-buffer') t.dispose();
      state = next;
      return out.loss.data[0];
    };
    const t0 = now();
    await step(); // first step: shaders, and the upload of the host state
    const firstSeconds = now() - t0;
    const seconds = await timeRuns(step, TRAIN_SECONDS);
    say(`train.b${n}`, { imgPerSec: +(n / seconds).toFixed(1), stepSeconds: +seconds.toFixed(4), firstStepSeconds: +firstSeconds.toFixed(2) });
    if (n === TRAIN_BATCHES[0]) {
      // Transfers: a step fed host state (upload of 488 MB) against one fed device state; a download of all of it.
      const onDevice = await timeRuns(step, 0, 2);
      const uploaded = await timeRuns(
        async () => {
          for (const t of Object.values(state)) if (t.location === 'gpu-buffer') t.dispose();
          state = hostState;
          await step();
        },
        0,
        2,
      );
      const t1 = now();
      await download.run(state);
      say('transfer', {
        uploadStateSeconds: +(uploaded - onDevice).toFixed(4),
        downloadStateSeconds: +(now() - t1).toFixed(4),
        stateMiB: +((2 * meta.weightsBytes) / 2 ** 20).toFixed(0),
      });
    }
    for (const t of Object.values(state)) if (t.location === 'gpu-buffer') t.dispose();
  }
  await session.release();
  await download.release();
}

async function profile(weights) {
  if (PROFILE_STEPS < 1) return;
  const zeros = Object.fromEntries(meta.params.map((p) => [p.name, new Float32Array(sizeOf(p.shape))]));
  const prefix = path.join(os.tmpdir(), `alexnet-stream-gpu-profile-${process.pid}`);
  const n = TRAIN_BATCHES[0];
  const session = await ort.InferenceSession.create(path.join(dir, 'train-portable.onnx'), webgpuOptions({ enableProfiling: true, profileFilePrefix: prefix }));
  const feeds = stepFeeds(weights, zeros, n, 31);
  for (let i = 0; i < PROFILE_STEPS + 1; i++) await session.run(feeds, METRICS);
  session.endProfiling();
  await session.release();
  const file = fs
    .readdirSync(path.dirname(prefix))
    .map((f) => path.join(path.dirname(prefix), f))
    .find((f) => f.startsWith(prefix));
  if (!file) return say('profile.top', 'no profile file');
  const events = JSON.parse(fs.readFileSync(file, 'utf8'));
  fs.rmSync(file);
  const byOp = {};
  let total = 0;
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const op = e.args?.op_name ?? '?';
    byOp[op] = (byOp[op] ?? 0) + e.dur;
    total += e.dur;
  }
  const top = Object.entries(byOp)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 12)
    .map(([op, us]) => `${op} ${((100 * us) / total).toFixed(1)}%`);
  say('profile.top', { batch: n, steps: PROFILE_STEPS + 1, kernelSecondsPerStep: +(total / 1e6 / (PROFILE_STEPS + 1)).toFixed(4), top });
}

(async () => {
  say('versions', { node: process.version, onnxruntime: ort.env?.versions?.node ?? '?', cpus: os.cpus().length, cpu: os.cpus()[0]?.model });
  say(
    'backends',
    ort
      .listSupportedBackends()
      .map((b) => `${b.name}${b.bundled ? '' : ' (not bundled)'}`)
      .join(', '),
  );
  try {
    const probe = await ort.InferenceSession.create(path.join(dir, 'download.onnx'), webgpuOptions());
    await probe.release();
    say('adapter', 'webgpu: a session starts');
  } catch (err) {
    say('adapter', `webgpu: NO ADAPTER: ${String(err.message).split('\n')[0]}`);
    process.exitCode = 3;
    return;
  }
  const t0 = now();
  const weights = makeWeights();
  say('weights_seconds', +(now() - t0).toFixed(1));
  for (const [name, phase] of [
    ['inference', inference],
    ['step', stepCheck],
    ['train', trainSpeed],
    ['profile', profile],
  ]) {
    if ((process.env.SKIP_PHASES ?? '').split(',').includes(name)) continue;
    try {
      await phase(weights);
    } catch (err) {
      say(`${name}.error`, String(err.message).split('\n')[0]);
      process.exitCode = 1;
    }
  }
  process.stdout.write(`SUMMARY ${JSON.stringify(summary)}\n`);
})();
