#!/usr/bin/env node
// Augmentation throughput: cropMirrorSubtract (random 227 crops + mirror + mean subtraction of
// 3x256x256 uint8 batches of 256, one core) against a naive per-pixel baseline measured in the
// same run, and against the 500 img/s target. Run: npm run bench:augment (builds first).
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const { Rng, planCrops, cropMirrorSubtract } = require('../libs/stream-io/dist/index.js');

const N = 256, C = 3, S = 256, CROP = 227, TARGET_IMG_PER_S = 500;
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

function measure(name, fn, params) {
  const planRng = new Rng(7);
  fn(batch, mean, planCrops(N, params, planRng), out); // warm up
  let images = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < seconds) {
    fn(batch, mean, planCrops(N, params, planRng), out);
    images += N;
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  }
  return images / elapsed;
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
  const baseline = measure('naive', naive, params);
  const fast = measure('cropMirrorSubtract', cropMirrorSubtract, params);
  results.push({ label, fast, baseline });
  console.log(
    `augment ${label}, batch ${N}, ${C}x${S}x${S} -> ${CROP}: cropMirrorSubtract ${fast.toFixed(0)} img/s, ` +
      `naive per-pixel ${baseline.toFixed(0)} img/s, ratio ${(fast / baseline).toFixed(2)}x; ` +
      `target ${TARGET_IMG_PER_S} img/s: ${(fast / TARGET_IMG_PER_S).toFixed(2)}x (${fast >= TARGET_IMG_PER_S ? 'met' : 'NOT met'})`,
  );
}
if (results.some((r) => r.fast < TARGET_IMG_PER_S)) process.exitCode = 1;
