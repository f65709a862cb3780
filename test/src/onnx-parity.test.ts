/**
 * The exported ONNX inference graph (onnxruntime-node) against the tfjs reference forward
 * (pure-JS cpu backend) on identical weights and inputs: every preset at reduced widths and a
 * small input. The full theano-alexnet at 227x227 (the same check, ~25 s of pure-JS tfjs on two
 * cores) is `npm run bench:parity` (bench/onnx-parity.mjs).
 *
 * Tolerance: ≤ 1e-3 relative to the largest |logit|. Both engines compute in float32 but sum
 * in different orders (onnxruntime: blocked im2col/GEMM kernels with FMA; tfjs cpu: plain
 * loops), over up to 9216 terms per output through 8 layers with LRN powers in between;
 * float32 rounds at ~6e-8 relative and order-dependent rounding grows with fan-in and depth
 * (measured here: ~2e-6 for the full network). 1e-3 still fails for any real lowering mistake
 * (LRN alpha divided by size or not: ~1e-1; a wrong flatten order or group split: ~1).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '@alexnet-stream/core';
import { alexnetSpec, type ModelSpec, narrowSpec, parameterList, PRESETS, type PresetName } from '@alexnet-stream/model-alexnet';
import { InferenceModel, lowerInference } from '@alexnet-stream/onnx-export';
import { loadTfjs, tfjsForward, weightsToTensors } from '@alexnet-stream/trainer-multigpu';

/** Weights that keep activations O(input) through the network (He-like), so every layer matters. */
function heWeights(spec: ModelSpec, seed: number): Record<string, Float32Array> {
  const rng = new Rng(seed);
  const w: Record<string, Float32Array> = {};
  for (const p of parameterList(spec)) {
    const size = p.shape.reduce((a, b) => a * b, 1);
    const std = p.role === 'bias' ? 0.1 : Math.sqrt(2 / (size / p.shape[0]));
    const a = new Float32Array(size);
    for (let i = 0; i < size; i++) a[i] = std * rng.nextNormal();
    w[p.name] = a;
  }
  return w;
}

/** A preset with widths divided (order, groups, LRN constants kept) at a 67x67 input. */
const reducedSpec = (preset: PresetName): ModelSpec => narrowSpec(alexnetSpec(preset, { numClasses: 9, inputSize: 67 }), 8, 64);

function input(n: number, spec: ModelSpec, seed: number): Float32Array {
  const rng = new Rng(seed);
  const a = new Float32Array(n * spec.inputChannels * spec.inputSize * spec.inputSize);
  for (let i = 0; i < a.length; i++) a[i] = Math.round(255 * rng.nextFloat()) - 120; // uint8 − mean
  return a;
}

function maxRelativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let diff = 0,
    scale = 1e-12;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return diff / scale;
}

async function compare(spec: ModelSpec, n: number, seed: number): Promise<{ error: number }> {
  const { tf } = await loadTfjs();
  const weights = heWeights(spec, seed);
  const x = input(n, spec, seed + 1);
  const params = weightsToTensors(tf, spec, weights);
  const xt = tf.tensor4d(x, [n, spec.inputChannels, spec.inputSize, spec.inputSize]);
  const logitsT = tfjsForward(tf, spec, params, xt, { training: false });
  const expected = await logitsT.data();
  tf.dispose([logitsT, xt, ...Object.values(params)]);
  const model = await InferenceModel.fromModel(lowerInference(spec, weights), spec.preset);
  const { logits } = await model.run(x, n);
  await model.close();
  const spread = Math.max(...expected) - Math.min(...expected);
  assert.ok(spread > 1e-2, `degenerate logits (spread ${spread}): the comparison would prove nothing`);
  return { error: maxRelativeError(logits, expected) };
}

for (const preset of PRESETS) {
  test(`${preset} (reduced widths, 67x67, batch 3): ONNX logits equal tfjsForward's to 1e-3`, async () => {
    const { error } = await compare(reducedSpec(preset), 3, 100 + PRESETS.indexOf(preset));
    assert.ok(error <= 1e-3, `max relative error ${error}`);
  });
}
