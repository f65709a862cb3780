#!/usr/bin/env node
// A/B of two onnxruntime engine configurations on the same network, batch and data: both engines
// are built up front and alternate round by round (A, B, A, B, ...), so that load from other
// processes on this shared machine hits both alike. Each round runs one group of stepsPerRun
// steps per engine (as the trainer does); the figures are medians over the rounds of img/s (wall)
// and img per CPU-second (CPU time of all this process' threads: robust to other processes'
// load), and the B/A ratios of those medians and the median of the per-round B/A ratios.
//
// Run: npm run bench:ab -- '<A options JSON>' '<B options JSON>'   (builds first)
//   e.g. npm run bench:ab -- '{}' '{"lowering":{"nchwcBlock":0}}'
//   Options are createOrtEngine's (engines/onnxruntime/engine.ts): lowering, allowSpinning,
//   stepsPerRun, intraOpThreads, ... The spec is the demo's network by default.
// Environment: AB_SIZE (113) with AB_CLASSES (10) and AB_DROPOUT (0) for the spec; AB_BATCH (64);
//   AB_ROUNDS (7); AB_GROUPS (1 group of stepsPerRun steps per engine per round);
//   AB_ENV_A / AB_ENV_B ("NAME=value ..."): run each side in its own process with those variables
//   added to its environment (e.g. AB_ENV_B='MALLOC_MMAP_MAX_=0'), rounds still alternating;
//   AB_QUIET_CORES (1.3): also report the ratios over the rounds where both sides kept more cores busy;
//   AB_PROFILE=<dir>: afterwards, one onnxruntime profile per side, summarized by op type.
import { createRequire } from 'node:module';
import { mkdtempSync, readdirSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { summarizeProfile } from './lib/ort-profile.mjs';
const require = createRequire(import.meta.url);
const { alexnetSpec, initParameters } = require('../libs/model-alexnet/dist/index.js');
require('../libs/onnx-export/dist/index.js').loadOnnxRuntime(); // telemetry off before onnxruntime loads
const { createOrtEngine } = require('../libs/trainer-multigpu/dist/engines/onnxruntime/engine.js');
const { Rng } = require('../libs/core/dist/index.js');

const [aJson = '{}', bJson = '{}'] = process.argv.slice(2);
const [optsA, optsB] = aJson === '--serve' ? [{}, {}] : [JSON.parse(aJson), JSON.parse(bJson)];
const size = Number(process.env.AB_SIZE ?? 113);
const classes = Number(process.env.AB_CLASSES ?? (size === 227 ? 1000 : 10));
const dropout = Number(process.env.AB_DROPOUT ?? (size === 227 ? 0.5 : 0));
const batch = Number(process.env.AB_BATCH ?? 64);
const rounds = Number(process.env.AB_ROUNDS ?? 7);
const groups = Number(process.env.AB_GROUPS ?? 1);
const log = (s) => process.stdout.write(`${s}\n`);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const spec = alexnetSpec('theano-alexnet', { inputSize: size, numClasses: classes, dropout });
const weights = initParameters(spec, 1);
const rng = new Rng(7);

async function makeSide(name, opts) {
  const engine = await createOrtEngine(spec, weights, { batchSize: batch, ...opts });
  const perRun = engine.stepsPerRun;
  const data = new Float32Array(perRun * batch * 3 * size * size);
  for (let i = 0; i < data.length; i++) data[i] = 120 * (2 * rng.nextFloat() - 1);
  const labels = Int32Array.from({ length: perRun * batch }, () => rng.nextInt(classes));
  const group = { data, labels, size: batch, count: perRun };
  return { name, opts, engine, group, perRun, rate: [], perCpu: [], busy: [] };
}

/** One round of one side in this process: wall and CPU seconds of `groups` step groups. */
async function measureHere(side) {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let g = 0; g < groups; g++) await side.engine.stepGroup(side.group, 0.001);
  const cpu = process.cpuUsage(c0);
  return { seconds: (performance.now() - t0) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6, images: groups * side.perRun * batch };
}

async function timeGroups(side) {
  const { seconds, cpuSeconds, images } = side.child ? await side.child.round() : await measureHere(side);
  side.rate.push(images / seconds);
  side.perCpu.push(images / cpuSeconds);
  side.busy.push(cpuSeconds / seconds);
}

/**
 * A side in its own process with extra environment variables (AB_ENV_A / AB_ENV_B, e.g.
 * "MALLOC_MMAP_MAX_=0"): what an environment changes can only be measured in another process.
 * The child builds the same engine and data and runs one round per line it reads.
 */
async function makeChildSide(name, opts, envText) {
  const env = { ...process.env };
  for (const pair of envText.split(/\s+/).filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq < 1) throw new Error(`AB_ENV_${name}: expected NAME=value pairs, got ${pair}`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  delete env.AB_ENV_A;
  delete env.AB_ENV_B;
  delete env.AB_PROFILE;
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve', JSON.stringify(opts)], { env, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`side ${name}: its process ended`);
    return JSON.parse(value);
  };
  const ready = await next();
  return {
    name,
    opts: { ...opts, env: envText },
    perRun: ready.perRun,
    rate: [],
    perCpu: [],
    busy: [],
    child: {
      round: () => {
        child.stdin.write('round\n');
        return next();
      },
      stop: () => child.stdin.end(),
    },
    engine: { dispose: async () => child.stdin.end() },
  };
}

if (process.argv[2] === '--serve') {
  // Child side (makeChildSide): build, warm up, then one round per line read; JSON lines out.
  const side = await makeSide('child', JSON.parse(process.argv[3]));
  await side.engine.stepGroup(side.group, 0.001);
  await side.engine.stepGroup(side.group, 0.001);
  process.stdout.write(`${JSON.stringify({ perRun: side.perRun })}\n`);
  for await (const _line of createInterface({ input: process.stdin })) process.stdout.write(`${JSON.stringify(await measureHere(side))}\n`);
  await side.engine.dispose();
  process.exit(0);
}
const envA = process.env.AB_ENV_A ?? '',
  envB = process.env.AB_ENV_B ?? '';
log(
  `ab-train-step on ${cpus()[0]?.model}, ${availableParallelism()} cores; load average ${loadavg()
    .map((v) => v.toFixed(2))
    .join(' ')}`,
);
log(`theano-alexnet ${size}x${size}, ${classes} classes, dropout ${dropout}, batch ${batch}; ${rounds} rounds of ${groups} group(s) per side, alternating`);
log(`  A: ${JSON.stringify(optsA)}`);
log(`  B: ${JSON.stringify(optsB)}`);
if (envA || envB) log(`  each side in its own process; environment A: ${envA || '(as this one)'}, B: ${envB || '(as this one)'}`);
const a = envA || envB ? await makeChildSide('A', optsA, envA) : await makeSide('A', optsA);
const b = envA || envB ? await makeChildSide('B', optsB, envB) : await makeSide('B', optsB);
for (const side of [a, b])
  if (!side.child) {
    await side.engine.stepGroup(side.group, 0.001);
    await side.engine.stepGroup(side.group, 0.001);
  } // warm-up (children warm up themselves)
for (let r = 0; r < rounds; r++) {
  const order = r % 2 ? [b, a] : [a, b]; // alternate who goes first, too
  for (const side of order) await timeGroups(side);
  log(
    `  round ${r + 1}: A ${a.rate[r].toFixed(1)} img/s (${a.perCpu[r].toFixed(1)}/cpu-s, ${a.busy[r].toFixed(2)} cores)  B ${b.rate[r].toFixed(1)} img/s (${b.perCpu[r].toFixed(1)}/cpu-s, ${b.busy[r].toFixed(2)} cores)`,
  );
}
const ratios = (k) => median(a[k].map((v, i) => b[k][i] / v));
for (const s of [a, b])
  log(
    `${s.name}: ${median(s.rate).toFixed(2)} img/s, ${median(s.perCpu).toFixed(2)} img per CPU-second, ${median(s.busy).toFixed(2)} cores busy (medians of ${rounds})`,
  );
log(
  `B/A: wall ${(median(b.rate) / median(a.rate)).toFixed(3)}x (median of per-round ratios ${ratios('rate').toFixed(3)}x), per CPU-second ${(median(b.perCpu) / median(a.perCpu)).toFixed(3)}x (${ratios('perCpu').toFixed(3)}x); load average now ${loadavg()[0].toFixed(2)}`,
);
// Rounds where both sides kept more than AB_QUIET_CORES (1.3) cores busy: the machine was
// (nearly) ours then; on a shared machine the other rounds measure the neighbours as much as us.
const quietCores = Number(process.env.AB_QUIET_CORES ?? 1.3);
const quiet = a.busy.map((_v, i) => i).filter((i) => a.busy[i] > quietCores && b.busy[i] > quietCores);
if (quiet.length) {
  const q = (k) => median(quiet.map((i) => b[k][i] / a[k][i]));
  log(
    `B/A in the ${quiet.length} round(s) where both sides kept > ${quietCores} cores busy (${quiet.map((i) => i + 1).join(', ')}): wall ${q('rate').toFixed(3)}x, per CPU-second ${q('perCpu').toFixed(3)}x (medians of per-round ratios)`,
  );
} else log(`no round kept both sides above ${quietCores} cores busy: the machine was shared throughout`);
await a.engine.dispose();
await b.engine.dispose();

if (process.env.AB_PROFILE && !a.child) {
  const dir = mkdtempSync(join(process.env.AB_PROFILE === '1' ? tmpdir() : process.env.AB_PROFILE, 'ab-profile-'));
  for (const s of [a, b]) {
    const prefix = join(dir, s.name);
    const engine = await createOrtEngine(spec, weights, { batchSize: batch, ...s.opts, profilePrefix: prefix });
    for (let i = 0; i < 3; i++) await engine.stepGroup(s.group, 0.001);
    engine.endProfiling();
    await engine.dispose();
    const file = readdirSync(dir).find((f) => f.startsWith(s.name) && f.endsWith('.json'));
    const p = summarizeProfile(join(dir, file));
    log(`profile ${s.name} (${join(dir, file)}): run ${p.runMs.toFixed(0)} ms (${s.perRun} steps), kernel time ${p.kernelMs.toFixed(0)} ms`);
    for (const { op, ms, share } of p.ops.slice(0, 16)) log(`  ${op.padEnd(18)} ${ms.toFixed(1).padStart(8)} ms ${(100 * share).toFixed(1).padStart(5)}%`);
  }
}
