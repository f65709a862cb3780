#!/usr/bin/env node
// Time to accuracy (npm run bench:tta): top-1 on real images after each epoch, and when.
//
//   npm run bench:tta -- [--work <dir>] [--epochs <n>] [--no-baseline] [--pytorch] [--source <dir>]
//
// 1. Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) → JPEG class folders
//    at 128x128: the first 1,000 training images of each class and the first 200 test images of
//    each class, in file order (bench/tta/fashion-mnist.mjs), plus a Caffe-style test list.
// 2. `alexnet-stream prepare` (the project's CLI): shards of 64, mean.npy.
// 3. `alexnet-stream train` with the small-data recipe (libs/trainer-multigpu/config/small-data.yaml:
//    theano-alexnet at 113 input), validating on the 2,000 test images after every epoch.
// 4. The same-run baseline: the seed's/demo's recipe (demo.yaml: lr 0.001, init kaiming, raw
//    pixels − mean, no warm-up, lr/10 after 2/3 of the epochs) for the same number of epochs,
//    i.e. the same images; its wall time is printed beside the recipe's.
// 5. With --pytorch: Debian's PyTorch (python3-torch) with a plain modern recipe on the same JPEGs
//    and network (bench/tta/torch_recipe.py), OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset for its
//    command alone (this workplace sets them on some CPUs, and they slow OpenBLAS).
//
// Everything is written under --work (default ./tta-out): fashion-mnist/, data/ (both kept and
// reused when complete), runs/small-data/ and runs/seed-demo/ (checkpoints; replaced on every run). Prints per epoch the
// top-1 accuracy and the seconds since the process started and since training started, the img/s
// of each run, the load average before and after, and the CPU model; then the ratio of the
// baseline's time to the recipe's to reach the baseline's final accuracy.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { convertFashionMnist, DEFAULT_SOURCE } from './tta/fashion-mnist.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(root, 'apps/cli/bin/alexnet-stream.js');
const { describeAllocatorEnv, withTrainingAllocator } = createRequire(import.meta.url)(join(root, 'libs/core/dist/index.js'));
const RECIPE = join(root, 'libs/trainer-multigpu/config/small-data.yaml');
const DEMO = join(root, 'libs/trainer-multigpu/config/demo.yaml');

function parseArgs(argv) {
  const opts = { work: join(root, 'tta-out'), epochs: undefined, baseline: true, pytorch: false, source: DEFAULT_SOURCE };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--work') opts.work = resolve(value());
    else if (a === '--epochs') {
      opts.epochs = Number(value());
      if (!Number.isInteger(opts.epochs) || opts.epochs < 1) fail('--epochs: expected a positive integer');
    } else if (a === '--no-baseline') opts.baseline = false;
    else if (a === '--pytorch') opts.pytorch = true;
    else if (a === '--source') opts.source = value();
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: npm run bench:tta -- [--work <dir>] [--epochs <n>] [--no-baseline] [--pytorch] [--source <dir>]\n');
      process.exit(0);
    } else fail(`unknown option ${a}`);
  }
  return opts;
}

function fail(message) {
  process.stderr.write(`bench:tta: ${message}\n`);
  process.exit(2);
}

const log = (m) => process.stderr.write(`${m}\n`);
const cpuModel = () => os.cpus()[0]?.model ?? 'unknown CPU';
const load = () =>
  os
    .loadavg()
    .map((v) => v.toFixed(2))
    .join(' ');

/** The recipe file's n_epochs (a plain `n_epochs: N` line). */
function configEpochs(path) {
  const m = /^n_epochs:\s*(\d+)/m.exec(readFileSync(path, 'utf8'));
  return m ? Number(m[1]) : undefined;
}

/** Run a command, timestamping its stderr lines; `onLine(line, seconds)` sees each. Resolves with stdout. */
function run(command, args, { env = process.env, onLine } = {}) {
  return new Promise((resolvePromise, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let pending = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      pending += d;
      let nl;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        onLine?.(line, (performance.now() - started) / 1000);
      }
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (pending) onLine?.(pending, (performance.now() - started) / 1000);
      if (code === 0) resolvePromise({ stdout, seconds: (performance.now() - started) / 1000 });
      else reject(new Error(`${command} ${args.slice(0, 2).join(' ')} … exited with ${code}`));
    });
  });
}

/** Train with the project's CLI; per epoch: top-1, seconds since the process started and since training started. */
/**
 * The training allocator settings (core's allocator-env.ts, docs/speed.md "What a run costs
 * besides its steps"), given to the train commands this bench starts (both recipes alike), as
 * `npm run demo` and multi-worker runs do; a value already in the environment is kept, and
 * BENCH_MALLOC=0 leaves glibc's defaults.
 */
const trainEnv = () => (process.env.BENCH_MALLOC === '0' ? { ...process.env } : withTrainingAllocator(process.env));

async function trainRun(name, dir, config, extraArgs, workDir) {
  const weightsDir = join(workDir, 'runs', dir);
  rmSync(weightsDir, { recursive: true, force: true }); // this bench's own output of an earlier run
  const epochs = [];
  let trainingStart;
  const rates = [];
  const env = trainEnv();
  const mallocText = describeAllocatorEnv(env);
  log(`\n== ${name}: ${mallocText} alexnet-stream train --config ${config.replace(`${root}/`, '')} ${extraArgs.join(' ')}`);
  const { stdout, seconds } = await run(
    process.execPath,
    [CLI, 'train', '--config', config, '--data', join(workDir, 'data'), '--weights-dir', weightsDir, ...extraArgs],
    {
      env,
      onLine: (line, t) => {
        if (/: \d+ epochs, \d+ iterations per epoch; starting at/.test(line)) trainingStart = t;
        const it = / ([\d.]+) img\/s, waited/.exec(line);
        if (it) rates.push(Number(it[1]));
        const v = /epoch (\d+) validation: top-1 error ([\d.]+)%/.exec(line);
        if (v) {
          const e = { epoch: Number(v[1]), top1: 1 - Number(v[2]) / 100, seconds: t, trainingSeconds: t - (trainingStart ?? 0) };
          epochs.push(e);
          log(
            `${name}: epoch ${e.epoch}: top-1 ${(100 * e.top1).toFixed(2)}% at ${e.seconds.toFixed(0)} s (${e.trainingSeconds.toFixed(0)} s of training), load ${load()}`,
          );
        } else if (/(input_scale|learning rate ->|done:)/.test(line)) log(line);
      },
    },
  );
  const summary = JSON.parse(stdout.trim().split('\n').pop());
  return { name, epochs, seconds, imagesPerSecond: summary.imagesPerSecond, waitFraction: summary.waitFraction, windowRates: rates };
}

async function pytorchRun(workDir, epochs) {
  const python = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0);
  if (!python) {
    log('\n== pytorch: not run: no python3 with torch here (Debian: apt-get install python3-torch)');
    return undefined;
  }
  // OpenBLAS at its own defaults: the variables this workplace sets are unset for this command alone.
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const script = join(root, 'bench/tta/torch_recipe.py');
  log(
    `\n== pytorch: ${python} bench/tta/torch_recipe.py --data ${join(workDir, 'fashion-mnist')} --epochs ${epochs} --threads ${os.availableParallelism()} (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE unset)`,
  );
  const out = [];
  const { stdout, seconds } = await run(
    python,
    [script, '--data', join(workDir, 'fashion-mnist'), '--epochs', String(epochs), '--threads', String(os.availableParallelism())],
    {
      env,
      onLine: (line) => log(`pytorch: ${line}`),
    },
  );
  for (const line of stdout.trim().split('\n')) {
    const r = JSON.parse(line);
    out.push({ epoch: r.epoch, top1: r.top1, seconds: r.seconds, trainingSeconds: r.seconds, imagesPerSecond: r.images_per_second });
    log(`pytorch: epoch ${r.epoch}: top-1 ${(100 * r.top1).toFixed(2)}% at ${r.seconds.toFixed(0)} s of training (${r.images_per_second.toFixed(1)} img/s)`);
  }
  return { name: 'pytorch', epochs: out, seconds, imagesPerSecond: out.at(-1)?.imagesPerSecond };
}

/** Seconds (since training started) at the first epoch whose top-1 reached `target`, or undefined. */
const timeToReach = (r, target) => r.epochs.find((e) => e.top1 >= target - 1e-9)?.trainingSeconds;

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const epochs = opts.epochs ?? configEpochs(RECIPE);
  if (!epochs) fail(`${RECIPE}: no n_epochs line; pass --epochs`);
  mkdirSync(opts.work, { recursive: true });
  log(`bench:tta: ${cpuModel()}, ${os.availableParallelism()} cores; load average ${load()}; work dir ${opts.work}`);

  try {
    await convertFashionMnist({ out: join(opts.work, 'fashion-mnist'), source: opts.source, log });
  } catch (err) {
    fail(err.message);
  }
  const data = join(opts.work, 'data');
  const fm = join(opts.work, 'fashion-mnist');
  if (!existsSync(join(data, 'prepare.json'))) {
    log(
      `\n== prepare: alexnet-stream prepare --train ${fm}/train --val ${fm}/test --val-list ${fm}/test.txt --out ${data} --size 128 --batch-size 64 --seed 1`,
    );
    await run(
      process.execPath,
      [
        CLI,
        'prepare',
        '--train',
        join(fm, 'train'),
        '--val',
        join(fm, 'test'),
        '--val-list',
        join(fm, 'test.txt'),
        '--out',
        data,
        '--size',
        '128',
        '--batch-size',
        '64',
        '--seed',
        '1',
      ],
      {
        onLine: (line) => log(line),
      },
    );
  } else log(`prepare: ${data} is complete: kept`);

  const results = [];
  const loadBefore = load();
  results.push(await trainRun('small-data recipe', 'small-data', RECIPE, ['--epochs', String(epochs)], opts.work));
  if (opts.baseline) {
    // The demo's schedule scaled to these epochs: lr / 10 after 2/3 of them (demo.yaml: 16 of 24).
    const step = Math.max(1, Math.round((2 * epochs) / 3));
    const demoArgs = [
      '--epochs',
      String(epochs),
      '--set',
      'num_classes=null',
      '--set',
      'image_size=null',
      '--set',
      `lr_step=[${step}]`,
      '--set',
      'snapshot_freq=1000',
    ];
    results.push(await trainRun('seed/demo recipe', 'seed-demo', DEMO, demoArgs, opts.work));
  }
  if (opts.pytorch) {
    const r = await pytorchRun(opts.work, epochs);
    if (r) results.push(r);
  }

  process.stdout.write(`\nTime to accuracy: Fashion-MNIST, 10,000 training / 2,000 test images at 128x128, theano-alexnet at 113 input, ${epochs} epochs\n`);
  process.stdout.write(`CPU: ${cpuModel()}, ${os.availableParallelism()} cores; load average before ${loadBefore}, after ${load()}\n\n`);
  for (const r of results) {
    process.stdout.write(
      `${r.name}: ${r.imagesPerSecond ? `${r.imagesPerSecond.toFixed(1)} img/s training` : ''}${r.seconds ? `, ${r.seconds.toFixed(0)} s in all` : ''}\n`,
    );
    for (const e of r.epochs) {
      process.stdout.write(
        `  epoch ${String(e.epoch).padStart(2)}: top-1 ${(100 * e.top1).toFixed(2).padStart(6)}%  after ${e.trainingSeconds.toFixed(0).padStart(5)} s of training${e.seconds !== e.trainingSeconds ? ` (${e.seconds.toFixed(0)} s since start)` : ''}\n`,
      );
    }
  }
  const recipe = results[0];
  const final = recipe.epochs.at(-1);
  process.stdout.write(
    `\nsmall-data recipe: ${(100 * final.top1).toFixed(2)}% top-1 after ${final.trainingSeconds.toFixed(0)} s of training (target: >= 88% in <= 600 s)\n`,
  );
  const baseline = results.find((r) => r.name === 'seed/demo recipe');
  if (baseline) {
    const b = baseline.epochs.at(-1);
    const t = timeToReach(recipe, b.top1);
    process.stdout.write(
      `baseline (seed/demo recipe, same epochs): ${(100 * b.top1).toFixed(2)}% after ${b.trainingSeconds.toFixed(0)} s; the recipe reached that ` +
        (t !== undefined ? `after ${t.toFixed(0)} s: ${(b.trainingSeconds / t).toFixed(2)}x sooner\n` : 'not within its epochs\n'),
    );
  }
  const torch = results.find((r) => r.name === 'pytorch');
  if (torch?.epochs.length) {
    const p = torch.epochs.at(-1);
    const t = timeToReach(recipe, p.top1);
    process.stdout.write(
      `pytorch (plain modern recipe, same epochs): ${(100 * p.top1).toFixed(2)}% after ${p.trainingSeconds.toFixed(0)} s of training; the recipe reached that ` +
        (t !== undefined ? `after ${t.toFixed(0)} s: ${(p.trainingSeconds / t).toFixed(2)}x sooner\n` : 'not within its epochs\n'),
    );
  }
}

main().catch((err) => {
  process.stderr.write(`bench:tta: ${err.message}\n`);
  process.exit(1);
});
