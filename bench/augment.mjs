#!/usr/bin/env node
// Augmentation throughput: cropMirrorSubtract (random 227 crops + mirror + mean subtraction of
// 3x256x256 uint8 batches of 256, one core) against a naive per-pixel baseline measured in the
// same run, and against the 500 img/s target. Run: npm run bench:augment (builds first).
// Rates are images per second of this process's CPU time (user + system; the kernel is
// single-threaded), so that other work on a shared machine does not count against it; the
// wall-clock rate and the load average are printed too.
import { createRequire } from 'node:module';
import os from 'node:os';
const require = createRequire(import.meta.url);
const { Rng } = require('../libs/core/dist/index.js');
const { planCrops, cropMirrorSubtract } = require('../libs/stream-io/dist/index.js');

const N = 256,
  C = 3,
  S = 256,
  CROP = 227,
  TARGET_IMG_PER_S = 500;
const seconds = Number(process.env.BENCH_SECONDS ?? 3);

const rng = new Rng(1);
const data = new Uint8Array(N * C * S * S);
for (let i = 0; i < data.length; i++) data[i] = rng.nextUint32() & 255;
const batch = { type: 'batch', dtype: 'uint8', shape: [N, C, S, S], layout: 'NCHW', data, labels: new Int32Array(N), keys: [] };
const meanData = new Float32Array(C * S * S);
for (let i = 0; i < meanData.length; i++) meanData[i] = rng.nextFloat() * 255;
const mean = { channels: C, height: S, width: S, data: meanData };
const out = new Float32Array(N * C * CROP * CROP);

// The obvious per-pixel loop: full NCHW index arithmetic and the mirror test for every value.
function naive(batch, mean, plan, out) {
  const [n, c, h, w] = batch.shape;
  const k = plan.crop;
  for (let i = 0; i < n; i++)
    for (let ch = 0; ch < c; ch++)
      for (let y = 0; y < k; y++)
        for (let x = 0; x < k; x++) {
          const sy = plan.offsetY[i] + y;
          const sx = plan.mirror[i] ? w - 1 - (plan.offsetX[i] + x) : plan.offsetX[i] + x;
          out[((i * c + ch) * k + y) * k + x] = batch.data[((i * c + ch) * h + sy) * w + sx] - mean.data[(ch * h + sy) * w + sx];
        }
  return out;
}

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** { cpu, wall } images per second over `seconds` of CPU time. */
function measure(fn, params) {
  const planRng = new Rng(7);
  fn(batch, mean, planCrops(N, params, planRng), out); // warm up
  let images = 0;
  const cpu0 = cpuSeconds();
  const wall0 = process.hrtime.bigint();
  while (cpuSeconds() - cpu0 < seconds) {
    fn(batch, mean, planCrops(N, params, planRng), out);
    images += N;
  }
  return { cpu: images / (cpuSeconds() - cpu0), wall: images / (Number(process.hrtime.bigint() - wall0) / 1e9) };
}

// Same answer first: a benchmark of a wrong kernel is worthless.
const check = planCrops(N, { crop: CROP, height: S, width: S, mirror: true }, new Rng(3));
const a = cropMirrorSubtract(batch, mean, check).slice();
const b = naive(batch, mean, check, new Float32Array(a.length));
for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) throw new Error(`kernel and baseline differ at ${i}`);

const results = [];
for (const [label, params] of [
  ['random crop + mirror (train)', { crop: CROP, height: S, width: S, mirror: true }],
  ['center crop (val)', { crop: CROP, height: S, width: S, center: true }],
]) {
  const baseline = measure(naive, params);
  const { cpu: fast, wall } = measure(cropMirrorSubtract, params);
  results.push({ label, fast, baseline: baseline.cpu });
  console.log(
    `augment ${label}, batch ${N}, ${C}x${S}x${S} -> ${CROP}: cropMirrorSubtract ${fast.toFixed(0)} img/s, ` +
      `naive per-pixel ${baseline.cpu.toFixed(0)} img/s, ratio ${(fast / baseline.cpu).toFixed(2)}x; ` +
      `target ${TARGET_IMG_PER_S} img/s: ${(fast / TARGET_IMG_PER_S).toFixed(2)}x (${fast >= TARGET_IMG_PER_S ? 'met' : 'NOT met'}) ` +
      `[per CPU-second; wall clock ${wall.toFixed(0)} img/s]`,
  );
}
console.log(
  `(load average ${os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')} on ${os.availableParallelism?.() ?? os.cpus().length} cores)`,
);
if (results.some((r) => r.fast < TARGET_IMG_PER_S)) process.exitCode = 1;
