#!/usr/bin/env node
// Training throughput of the onnxruntime engine on full AlexNet (theano-alexnet, 1000 classes,
// 227x227), against baselines measured in the same run:
//   - the engine's own inference (its evaluation graph: forward + loss) at the same batch: the
//     ceiling; a training step costs ~3x a forward pass, so train/eval ≈ 0.25-0.35 is the ideal;
//   - the same engine at one step per onnxruntime run (the trainer runs stepsPerRun steps per
//     run, an ONNX Loop): what the Loop saves, onnxruntime-node's copy of 488 MB of state per run;
//   - the same engine with DESIGN §5's rules as first written (dX by ConvTranspose, dW by a
//     dilated Conv): what the lowering work bought;
//   - Debian's PyTorch (python3-torch: same net, SGD momentum + decay, same threads) when
//     `python3 -c "import torch"` works; otherwise the bench says how to install it. It runs with
//     OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset for its command alone (this workplace sets them on
//     some CPUs, and they slow OpenBLAS, which runs PyTorch's fc layers) and prints the BLAS
//     library it actually loaded: Debian's libblas.so.3 is netlib's reference BLAS unless
//     libopenblas0 is installed, which users who train on the CPU install.
// Also the demo's network (113x113 input, 10 classes, no dropout) at BENCH_SMALL_BATCH (64), ours
// and PyTorch's, and at the end issue 14's targets, each marked met or not on this run's figures.
// Measurements alternate round by round (ours, baseline, ceiling, PyTorch, ours, ...) and each
// figure is the median of its rounds, so that load from other processes hits all sides alike.
// Then: the step's GFLOPS against onnxruntime's SGEMM peak on this machine (the ceiling no
// lowering can pass without doing fewer multiply-adds), a per-op kernel-time profile of one
// training step (onnxruntime's profiler), and peak RSS at batch 128 with RSS at an early and a
// late iteration (they must not grow: weights and velocities live in one set of
// preallocated buffers, fed to each run and filled in place as its outputs).
//
// Run: npm run bench:train (builds first). Options (environment):
//   BENCH_BATCH (default 32), BENCH_ROUNDS (3), BENCH_STEPS (2 steps per round per side; ours
//   runs one group of its stepsPerRun steps per round, as the trainer does),
//   BENCH_THREADS (all cores), BENCH_RSS_ITERS ("16,32": after the second run of 8 steps, when
//   onnxruntime's arena has settled, and two runs later; "16,104" for the long memory check),
//   BENCH_BIG_BATCH (128), BENCH_TORCH=0 to skip PyTorch, BENCH_BASELINE=0 to skip the DESIGN-rules engine.
import { createRequire } from 'node:module';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { summarizeProfile } from './lib/ort-profile.mjs';
const require = createRequire(import.meta.url);
const { alexnetSpec, initParameters, trainingMacs } = require('../libs/model-alexnet/dist/index.js');
const { GraphBuilder, encodeModel, loadOnnxRuntime } = require('../libs/onnx-export/dist/index.js');
const ort = loadOnnxRuntime(); // telemetry off before onnxruntime loads (libs/onnx-export/src/onnxruntime.ts)
const { createOrtEngine } = require('../libs/trainer-multigpu/dist/engines/onnxruntime/engine.js');
const { describeAllocatorEnv, Rng, TRAINING_ALLOCATOR_ENV } = require('../libs/core/dist/index.js');

const batch = Number(process.env.BENCH_BATCH ?? 32);
const bigBatch = Number(process.env.BENCH_BIG_BATCH ?? 128);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const steps = Number(process.env.BENCH_STEPS ?? 2);
const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
const [rssEarly, rssLate] = (process.env.BENCH_RSS_ITERS ?? '16,32').split(',').map(Number);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const mb = (bytes) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const log = (s) => process.stdout.write(`${s}\n`);

const spec = alexnetSpec('theano-alexnet');
const weights = initParameters(spec, 1);
function makeBatch(size, seed, side = 227, classes = 1000) {
  const rng = new Rng(seed);
  const data = new Float32Array(size * 3 * side * side);
  for (let i = 0; i < data.length; i++) data[i] = 120 * (2 * rng.nextFloat() - 1); // mean-subtracted pixel range
  return { data, labels: Int32Array.from({ length: size }, () => rng.nextInt(classes)), size };
}
// The demo's and small-data recipe's network: theano-alexnet at a 113x113 input, no dropout, 10 classes.
const smallBatch = Number(process.env.BENCH_SMALL_BATCH ?? 64);
const smallSpec = alexnetSpec('theano-alexnet', { inputSize: 113, numClasses: 10, dropout: 0 });
const smallData = makeBatch(smallBatch, 3, 113, 10);
const torchConfig = {
  big: { size: 227, batch, classes: 1000, dropout: 0.5 },
  bigBatch: { size: 227, batch: bigBatch, classes: 1000, dropout: 0.5 },
  small: { size: 113, batch: smallBatch, classes: 10, dropout: 0 },
};
const data = makeBatch(batch, 1);
/** `count` copies of a batch stacked, as the trainer hands a group of steps to stepGroup. */
function stack(b, count) {
  const group = { data: new Float32Array(count * b.data.length), labels: new Int32Array(count * b.size), size: b.size, count };
  for (let k = 0; k < count; k++) {
    group.data.set(b.data, k * b.data.length);
    group.labels.set(b.labels, k * b.size);
  }
  return group;
}
const lr = 0.01;

/**
 * Debian's PyTorch as a child process that runs N training steps per request, for any of the
 * configurations measured here (input size, batch, classes, dropout; a net and an SGD optimizer
 * per configuration). It reports first what it runs on: PyTorch's build (`torch.__config__`),
 * the BLAS library actually mapped into the process (Debian's python3-torch links
 * libblas.so.3: netlib's reference BLAS unless OpenBLAS is installed) and threadpoolctl's view
 * when that is installed.
 */
const TORCH_SCRIPT = String.raw`
import sys, time, json, os, torch, torch.nn as nn
threads = int(sys.argv[1])
torch.set_num_threads(threads)
torch.manual_seed(0)
def make_net(size, classes, dropout):
  feats = nn.Sequential(
    nn.Conv2d(3, 96, 11, 4), nn.ReLU(), nn.MaxPool2d(3, 2), nn.LocalResponseNorm(5, 5e-4, 0.75, 2),
    nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.LocalResponseNorm(5, 5e-4, 0.75, 2),
    nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
    nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
    nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten())
  flat = feats(torch.zeros(1, 3, size, size)).shape[1]
  drop = lambda: [nn.Dropout(dropout)] if dropout > 0 else []
  return nn.Sequential(feats, nn.Linear(flat, 4096), nn.ReLU(), *drop(), nn.Linear(4096, 4096), nn.ReLU(), *drop(), nn.Linear(4096, classes))
blas = sorted({l.split()[-1] for l in open('/proc/self/maps') if 'blas' in l.lower() and len(l.split()) >= 6})
try:
  import threadpoolctl
  pools = [{k: p.get(k) for k in ('internal_api', 'version', 'architecture', 'num_threads', 'filepath')} for p in threadpoolctl.threadpool_info()]
except Exception as e:
  pools = 'threadpoolctl not installed (Debian: python3-threadpoolctl)'
cfg = torch.__config__.show()
capability = [l.strip() for l in cfg.splitlines() if 'CPU capability' in l or 'MKL-DNN' in l or 'oneDNN' in l]
blas_info = [p for p in cfg.replace(',', '\n').splitlines() if 'BLAS_INFO' in p]
env = {k: os.environ.get(k, '(unset)') for k in ('OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE', 'OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS')}
print(json.dumps({"ready": torch.__version__, "threads": torch.get_num_threads(), "blas": blas, "threadpools": pools, "build": capability + [b.strip() for b in blas_info], "env": env}), flush=True)
runs = {}
def setup(size, batch, classes, dropout):
  key = (size, batch, classes, dropout)
  if key not in runs:
    net = make_net(size, classes, dropout)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, size, size) * 60
    y = torch.randint(0, classes, (batch,))
    lossf = nn.CrossEntropyLoss()
    def step():
      opt.zero_grad(); loss = lossf(net(x), y); loss.backward(); opt.step()
    step()  # warm-up: allocations, oneDNN primitive creation
    runs[key] = step
  return runs[key]
for line in sys.stdin:
  r = json.loads(line)
  step = setup(r["size"], r["batch"], r["classes"], r["dropout"])
  t0 = time.perf_counter(); c0 = time.process_time()
  for _ in range(r["steps"]): step()
  print(json.dumps({"seconds": time.perf_counter() - t0, "cpuSeconds": time.process_time() - c0}), flush=True)
`;

function findTorchPython() {
  for (const py of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(py, ['-c', 'import torch'], { stdio: 'ignore' });
    if (r.status === 0) return py;
  }
  return undefined;
}

/**
 * The environment PyTorch runs with: this process's, less the variables this workplace sets on
 * some CPUs (OPENBLAS_CORETYPE pins OpenBLAS to older kernels, OPENBLAS_L2_SIZE mis-sizes its
 * blocking): unset for PyTorch's command alone, as its users would run it.
 */
function torchEnv() {
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  // Our training allocator settings (core's allocator-env), when this bench was started with
  // them, are ours: PyTorch runs with glibc's defaults, as its users run it.
  for (const name of Object.keys(TRAINING_ALLOCATOR_ENV)) delete env[name];
  return env;
}

async function startTorch(python) {
  const child = spawn(python, ['-c', TORCH_SCRIPT, String(threads)], { stdio: ['pipe', 'pipe', 'inherit'], env: torchEnv() });
  const lines = [];
  let waiting;
  let buffered = '';
  child.stdout.on('data', (chunk) => {
    buffered += chunk;
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = JSON.parse(buffered.slice(0, nl));
      buffered = buffered.slice(nl + 1);
      if (waiting) {
        const w = waiting;
        waiting = undefined;
        w(line);
      } else lines.push(line);
    }
  });
  const next = () =>
    lines.length
      ? Promise.resolve(lines.shift())
      : new Promise((r) => {
          waiting = r;
        });
  const ready = await next();
  return {
    version: ready.ready,
    info: ready,
    /** Time `steps` steps of one configuration ({ size, batch, classes, dropout }). */
    async run(config, steps) {
      child.stdin.write(`${JSON.stringify({ ...config, steps })}\n`);
      return next();
    },
    stop() {
      child.stdin.end();
    },
  };
}

/** Wall and CPU seconds (all of this process' threads) of n calls. */
async function timeSteps(fn, n) {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await fn();
  const cpu = process.cpuUsage(c0);
  return { seconds: (performance.now() - t0) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

/**
 * This machine's compute ceiling as onnxruntime sees it: GFLOPS of a large square MatMul (MLAS'
 * SGEMM, the kernel most of a step runs on) with the same threads, best of `reps`.
 */
async function gemmPeakGflops(reps = 3, size = 2048) {
  const b = new GraphBuilder('gemm-peak');
  b.input('a', 'float32', [size, size]);
  b.input('b', 'float32', [size, size]);
  b.output(b.op('MatMul', ['a', 'b']), 'float32', [size, size]);
  const session = await ort.InferenceSession.create(encodeModel(b.model()), { intraOpNumThreads: threads });
  const feeds = {
    a: new ort.Tensor('float32', new Float32Array(size * size).fill(0.5), [size, size]),
    b: new ort.Tensor('float32', new Float32Array(size * size).fill(0.25), [size, size]),
  };
  let best = Infinity;
  await session.run(feeds);
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await session.run(feeds);
    best = Math.min(best, performance.now() - t0);
  }
  await session.release();
  return (2 * size ** 3) / (best / 1000) / 1e9;
}

const tmp = mkdtempSync(join(tmpdir(), 'bench-train-'));
/** The targets of issue 14, checked on this run's medians. */
const targets = [];
const target = (what, value, goal, unit = 'x') =>
  targets.push(`  ${value >= goal ? 'met    ' : 'NOT met'} ${what}: ${value.toFixed(2)}${unit} (target >= ${goal}${unit})`);
try {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const isa = ['avx2', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'amx_tile']
    .filter((f) => new RegExp(`\\b${f}\\b`).test(readFileSync('/proc/cpuinfo', 'utf8')))
    .join(' ');
  log(
    `bench:train on ${cpu}, ${availableParallelism()} cores (${isa}); load average ${loadavg()
      .map((v) => v.toFixed(2))
      .join(' ')}`,
  );
  log(
    `our engine runs in this process, whose allocator settings are ${describeAllocatorEnv(process.env)} (docs/speed.md: start the bench with TRAINING_ALLOCATOR_ENV's values to measure them; PyTorch runs without them)`,
  );
  log(
    `theano-alexnet 227x227, 1000 classes, batch ${batch}; and 113x113, 10 classes, no dropout, batch ${smallBatch}; ${threads} intra-op threads, ${rounds} rounds x ${steps} steps per side`,
  );
  // The peak before any engine exists and again after the rounds; the better of the two
  // (this machine is a VM whose host is shared: its speed drifts by up to ~1.5x over minutes).
  const peakBefore = await gemmPeakGflops();
  const ours = await createOrtEngine(spec, weights, { intraOpThreads: threads, batchSize: Math.max(batch, bigBatch) });
  const small = await createOrtEngine(smallSpec, initParameters(smallSpec, 1), { intraOpThreads: threads, batchSize: smallBatch });
  const baseline =
    process.env.BENCH_BASELINE === '0'
      ? undefined
      : await createOrtEngine(spec, weights, {
          intraOpThreads: threads,
          lowering: { convInputGrad: 'convTranspose', convWeightGrad: 'dilatedConv', nchwcBlock: 0 },
        });
  const python = process.env.BENCH_TORCH === '0' ? undefined : findTorchPython();
  const torch = python ? await startTorch(python) : undefined;
  if (!torch)
    log(
      process.env.BENCH_TORCH === '0'
        ? 'PyTorch: skipped (BENCH_TORCH=0)'
        : 'PyTorch: not measured: no python3 with torch here (Debian: apt-get install -y python3-torch)',
    );
  else {
    const i = torch.info;
    log(`PyTorch ${i.ready} (${python}), ${i.threads} threads; ${i.build.join('; ')}`);
    log(`  BLAS mapped into the process: ${i.blas.join(', ') || 'none found in /proc/self/maps'}`);
    if (i.blas.some((b) => /\/blas\/libblas\.so/.test(b)))
      log("  (that is netlib's reference BLAS: Debian's default for libblas.so.3; apt-get install libopenblas0-pthread gives PyTorch's fc layers OpenBLAS)");
    log(`  threadpools: ${typeof i.threadpools === 'string' ? i.threadpools : JSON.stringify(i.threadpools)}`);
    log(
      `  its environment: ${Object.entries(i.env)
        .map(([k, v]) => `${k}=${v}`)
        .join(
          ' ',
        )} (OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset for its command alone; here they are ${process.env.OPENBLAS_CORETYPE ?? '(unset)'}/${process.env.OPENBLAS_L2_SIZE ?? '(unset)'})`,
    );
  }

  // Ours as the trainer runs it: stepsPerRun steps per onnxruntime run (stepGroup, an ONNX Loop).
  const perRun = ours.stepsPerRun;
  const group = stack(data, perRun);
  const smallGroup = stack(smallData, small.stepsPerRun);
  // Warm-up: one step / evaluation each (memory planning, thread pools).
  await ours.stepGroup(group, lr);
  await ours.step(data, lr);
  await ours.evaluate(data);
  await small.stepGroup(smallGroup, lr);
  if (baseline) await baseline.step(data, lr);

  // img/s (wall) and img per CPU-second (CPU time of all threads: robust to load from other
  // processes, which steals wall time but not CPU time; spinning thread pools inflate it a little).
  // Cores busy = CPU-seconds per wall second.
  const keys = ['ours', 'single', 'eval', 'baseline', 'torch', 'small', 'torchSmall'];
  const rates = Object.fromEntries(keys.map((k) => [k, []]));
  const perCpu = Object.fromEntries(keys.map((k) => [k, []]));
  const busy = Object.fromEntries(keys.map((k) => [k, []]));
  const record = (key, t, n = steps, size = batch) => {
    rates[key].push((size * n) / t.seconds);
    perCpu[key].push((size * n) / t.cpuSeconds);
    busy[key].push(t.cpuSeconds / t.seconds);
  };
  for (let r = 0; r < rounds; r++) {
    record('ours', await timeSteps(() => ours.stepGroup(group, lr), 1), perRun);
    record('single', await timeSteps(() => ours.step(data, lr), steps));
    if (baseline) record('baseline', await timeSteps(() => baseline.step(data, lr), steps));
    record('eval', await timeSteps(() => ours.evaluate(data), steps));
    if (torch) record('torch', await torch.run(torchConfig.big, steps));
    record('small', await timeSteps(() => small.stepGroup(smallGroup, lr), 2), 2 * small.stepsPerRun, smallBatch);
    if (torch) record('torchSmall', await torch.run(torchConfig.small, 2 * small.stepsPerRun), 2 * small.stepsPerRun, smallBatch);
    const show = (k) => `${rates[k][r].toFixed(2)} img/s (${perCpu[k][r].toFixed(2)}/cpu-s, ${busy[k][r].toFixed(2)} cores)`;
    log(
      `  round ${r + 1}, 227 batch ${batch}: ours ${show('ours')}, one step per run ${show('single')}${baseline ? `, DESIGN rules ${show('baseline')}` : ''}, inference ${show('eval')}${torch ? `, PyTorch ${show('torch')}` : ''}`,
    );
    log(`  round ${r + 1}, 113 batch ${smallBatch}: ours ${show('small')}${torch ? `, PyTorch ${show('torchSmall')}` : ''}`);
  }
  await baseline?.dispose();
  await small.dispose();
  const m = Object.fromEntries(Object.entries(rates).map(([k, v]) => [k, v.length ? median(v) : undefined]));
  const c = Object.fromEntries(Object.entries(perCpu).map(([k, v]) => [k, v.length ? median(v) : undefined]));
  const b = Object.fromEntries(Object.entries(busy).map(([k, v]) => [k, v.length ? median(v) : undefined]));
  const ratio = (k, of = 'ours') => `${(m[of] / m[k]).toFixed(2)}x wall, ${(c[of] / c[k]).toFixed(2)}x per CPU-second`;
  log(
    `training, 227 batch ${batch}: ${m.ours.toFixed(2)} img/s, ${c.ours.toFixed(2)} img per CPU-second, ${b.ours.toFixed(2)} cores busy (medians of ${rounds})`,
  );
  log(`  vs the engine's inference (ceiling) ${m.eval.toFixed(2)} img/s: ${ratio('eval')}`);
  log(
    `  vs the same engine at one step per run ${m.single.toFixed(2)} img/s: ${ratio('single')} (what ${perRun} steps per run save: onnxruntime-node's copy of every output, 488 MB of state, after each run)`,
  );
  if (m.baseline) log(`  vs DESIGN §5 rules as first written ${m.baseline.toFixed(2)} img/s: ${ratio('baseline')}`);
  if (m.torch) log(`  vs Debian PyTorch ${torch.version} ${m.torch.toFixed(2)} img/s (${b.torch.toFixed(2)} cores busy): ${ratio('torch')}`);
  log(`training, 113 batch ${smallBatch}: ${m.small.toFixed(2)} img/s, ${c.small.toFixed(2)} img per CPU-second, ${b.small.toFixed(2)} cores busy`);
  if (m.torchSmall)
    log(`  vs Debian PyTorch ${torch.version} ${m.torchSmall.toFixed(2)} img/s (${b.torchSmall.toFixed(2)} cores busy): ${ratio('torchSmall', 'small')}`);
  // How close to the hardware: a step's multiply-adds against the machine's SGEMM peak.
  const peak = Math.max(peakBefore, await gemmPeakGflops());
  const stepGflopPerImage = (2 * trainingMacs(spec)) / 1e9;
  const peakShare = (100 * m.ours * stepGflopPerImage) / peak;
  log(
    `  compute: a training step is ${stepGflopPerImage.toFixed(2)} GFLOP per image (forward + dX + dW of conv/fc); ours runs at ${(m.ours * stepGflopPerImage).toFixed(1)} GFLOPS ` +
      `= ${peakShare.toFixed(0)}% of onnxruntime's SGEMM peak here (${peak.toFixed(1)} GFLOPS, ${threads} threads, best of before and after the rounds); ` +
      `at 100% of that peak a step could reach ${(peak / stepGflopPerImage).toFixed(1)} img/s`,
  );
  const load = loadavg()[0];
  log(
    `  (1-minute load average ${load.toFixed(1)} on ${availableParallelism()} cores: above the core count, other processes share these cores and wall-clock figures drop)`,
  );
  target(`SGEMM peak share, 227 batch ${batch}`, peakShare, 75, '%');
  target(`cores busy, 227 batch ${batch}`, b.ours, 1.85, '');
  if (m.torch) {
    target(`vs PyTorch wall, 227 batch ${batch}`, m.ours / m.torch, 1.5);
    target(`vs PyTorch per CPU-second, 227 batch ${batch}`, c.ours / c.torch, 1.5);
  }
  if (m.torchSmall) {
    target(`vs PyTorch wall, 113 batch ${smallBatch}`, m.small / m.torchSmall, 1.5);
    target(`vs PyTorch per CPU-second, 113 batch ${smallBatch}`, c.small / c.torchSmall, 1.5);
  }

  // Batch 128, in groups of stepsPerRun steps as the trainer runs it: throughput, peak RSS, and
  // RSS early vs late (no growth). RSS is read after each run: at iterations perRun, 2·perRun, …
  const bigGroup = stack(makeBatch(bigBatch, 2), perRun);
  const rss = [];
  let bigSeconds = 0,
    bigCpuSeconds = 0,
    bigSteps = 0;
  const runs = Math.ceil(rssLate / perRun);
  const torchBig = [];
  for (let i = 1; i <= runs; i++) {
    const t = await timeSteps(() => ours.stepGroup(bigGroup, lr), 1);
    if (i > 1) {
      bigSeconds += t.seconds;
      bigCpuSeconds += t.cpuSeconds;
      bigSteps += perRun;
    } // the first run plans memory for the new shape
    rss[i * perRun] = process.memoryUsage().rss;
    if (torch && i % 2 === 0) torchBig.push(await torch.run(torchConfig.bigBatch, 2)); // interleaved with ours, 2 steps a time
  }
  torch?.stop();
  const at = (iteration) => Math.ceil(iteration / perRun) * perRun;
  const [early, late] = [at(rssEarly), at(rssLate)];
  const bigRate = (bigBatch * bigSteps) / bigSeconds,
    bigPerCpu = (bigBatch * bigSteps) / bigCpuSeconds;
  log(
    `training, 227 batch ${bigBatch}: ${bigRate.toFixed(2)} img/s, ${bigPerCpu.toFixed(2)} img per CPU-second, ${(bigCpuSeconds / bigSeconds).toFixed(2)} cores busy over ${bigSteps} steps; vs batch ${batch}: ${(bigRate / m.ours).toFixed(2)}x wall, ${(bigPerCpu / c.ours).toFixed(2)}x per CPU-second`,
  );
  if (torchBig.length) {
    const sum = (k) => torchBig.reduce((a, t) => a + t[k], 0);
    const tRate = (bigBatch * 2 * torchBig.length) / sum('seconds'),
      tPerCpu = (bigBatch * 2 * torchBig.length) / sum('cpuSeconds');
    log(
      `  vs Debian PyTorch ${torch.version} ${tRate.toFixed(2)} img/s, ${tPerCpu.toFixed(2)} img per CPU-second (${2 * torchBig.length} steps, interleaved): ${(bigRate / tRate).toFixed(2)}x wall, ${(bigPerCpu / tPerCpu).toFixed(2)}x per CPU-second`,
    );
    target(`vs PyTorch wall, 227 batch ${bigBatch}`, bigRate / tRate, 1.5);
    target(`vs PyTorch per CPU-second, 227 batch ${bigBatch}`, bigPerCpu / tPerCpu, 1.5);
  }
  log(
    `memory, batch ${bigBatch}: RSS at iteration ${early} ${mb(rss[early])}, at iteration ${late} ${mb(rss[late])} (growth ${mb(rss[late] - rss[early])}); peak RSS of the process ${mb(process.resourceUsage().maxRSS * 1024)}`,
  );
  await ours.dispose();

  // Profile of one training step at the bench batch.
  const prefix = join(tmp, 'train');
  const profiled = await createOrtEngine(spec, weights, { intraOpThreads: threads, profilePrefix: prefix });
  for (let i = 0; i < 3; i++) await profiled.step(data, lr); // the last one is summarized: steady state
  profiled.endProfiling();
  await profiled.dispose();
  const file = readdirSync(tmp).find((f) => f.startsWith('train') && f.endsWith('.json'));
  const profile = summarizeProfile(join(tmp, file));
  log(`profile of one step at batch ${batch}: ${profile.runMs.toFixed(0)} ms, kernel time ${profile.kernelMs.toFixed(0)} ms by op type:`);
  for (const { op, ms, share } of profile.ops.slice(0, 14)) log(`  ${op.padEnd(16)} ${ms.toFixed(0).padStart(7)} ms  ${(100 * share).toFixed(1).padStart(5)}%`);
  log(`targets (issue 14), on ${cpus()[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} cores:`);
  for (const line of targets) log(line);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
