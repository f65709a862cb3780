#!/usr/bin/env node
// The full-size parity check (moved out of `npm test`: ~20-30 s of pure-JS tfjs on 2 cores):
// the exported theano-alexnet (227x227, 1000 classes) in onnxruntime against tfjsForward (the
// pure-JS tfjs cpu backend) on identical He-like weights and one input, batch 1. Passes when the
// logits agree to <= 1e-3 relative to the largest |logit| (measured: ~2e-6; float32 sums in
// different orders: test/src/onnx-parity.test.ts explains the tolerance, and checks every preset
// at reduced widths on every `npm test`). Prints the error, both forward times and their ratio
// (onnxruntime's speed-up over the reference, same run, same input) and the CPU model.
// Run: npm run bench:parity (builds first). BENCH_BATCH (default 1).
import { createRequire } from 'node:module';
import { availableParallelism, cpus } from 'node:os';

const require = createRequire(import.meta.url);
const { Rng } = require('../libs/core/dist/index.js');
const { alexnetSpec, parameterList } = require('../libs/model-alexnet/dist/index.js');
const { InferenceModel, lowerInference } = require('../libs/onnx-export/dist/index.js');
const { loadTfjs, tfjsForward, weightsToTensors } = require('../libs/trainer-multigpu/dist/index.js');

const TOLERANCE = 1e-3;
const n = Number(process.env.BENCH_BATCH ?? 1);
const spec = alexnetSpec('theano-alexnet');

/** Weights that keep activations O(input) through the network (He-like), so every layer matters. */
function heWeights(seed) {
  const rng = new Rng(seed);
  const w = {};
  for (const p of parameterList(spec)) {
    const size = p.shape.reduce((a, b) => a * b, 1);
    const std = p.role === 'bias' ? 0.1 : Math.sqrt(2 / (size / p.shape[0]));
    const a = new Float32Array(size);
    for (let i = 0; i < size; i++) a[i] = std * rng.nextNormal();
    w[p.name] = a;
  }
  return w;
}

const rng = new Rng(8);
const x = new Float32Array(n * spec.inputChannels * spec.inputSize * spec.inputSize);
for (let i = 0; i < x.length; i++) x[i] = Math.round(255 * rng.nextFloat()) - 120; // uint8 − mean
const weights = heWeights(7);

console.log(`onnx-parity: theano-alexnet (227x227, 1000 classes), batch ${n}; ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'})`);
const { tf } = await loadTfjs();
const params = weightsToTensors(tf, spec, weights);
const xt = tf.tensor4d(x, [n, spec.inputChannels, spec.inputSize, spec.inputSize]);
let t0 = performance.now();
const logitsT = tfjsForward(tf, spec, params, xt, { training: false });
const expected = await logitsT.data();
const tfjsMs = performance.now() - t0;
tf.dispose([logitsT, xt, ...Object.values(params)]);

const model = await InferenceModel.fromModel(lowerInference(spec, weights), spec.preset);
t0 = performance.now();
const { logits } = await model.run(x, n);
const ortMs = performance.now() - t0;
await model.close();

let diff = 0,
  scale = 1e-12,
  min = Infinity,
  max = -Infinity;
for (let i = 0; i < expected.length; i++) {
  diff = Math.max(diff, Math.abs(logits[i] - expected[i]));
  scale = Math.max(scale, Math.abs(expected[i]));
  min = Math.min(min, expected[i]);
  max = Math.max(max, expected[i]);
}
const error = diff / scale;
console.log(
  `tfjs cpu (reference) ${tfjsMs.toFixed(0)} ms, onnxruntime ${ortMs.toFixed(0)} ms (${(tfjsMs / ortMs).toFixed(1)}x the reference's speed, first run of a fresh session)`,
);
console.log(`max |logit difference| / max |logit| = ${error.toExponential(2)} (tolerance ${TOLERANCE}); logit spread ${(max - min).toFixed(3)}`);
if (!(max - min > 1e-2)) {
  console.log('FAILED: degenerate logits: the comparison would prove nothing');
  process.exitCode = 1;
} else if (!(error <= TOLERANCE)) {
  console.log('FAILED: the exported graph does not compute what tfjsForward computes');
  process.exitCode = 1;
} else {
  console.log('parity: met');
}
