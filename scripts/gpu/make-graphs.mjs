#!/usr/bin/env node
// Writes the graphs the GPU check runs (scripts/gpu/check.sh, runner.cjs) into <out-dir>, small
// enough to carry (weights are not in them: the runner generates them on the device):
//   alexnet-infer.onnx   the exported full AlexNet (`lowerInference`, theano-alexnet, 1000
//                        classes), its initializers as external data in alexnet-weights.bin,
//                        which the runner writes from meta.json's init rules before loading it
//   train-portable.onnx  one SGD step, PORTABLE_LOWERING (what `--devices webgpu` trains with)
//   train-cpu.onnx       one SGD step, DEFAULT_LOWERING without NCHWc (the CPU reference)
//   download.onnx        Identity per state tensor (brings GPU-resident state back to the host)
//   meta.json            parameters (name, shape, init rule, byte offset in the weights file),
//                        dropout masks, input size, classes, optimizer
// Usage: node scripts/gpu/make-graphs.mjs <out-dir> (after `npm run build`).
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(join(root, 'package.json'));
const { alexnetSpec, parameterList, inferShapes } = require(join(root, 'libs/model-alexnet/dist'));
const { encodeModel, lowerInference, GraphBuilder } = require(join(root, 'libs/onnx-export/dist'));
const { buildGraph, velocityName } = require(join(root, 'libs/trainer-multigpu/dist/graph/training-graph'));
const { DEFAULT_LOWERING, PORTABLE_LOWERING } = require(join(root, 'libs/trainer-multigpu/dist/graph/rules'));
const { DEFAULT_OPTIMIZER } = require(join(root, 'libs/trainer-multigpu/dist/engine'));

const out = process.argv[2];
if (!out) {
  process.stderr.write('usage: node scripts/gpu/make-graphs.mjs <out-dir>\n');
  process.exit(2);
}
mkdirSync(out, { recursive: true });

const spec = alexnetSpec('theano-alexnet', { numClasses: 1000 });
const params = parameterList(spec);
const layers = new Map(inferShapes(spec).map(({ layer }) => [layer.name, layer]));
const WEIGHTS_FILE = 'alexnet-weights.bin';

// Parameters as external data: the model file keeps only where each tensor lives in the weights file.
let offset = 0;
const paramMeta = params.map((p) => {
  const length = p.shape.reduce((a, b) => a * b, 1) * 4;
  const layer = layers.get(p.layer);
  const entry = { name: p.name, shape: p.shape, role: p.role, init: p.role === 'weight' ? layer.weightInit : layer.biasInit, offset, length };
  offset += length;
  return entry;
});
const placeholder = Object.fromEntries(params.map((p) => [p.name, new Float32Array(p.shape.reduce((a, b) => a * b, 1))]));
const infer = lowerInference(spec, placeholder);
for (const t of infer.graph.initializer) {
  const m = paramMeta.find((p) => p.name === t.name);
  if (!m) continue;
  t.rawData = undefined;
  t.dataLocation = 1; // EXTERNAL
  t.externalData = [
    { key: 'location', value: WEIGHTS_FILE },
    { key: 'offset', value: String(m.offset) },
    { key: 'length', value: String(m.length) },
  ];
}
writeFileSync(join(out, 'alexnet-infer.onnx'), encodeModel(infer));

const portable = buildGraph(spec, 'train', DEFAULT_OPTIMIZER, PORTABLE_LOWERING);
const cpu = buildGraph(spec, 'train', DEFAULT_OPTIMIZER, { ...DEFAULT_LOWERING, nchwcBlock: 0 });
writeFileSync(join(out, 'train-portable.onnx'), encodeModel(portable.model));
writeFileSync(join(out, 'train-cpu.onnx'), encodeModel(cpu.model));

const download = new GraphBuilder('state-download');
for (const p of params) {
  for (const name of [p.name, velocityName(p.name)]) {
    download.input(name, 'float32', p.shape);
    download.output(download.op('Identity', [name]), 'float32', p.shape, `${name}.host`);
  }
}
writeFileSync(join(out, 'download.onnx'), encodeModel(download.model()));

writeFileSync(
  join(out, 'meta.json'),
  `${JSON.stringify(
    {
      preset: spec.preset,
      inputSize: spec.inputSize,
      inputChannels: spec.inputChannels,
      numClasses: spec.numClasses,
      weightsFile: WEIGHTS_FILE,
      weightsBytes: offset,
      params: paramMeta,
      masks: portable.masks,
      optimizer: DEFAULT_OPTIMIZER,
    },
    null,
    1,
  )}\n`,
);
process.stderr.write(
  `make-graphs: wrote ${out}/{alexnet-infer,train-portable,train-cpu,download}.onnx and meta.json (weights: ${(offset / 2 ** 20).toFixed(0)} MiB, generated on the device)\n`,
);
