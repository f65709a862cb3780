#!/usr/bin/env node
// `npm run demo`: the whole job end to end on the embedded demo data set, as a user would run
// it from a shell: generate JPEGs → prepare shards + mean → train (validating every epoch)
// → report → export ONNX → predict held-out images. Everything goes to demo-out/ (rebuilt on
// every run). Each step's command line is printed before it runs.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { TRAINING_ALLOCATOR_ENV } = createRequire(import.meta.url)(join(root, 'libs/core/dist/index.js'));
const cli = join(root, 'apps/cli/bin/alexnet-stream.js');
const out = join(root, 'demo-out');
// The small-data recipe (unit-scale inputs, He init, warm-up, cosine decay: docs/training.md
// "Time to accuracy"), with the demo's own data on the command line: 360 training images in batches of
// 32 (11 steps per epoch), 12 epochs.
const config = join(root, 'libs/trainer-multigpu/config/small-data.yaml');
const DEMO_TRAIN_ARGS = [
  '--data',
  'demo-out/data',
  '--weights-dir',
  'demo-out/weights',
  '--batch-size',
  '32',
  '--epochs',
  '12',
  '--set',
  'print_freq=11',
  '--set',
  'snapshot_freq=4',
];
const timings = [];

function run(title, args, { capture = false, env = {} } = {}) {
  const envText = Object.entries(env)
    .map(([name, value]) => `${name}=${value} `)
    .join('');
  process.stderr.write(`\n== ${title}\n$ ${envText}alexnet-stream ${args.join(' ')}\n`);
  const started = Date.now();
  const result = spawnSync(process.execPath, [cli, ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', capture ? 'pipe' : 'inherit', 'inherit'],
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  const seconds = (Date.now() - started) / 1000;
  timings.push([title, seconds]);
  if (result.status !== 0) {
    process.stderr.write(`\ndemo: step "${title}" failed (exit ${result.status ?? result.signal})\n`);
    process.exit(result.status || 1);
  }
  return result.stdout;
}

const demoStarted = Date.now();
rmSync(out, { recursive: true, force: true });

run('generate the demo data set (JPEGs, Caffe-style val list)', ['make-demo-data', '--out', 'demo-out/images', '--seed', '1']);
run('prepare: shuffled train shards, val shards, mean.npy, classes.txt', [
  'prepare',
  '--train',
  'demo-out/images/train',
  '--val',
  'demo-out/images/val',
  '--val-list',
  'demo-out/images/val.txt',
  '--out',
  'demo-out/data',
  '--size',
  '128',
  '--batch-size',
  '32',
  '--seed',
  '1',
]);
process.stdout.write(
  run(
    'inspect the training shards (+ contact sheet)',
    ['inspect', 'demo-out/data', '--prefix', 'train', '--contact-sheet', 'demo-out/contact-sheet.png', '--count', '36'],
    { capture: true },
  ),
);
// With the training allocator settings (docs/speed.md "What a run costs besides its steps"); a
// variable the caller's environment sets is kept as it is.
const allocatorEnv = Object.fromEntries(Object.entries(TRAINING_ALLOCATOR_ENV).filter(([name]) => process.env[name] === undefined));
const trainSummary = run('train (onnxruntime engine; validation every epoch)', ['train', '--config', config, ...DEMO_TRAIN_ARGS], {
  capture: true,
  env: allocatorEnv,
});
run('report: loss and error curves', ['report', '--weights-dir', 'demo-out/weights', '--out', 'demo-out/report.html']);

const summary = JSON.parse(trainSummary.trim().split('\n').pop());
run('export the last checkpoint to ONNX', [
  'export',
  '--weights',
  summary.checkpoint,
  '--out',
  'demo-out/model.onnx',
  '--classes',
  'demo-out/data/classes.txt',
  '--mean',
  'demo-out/data/mean.npy',
]);

// Held-out images: the val split, which training never sees (it only validates on it).
const valList = readFileSync(join(out, 'images/val.txt'), 'utf8')
  .trim()
  .split('\n')
  .map((l) => l.trim().split(/\s+/));
const classes = readFileSync(join(out, 'data/classes.txt'), 'utf8').trim().split('\n');
const picks = valList.filter((_, i) => i % 6 === 0).slice(0, 10);
const predictions = run(
  'predict held-out images',
  ['predict', '--model', 'demo-out/model.onnx', '--topk', '3', '--json', ...picks.map(([p]) => join('demo-out/images/val', p))],
  { capture: true },
)
  .trim()
  .split('\n')
  .map((l) => JSON.parse(l));

// Serve the model over HTTP and classify one held-out image with a real request, then stop.
{
  const title = 'serve the model and classify one image over HTTP';
  const args = ['serve', '--model', 'demo=demo-out/model.onnx', '--port', '0'];
  process.stderr.write(`\n== ${title}\n$ alexnet-stream ${args.join(' ')} &\n`);
  const started = Date.now();
  const server = spawn(process.execPath, [cli, ...args], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const exited = new Promise((resolve) => server.on('exit', resolve));
  const url = await new Promise((resolve, reject) => {
    server.stderr.on('data', (d) => {
      log += d;
      const m = /"url":"([^"]+)".*"msg":"listening"/.exec(log);
      if (m) resolve(m[1]);
    });
    exited.then((code) => reject(new Error(`serve exited (${code}) before listening:\n${log}`)));
  });
  const image = join('demo-out/images/val', picks[0][0]);
  process.stderr.write(`$ curl -H 'Content-Type: image/jpeg' --data-binary @${image} '${url}/v1/models/demo:classify?topk=3'\n`);
  const res = await fetch(`${url}/v1/models/demo:classify?topk=3`, {
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: readFileSync(join(root, image)),
  });
  const body = await res.json();
  process.stderr.write(`${JSON.stringify(body)}\n`);
  server.kill('SIGTERM');
  const code = await exited;
  timings.push([title, (Date.now() - started) / 1000]);
  const served = body.predictions?.[0]?.top?.[0];
  if (res.status !== 200 || code !== 0 || served?.index !== predictions[0].top[0].index || Math.abs(served.prob - predictions[0].top[0].prob) > 1e-5) {
    process.stderr.write(`\ndemo: the served answer (HTTP ${res.status}, exit ${code}) differs from predict's: ${JSON.stringify(predictions[0].top[0])}\n`);
    process.exit(1);
  }
  process.stdout.write(`\nServed over HTTP (${url}): ${picks[0][0]} -> ${served.label} ${(served.prob * 100).toFixed(1)}% (the same as predict)\n`);
}

let correct = 0;
process.stdout.write('\nPredictions on held-out images:\n');
predictions.forEach((p, i) => {
  const truth = classes[Number(picks[i][1])];
  const top = p.top[0];
  if (top.label === truth) correct++;
  process.stdout.write(`  ${picks[i][0].padEnd(16)} truth ${truth.padEnd(20)} predicted ${top.label.padEnd(20)} ${(top.prob * 100).toFixed(1)}%\n`);
});

const v = summary.lastValidation;
process.stdout.write(
  `\nTraining: ${summary.epochsCompleted} epochs, ${summary.iteration} iterations, ${summary.imagesPerSecond?.toFixed(1)} img/s, engine waited for data ${(100 * summary.waitFraction).toFixed(1)}% of the time\n`,
);
process.stdout.write(
  `Validation after the last epoch: top-1 accuracy ${(100 * (1 - v.top1Error)).toFixed(1)}%, top-5 error ${(100 * v.top5Error).toFixed(1)}%, loss ${v.loss.toFixed(3)}\n`,
);
process.stdout.write(`Held-out predictions correct: ${correct}/${predictions.length}\n`);
process.stdout.write('\nTime per step:\n');
for (const [title, seconds] of timings) process.stdout.write(`  ${seconds.toFixed(1).padStart(7)} s  ${title}\n`);
process.stdout.write(`  ${((Date.now() - demoStarted) / 1000).toFixed(1).padStart(7)} s  total\n`);
process.stdout.write(`\nOutputs in demo-out/: contact-sheet.png, report.html (+ .png), model.onnx, weights/, data/\n`);
if (!existsSync(join(out, 'model.onnx'))) process.exit(1);
