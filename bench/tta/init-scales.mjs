#!/usr/bin/env node
// Why a recipe trains or not, measured at initialisation on real images: for each recipe (init
// scheme x input scaling), the RMS of every layer's output, the initial loss, and per parameter
// the RMS gradient relative to the RMS weight, ‖g‖/‖W‖: an SGD step at lr moves W by about
// lr·‖g‖/‖W‖ of itself, so the lr at which the most sensitive layer moves 1% per step,
// 0.01·min(‖W‖/‖g‖), marks where the usable lr window ends.
//
//   node bench/tta/init-scales.mjs --data <shard dir> [--batch 64] [--input-size 113] [--seed 1]
//
// One batch of `--batch` training images (the first stored batches, center crops, the mean
// image subtracted, as validation feeds them), the theano-alexnet network without dropout, and
// the trainer's own gradient graph (onnxruntime). The input scale is 1/std per channel of the
// mean-subtracted training pixels (what `input_scale: auto` computes).
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
const require = createRequire(import.meta.url);
const root = resolve(new URL('../..', import.meta.url).pathname);
const { alexnetSpec, initParameters, parameterList } = require(`${root}/libs/model-alexnet/dist/index.js`);
const { lowerInference, encodeModel, loadOnnxRuntime } = require(`${root}/libs/onnx-export/dist/index.js`);
const { readShardIndex, shardSet, readShard, readMeanNpy, cropMirrorSubtract, centerOffset } = require(`${root}/libs/stream-io/dist/index.js`);
const { buildGraph, gradName, computeInputStd } = require(`${root}/libs/trainer-multigpu/dist/index.js`);

const args = Object.fromEntries(process.argv.slice(2).flatMap((a, i, all) => (a.startsWith('--') ? [[a.slice(2), all[i + 1]]] : [])));
if (!args.data) {
  process.stderr.write('usage: node bench/tta/init-scales.mjs --data <shard dir> [--batch 64] [--input-size 113] [--seed 1]\n');
  process.exit(2);
}
const batchSize = Number(args.batch ?? 64);
const inputSize = Number(args['input-size'] ?? 113);
const seed = Number(args.seed ?? 1);
const ort = loadOnnxRuntime();

const index = await readShardIndex(args.data);
const set = shardSet(index, 'train', args.data);
const mean = await readMeanNpy(`${args.data}/mean.npy`);
const [C, H, W] = set.imageShape;
const data = new Float32Array(batchSize * C * inputSize * inputSize);
const labels = new Int32Array(batchSize);
let filled = 0;
for (const file of set.shards) {
  const shard = await readShard(args.data, set, file);
  for (const batch of shard.batches) {
    const n = Math.min(batch.shape[0], batchSize - filled);
    const part = { ...batch, shape: [n, C, H, W], data: batch.data.subarray(0, n * C * H * W) };
    const plan = {
      crop: inputSize,
      offsetY: new Int32Array(n).fill(centerOffset(H, inputSize)),
      offsetX: new Int32Array(n).fill(centerOffset(W, inputSize)),
      mirror: new Uint8Array(n),
    };
    data.set(cropMirrorSubtract(part, mean, plan), filled * C * inputSize * inputSize);
    labels.set(batch.labels.subarray(0, n), filled);
    filled += n;
    if (filled === batchSize) break;
  }
  if (filled === batchSize) break;
}
const std = await computeInputStd({ dir: args.data, set, mean });
const scale = std.map((s) => 1 / s);
process.stdout.write(
  `data: ${args.data}, ${batchSize} training images, ${inputSize}x${inputSize} center crops; std of the mean-subtracted pixels per channel: ${std.map((s) => s.toFixed(2)).join(', ')}\n`,
);

const rms = (a) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return Math.sqrt(s / a.length);
};

async function run(model, feeds, fetches) {
  const session = await ort.InferenceSession.create(encodeModel(model), { graphOptimizationLevel: 'all', logSeverityLevel: 3 });
  try {
    return await session.run(feeds, fetches);
  } finally {
    await session.release();
  }
}

const recipes = [
  { name: 'seed: preset init, raw pixels', init: 'preset', scaled: false },
  { name: 'demo: kaiming (conv1 N(0,0.01)), raw pixels', init: 'kaiming', scaled: false },
  { name: 'kaiming (conv1 N(0,0.01)), input x 1/std', init: 'kaiming', scaled: true },
  { name: 'kaiming-all (He in conv1 too), input x 1/std', init: 'kaiming-all', scaled: true },
];
const results = [];
for (const recipe of recipes) {
  const spec = alexnetSpec('theano-alexnet', { numClasses: set.labelCount, inputSize, dropout: 0, init: recipe.init });
  const weights = initParameters(spec, seed);
  const x = Float32Array.from(data);
  if (recipe.scaled) {
    const plane = inputSize * inputSize;
    for (let i = 0; i < batchSize; i++)
      for (let c = 0; c < C; c++) {
        const o = (i * C + c) * plane;
        for (let j = 0; j < plane; j++) x[o + j] *= scale[c];
      }
  }
  const inference = lowerInference(spec, weights);
  const layerNames = spec.layers.map((l) => l.name);
  inference.graph.output.push(...layerNames.filter((n) => n !== spec.layers[spec.layers.length - 1].name).map((name) => ({ name })));
  const acts = await run(inference, { data: new ort.Tensor('float32', x, [batchSize, C, inputSize, inputSize]) }, [...layerNames.slice(0, -1), 'logits']);
  const grads = buildGraph(spec, 'gradients');
  const feeds = { data: new ort.Tensor('float32', x, [batchSize, C, inputSize, inputSize]), labels: new ort.Tensor('int32', labels, [batchSize]) };
  for (const p of parameterList(spec)) feeds[p.name] = new ort.Tensor('float32', weights[p.name], p.shape);
  const g = await run(grads.model, feeds);
  const layerRms = spec.layers.map((l, i) => [l.name, rms((i === spec.layers.length - 1 ? acts.logits : acts[l.name]).data)]);
  const paramRatios = parameterList(spec)
    .filter((p) => p.role === 'weight')
    .map((p) => [p.layer, rms(g[gradName(p.name)].data) / rms(weights[p.name])]);
  results.push({ recipe, input: rms(x), loss: g.loss.data[0], layerRms, paramRatios });
}

const pad = (s, n) => String(s).padEnd(n);
const num = (v) => (v >= 1e4 || v < 1e-3 ? v.toExponential(2) : v.toPrecision(3));
process.stdout.write(
  `\nRMS of each layer's output (input: the network's input)\n${pad('layer', 10)}${results.map((_r, i) => pad(`recipe ${i + 1}`, 12)).join('')}\n`,
);
process.stdout.write(`${pad('input', 10)}${results.map((r) => pad(num(r.input), 12)).join('')}\n`);
for (let l = 0; l < results[0].layerRms.length; l++)
  process.stdout.write(`${pad(results[0].layerRms[l][0], 10)}${results.map((r) => pad(num(r.layerRms[l][1]), 12)).join('')}\n`);
process.stdout.write(`${pad('loss', 10)}${results.map((r) => pad(num(r.loss), 12)).join('')}\n`);
process.stdout.write(`\n‖grad‖/‖W‖ per weight (RMS over the tensor; an SGD step at lr moves W by ~lr times this, relative)\n`);
for (let l = 0; l < results[0].paramRatios.length; l++)
  process.stdout.write(`${pad(results[0].paramRatios[l][0], 10)}${results.map((r) => pad(num(r.paramRatios[l][1]), 12)).join('')}\n`);
process.stdout.write(
  `${pad('max/min', 10)}${results.map((r) => pad(num(Math.max(...r.paramRatios.map((p) => p[1])) / Math.min(...r.paramRatios.map((p) => p[1]))), 12)).join('')}\n`,
);
process.stdout.write(
  `${pad('lr(1%)', 10)}${results.map((r) => pad(num(0.01 / Math.max(...r.paramRatios.map((p) => p[1]))), 12)).join('')}   the lr at which the most sensitive layer moves 1% per step\n`,
);
process.stdout.write('\nRecipes:\n');
results.forEach((r, i) => process.stdout.write(`  ${i + 1}. ${r.recipe.name}\n`));
