#!/usr/bin/env node
// Weight averaging across worker processes (DESIGN §6): the full theano-alexnet parameter set
// (61M floats, 244 MB) averaged by the ZeroMQ ring all-reduce across 2 and 4 processes on
// loopback (tcp 127.0.0.1; ipc for comparison), fp32 and fp16 on the wire. Reports seconds,
// GB/s (model bytes / time, and the ring's per-rank traffic 2(n-1)/n · bytes / time), the
// fp16 max abs error on realistic weights, and the fraction of a batch-128 training step
// measured with the onnxruntime engine in the same run (target: ≤ 10% with sync_every=1).
// Then "2 workers x 1 thread vs 1 worker x 2 threads, same global batch" (img/s of each).
//
// Run: npm run bench:allreduce (builds first). Env: BENCH_ROUNDS (timed averages, default 3),
// BENCH_STEP=0 (skip the training-step measurements), BENCH_STEP_BATCH (default 128),
// BENCH_SCALING_BATCH (global batch of the scaling comparison, default 32).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const { alexnetSpec, parameterList, initParameters } = require('../libs/model-alexnet/dist/index.js');
const trainer = require('../libs/trainer-multigpu/dist/index.js');
const { joinGroup, checksumTensors, threadsPerWorker } = trainer;
const SELF = fileURLToPath(import.meta.url);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const TARGET_FRACTION = 0.1;

/** Rank r's replica: the seeded init plus a rank-dependent drift of ~1e-4 (a few SGD steps apart). */
function replica(spec, rank) {
  const weights = initParameters(spec, 1);
  let state = 12345 + rank * 7919;
  for (const name of Object.keys(weights)) {
    const w = weights[name];
    for (let i = 0; i < w.length; i++) {
      state = (Math.imul(state, 1103515245) + 12345) | 0;
      w[i] += ((state >>> 8) / 16777216 - 0.5) * 2e-4;
    }
  }
  return weights;
}

// ------------------------------------------------------------------ child: one rank
if (process.argv[2] === '--child') {
  const args = JSON.parse(process.argv[3]);
  const spec = alexnetSpec('theano-alexnet');
  const group = await joinGroup({
    rank: args.rank,
    worldSize: args.worldSize,
    coordinator: args.coordinator,
    transfer: args.transfer,
    frameElements: args.frameElements,
    onFatal: (e) => {
      console.error(e.message);
      process.exit(1);
    },
  });
  const base = replica(spec, args.rank);
  const work = {};
  for (const [k, v] of Object.entries(base)) work[k] = new Float32Array(v.length);
  const times = [];
  for (let round = 0; round <= ROUNDS; round++) {
    for (const k of Object.keys(base)) work[k].set(base[k]);
    await group.barrier();
    const t0 = process.hrtime.bigint();
    await group.averageWeights(work);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (round > 0) times.push(seconds); // round 0 warms up (plans, JIT, connections)
  }
  const checksum = checksumTensors(work);
  const checksums = await group.averageMetrics([parseInt(checksum.slice(0, 12), 16)]);
  let maxAbsError = 0;
  let maxAbsWeight = 0;
  if (args.rank === 0) {
    // The exact mean of all replicas in float64, against what the ring produced.
    const replicas = [...Array(args.worldSize).keys()].map((r) => (r === 0 ? base : replica(spec, r)));
    for (const k of Object.keys(base)) {
      const got = work[k];
      for (let i = 0; i < got.length; i++) {
        let sum = 0;
        for (const rep of replicas) sum += rep[k][i];
        const err = Math.abs(got[i] - sum / args.worldSize);
        if (err > maxAbsError) maxAbsError = err;
        if (Math.abs(got[i]) > maxAbsWeight) maxAbsWeight = Math.abs(got[i]);
      }
    }
  }
  await group.close();
  if (args.rank === 0) {
    times.sort((a, b) => a - b);
    process.stdout.write(
      `${JSON.stringify({ median: times[times.length >> 1], best: times[0], identical: checksums[0] === parseInt(checksum.slice(0, 12), 16), maxAbsError, maxAbsWeight })}\n`,
    );
  }
  process.exit(0);
}

// ------------------------------------------------------------------ child: raw zeromq baseline
// One process pushes the model's bytes in 1 MiB messages to another: what the transport and
// these 2 cores give at best, measured in the same run as the ring.
if (process.argv[2] === '--raw') {
  const zmq = require('zeromq');
  const args = JSON.parse(process.argv[3]);
  const FRAME = 1 << 20;
  const frames = Math.ceil(args.bytes / FRAME);
  // PAIR both ways: the receiver acknowledges each round, so the sender knows all arrived.
  const pair = new zmq.Pair({ linger: 0 });
  if (args.rank === 0) {
    await pair.bind(args.endpoint);
    const times = [];
    for (let round = 0; round <= ROUNDS; round++) {
      let t0;
      for (let i = 0; i < frames; i++) {
        await pair.receive();
        if (i === 0) t0 = process.hrtime.bigint();
      }
      if (round > 0) times.push((Number(process.hrtime.bigint() - t0) / 1e9) * (frames / (frames - 1)));
      await pair.send('ack');
    }
    times.sort((a, b) => a - b);
    process.stdout.write(`${JSON.stringify({ median: times[times.length >> 1] })}\n`);
  } else {
    pair.connect(args.endpoint);
    const buf = Buffer.alloc(FRAME, 1);
    for (let round = 0; round <= ROUNDS; round++) {
      for (let i = 0; i < frames; i++) await pair.send(buf);
      await pair.receive();
    }
  }
  pair.close();
  process.exit(0);
}

// ------------------------------------------------------------------ child: training throughput
if (process.argv[2] === '--train-child') {
  const args = JSON.parse(process.argv[3]);
  const spec = alexnetSpec('theano-alexnet');
  const group =
    args.worldSize > 1
      ? await joinGroup({
          rank: args.rank,
          worldSize: args.worldSize,
          coordinator: args.coordinator,
          onFatal: (e) => {
            console.error(e.message);
            process.exit(1);
          },
        })
      : undefined;
  const engine = await trainer.createEngine('onnxruntime', spec, initParameters(spec, 1), {
    optimizer: trainer.DEFAULT_OPTIMIZER,
    batchSize: args.batch,
    seed: 1,
    intraOpThreads: args.threads,
  });
  const pixels = 3 * spec.inputSize * spec.inputSize;
  const data = new Float32Array(args.batch * pixels);
  for (let i = 0; i < data.length; i++) data[i] = ((i * 2654435761) % 255) - 127;
  const labels = Int32Array.from({ length: args.batch }, (_, i) => (i * 37 + args.rank) % spec.numClasses);
  const batch = { data, labels, size: args.batch };
  let syncSeconds = 0;
  const stepOnce = async () => {
    await engine.step(batch, 0.001);
    if (group) {
      const t = process.hrtime.bigint();
      engine.setWeights(await group.averageWeights(engine.getWeights()));
      syncSeconds += Number(process.hrtime.bigint() - t) / 1e9;
    }
  };
  await stepOnce(); // warm-up: session planning for this batch size
  syncSeconds = 0;
  if (group) await group.barrier();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < args.steps; i++) await stepOnce();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (group) await group.close();
  await engine.dispose();
  if (args.rank === 0) process.stdout.write(`${JSON.stringify({ stepSeconds: seconds / args.steps, syncSeconds: syncSeconds / args.steps })}\n`);
  process.exit(0);
}

// ------------------------------------------------------------------ parent
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function runRanks(mode, worldSize, extra) {
  const outs = await Promise.all(
    [...Array(worldSize).keys()].map(
      (rank) =>
        new Promise((resolve, reject) => {
          const child = spawn(process.execPath, [SELF, mode, JSON.stringify({ ...extra, rank, worldSize })], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          child.stdout.on('data', (d) => (out += d));
          child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${mode} rank ${rank} exited with ${code}`))));
        }),
    ),
  );
  return JSON.parse(outs[0]);
}

const spec = alexnetSpec('theano-alexnet');
const elements = parameterList(spec).reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
const bytes = elements * 4;
console.log(
  `allreduce: theano-alexnet, ${(elements / 1e6).toFixed(1)}M parameters = ${(bytes / 1e6).toFixed(0)} MB fp32; ${cpus().length} cores; ${ROUNDS} timed averages after 1 warm-up, median`,
);

// The step time first, on a quiet machine, so both numbers come from the same run.
let stepSeconds;
let stepSource;
const STEP_BATCH = Number(process.env.BENCH_STEP_BATCH ?? 128);
let stepMeasured = false;
if (process.env.BENCH_STEP !== '0') {
  try {
    const r = await runRanks('--train-child', 1, { batch: STEP_BATCH, steps: 2, threads: cpus().length });
    stepSeconds = r.stepSeconds;
    stepMeasured = true;
    stepSource = `measured now: onnxruntime engine, batch ${STEP_BATCH}, ${cpus().length} threads, mean of 2 steps after 1 warm-up`;
  } catch (err) {
    console.log(`(the onnxruntime step could not be measured: ${err.message})`);
  }
}
if (!stepMeasured) {
  stepSeconds = 5;
  stepSource = 'not measured: 5 s, the figure given for a batch-128 AlexNet step on 2 cores (DESIGN §2: ~20-25 img/s)';
}
console.log(`training step: ${stepSeconds.toFixed(2)} s (${stepSource})`);

const rows = [];
const baselines = {};
const dir = mkdtempSync(join(tmpdir(), 'bench-allreduce-'));
try {
  for (const transport of ['tcp', 'ipc']) {
    const endpoint = transport === 'tcp' ? `tcp://127.0.0.1:${await freePort()}` : `ipc://${dir}/raw`;
    const raw = await runRanks('--raw', 2, { endpoint, bytes });
    console.log(
      `baseline: raw zeromq push -> pull of ${(bytes / 1e6).toFixed(0)} MB over ${transport}, 1 MiB messages: ${raw.median.toFixed(3)} s = ${(bytes / raw.median / 1e9).toFixed(2)} GB/s (one direction)`,
    );
    baselines[transport] = raw.median;
  }
  for (const [worldSize, transport, transfer] of [
    [2, 'tcp', 'fp32'],
    [2, 'ipc', 'fp32'],
    [2, 'tcp', 'fp16'],
    [4, 'tcp', 'fp32'],
    [4, 'tcp', 'fp16'],
  ]) {
    const coordinator = transport === 'tcp' ? `tcp://127.0.0.1:${await freePort()}` : `ipc://${dir}/c${rows.length}`;
    const r = await runRanks('--child', worldSize, { coordinator, transfer });
    const row = {
      workers: worldSize,
      transport,
      wire: transfer,
      seconds: r.median.toFixed(3),
      'model GB/s': (bytes / r.median / 1e9).toFixed(2),
      'per-rank traffic GB/s': ((((2 * (worldSize - 1)) / worldSize) * (transfer === 'fp16' ? bytes / 2 : bytes)) / r.median / 1e9).toFixed(2),
      'x raw one-way': (r.median / baselines[transport]).toFixed(2),
      'of a step': `${((100 * r.median) / stepSeconds).toFixed(1)}%`,
      target: r.median / stepSeconds <= TARGET_FRACTION ? 'met' : 'MISSED',
      'bit-identical': r.identical ? 'yes' : 'NO',
      'max |err| vs exact mean': r.maxAbsError.toExponential(1),
      'max |w|': r.maxAbsWeight.toFixed(2),
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.table(rows);

if (stepMeasured) {
  const global = Number(process.env.BENCH_SCALING_BATCH ?? 32);
  const cores = cpus().length;
  const one = await runRanks('--train-child', 1, { batch: global, steps: 3, threads: cores });
  const two = await runRanks('--train-child', 2, {
    batch: global / 2,
    steps: 3,
    threads: threadsPerWorker(cores, 2),
    coordinator: `tcp://127.0.0.1:${await freePort()}`,
  });
  const table = [
    {
      setup: `1 worker x ${cores} threads, batch ${global}`,
      's/step': one.stepSeconds.toFixed(2),
      'sync s/step': '-',
      'img/s': (global / one.stepSeconds).toFixed(1),
    },
    {
      setup: `2 workers x ${threadsPerWorker(cores, 2)} thread, batch ${global / 2} each, sync_every=1`,
      's/step': two.stepSeconds.toFixed(2),
      'sync s/step': two.syncSeconds.toFixed(2),
      'img/s': (global / two.stepSeconds).toFixed(1),
    },
  ];
  console.table(table);
  console.log(`ratio (2 workers / 1 worker, img/s): ${(one.stepSeconds / two.stepSeconds).toFixed(2)}x`);
}
