/**
 * Input scale folding (input-scale.ts) against a direct float64 evaluation of the first layer:
 * conv(W ⊙ s, x) must equal conv(W, x · s) for every output. The folded weight is rounded to
 * float32 once (W·s), so each product differs by ≤ 2^-24 relative: over the ≤ 363 products of
 * an 11x11x3 window the sum differs by ≤ 363·2^-24·Σ|w·x| ≈ 2e-5 of Σ|w·x| in the worst case
 * (rounding errors of one sign); 1e-6 relative to Σ|w·x| is the typical bound and holds here by
 * a margin (measured ≤ 1e-7), so TOLERANCE = 1e-6 of Σ|w·x|.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng, type NamedTensors } from '@alexnet-stream/core';
import { alexnetSpec } from './presets';
import { type ConvLayer, inferShapes, type ModelSpec } from './spec';
import { initParameters } from './init';
import { foldInputScale, inputScaleProblem, rescaleInputScale } from './input-scale';
import { INPUT_SCALE_KEY, loadCheckpoint, saveCheckpoint, WEIGHTS_FILE, STATE_FILE } from './checkpoint';
import { decodeSafetensors } from './safetensors';

const TOLERANCE = 1e-6;

function randomInput(spec: ModelSpec, seed: number): Float64Array {
  const rng = new Rng(seed);
  return Float64Array.from({ length: spec.inputChannels * spec.inputSize * spec.inputSize }, () => 120 * (2 * rng.nextFloat() - 1));
}

/** The first conv layer's pre-activation at every output position, float64, and Σ|w·x| per output. */
function convOutputs(spec: ModelSpec, weights: NamedTensors, x: ArrayLike<number>): { y: Float64Array; mass: Float64Array } {
  const { layer, input, output } = inferShapes(spec)[0] as { layer: ConvLayer; input: number[]; output: number[] };
  const w = weights[`${layer.name}.weight`];
  const [c, h, wd] = input;
  const [o, oh, ow] = output;
  const inPerGroup = c / layer.group,
    outPerGroup = o / layer.group,
    k = layer.kernel;
  const y = new Float64Array(o * oh * ow),
    mass = new Float64Array(o * oh * ow);
  for (let oc = 0; oc < o; oc++) {
    const g = Math.floor(oc / outPerGroup);
    for (let yy = 0; yy < oh; yy++)
      for (let xx = 0; xx < ow; xx++) {
        let sum = 0,
          abs = 0;
        for (let ci = 0; ci < inPerGroup; ci++)
          for (let ky = 0; ky < k; ky++)
            for (let kx = 0; kx < k; kx++) {
              const iy = yy * layer.stride - layer.pad + ky,
                ix = xx * layer.stride - layer.pad + kx;
              if (iy < 0 || ix < 0 || iy >= h || ix >= wd) continue;
              const term = w[((oc * inPerGroup + ci) * k + ky) * k + kx] * x[((g * inPerGroup + ci) * h + iy) * wd + ix];
              sum += term;
              abs += Math.abs(term);
            }
        y[(oc * oh + yy) * ow + xx] = sum;
        mass[(oc * oh + yy) * ow + xx] = abs;
      }
  }
  return { y, mass };
}

function scaleInput(spec: ModelSpec, x: Float64Array, scale: number[]): Float64Array {
  const plane = spec.inputSize * spec.inputSize;
  return x.map((v, i) => v * scale[Math.floor(i / plane)]);
}

function assertSameOutputs(a: { y: Float64Array; mass: Float64Array }, b: { y: Float64Array }, what: string): void {
  let worst = 0;
  for (let i = 0; i < a.y.length; i++) worst = Math.max(worst, Math.abs(a.y[i] - b.y[i]) / Math.max(a.mass[i], 1e-30));
  assert.ok(worst <= TOLERANCE, `${what}: worst difference ${worst} of Σ|w·x| (tolerance ${TOLERANCE})`);
}

const SCALE = [1 / 71.3, 1 / 68.9, 1 / 74.2];

test('foldInputScale: conv1 (11x11 stride 4) with folded weights on x equals conv1 on x · scale, per channel', () => {
  const spec = alexnetSpec('theano-alexnet', { numClasses: 5, inputSize: 67 });
  const weights = initParameters(spec, 3);
  const x = randomInput(spec, 4);
  const folded = foldInputScale(spec, weights, SCALE);
  assertSameOutputs(convOutputs(spec, weights, scaleInput(spec, x, SCALE)), convOutputs(spec, folded, x), 'theano-alexnet conv1');
  // Only the first weight changes; the bias and every later tensor are the very same arrays.
  for (const name of Object.keys(weights)) if (name !== 'conv1.weight') assert.equal(folded[name], weights[name], name);
  assert.notDeepEqual(folded['conv1.weight'], weights['conv1.weight']);
  // A scale of ones folds to the same weights.
  assert.equal(foldInputScale(spec, weights, [1, 1, 1]), weights);
});

test('foldInputScale: a grouped first conv scales each group by its own input channels', () => {
  const base = alexnetSpec('theano-alexnet', { numClasses: 5, inputSize: 67 });
  const spec: ModelSpec = { ...base, layers: [{ ...(base.layers[0] as ConvLayer), group: 3 }, ...base.layers.slice(1)] };
  const weights = initParameters(spec, 5);
  const x = randomInput(spec, 6);
  assertSameOutputs(convOutputs(spec, weights, scaleInput(spec, x, SCALE)), convOutputs(spec, foldInputScale(spec, weights, SCALE), x), 'group 3 conv1');
});

test('foldInputScale: an fc first layer after flatten scales its columns channel-major; ReLU/pool before it commute', () => {
  const spec: ModelSpec = {
    specVersion: 1,
    preset: 'theano-alexnet',
    inputChannels: 3,
    inputSize: 4,
    numClasses: 3,
    layers: [
      { kind: 'relu', name: 'relu0' },
      { kind: 'maxpool', name: 'pool0', kernel: 2, stride: 2, pad: 0 },
      { kind: 'flatten', name: 'flatten' },
      { kind: 'fc', name: 'fc8', outFeatures: 3, weightInit: { dist: 'normal', std: 0.1 }, biasInit: { dist: 'constant', value: 0 } },
    ],
  };
  const weights = initParameters(spec, 7);
  const folded = foldInputScale(spec, weights, SCALE);
  // After relu + 2x2 pool the fc reads 3 channels x 2x2: columns 0-3 channel 0, 4-7 channel 1, 8-11 channel 2.
  const w = weights['fc8.weight'],
    f = folded['fc8.weight'];
  for (let o = 0; o < 3; o++) for (let j = 0; j < 12; j++) assert.equal(f[o * 12 + j], Math.fround(w[o * 12 + j] * SCALE[Math.floor(j / 4)]));
});

test('inputScaleProblem: LRN before the first weighted layer cannot be folded; the presets can', () => {
  for (const preset of ['theano-alexnet', 'bvlc-alexnet', 'caffenet', 'torchvision-alexnet'] as const) {
    assert.equal(inputScaleProblem(alexnetSpec(preset, { numClasses: 5 })), undefined, preset);
  }
  const base = alexnetSpec('theano-alexnet', { numClasses: 5, inputSize: 67 });
  const lrnFirst: ModelSpec = { ...base, layers: [{ kind: 'lrn', name: 'norm0', size: 5, alpha: 1e-4, beta: 0.75, bias: 1 }, ...base.layers] };
  assert.match(inputScaleProblem(lrnFirst)!, /norm0 \(LRN\) comes before the first weighted layer/);
  assert.throws(() => foldInputScale(lrnFirst, initParameters(lrnFirst, 1), SCALE), /norm0 \(LRN\)/);
  assert.throws(() => foldInputScale(base, initParameters(base, 1), [1, 2]), /expected 3 finite factors > 0/);
  assert.throws(() => foldInputScale(base, initParameters(base, 1), [1, 0, 1]), /expected 3 finite factors > 0/);
});

test('rescaleInputScale: weights trained at scale a, rescaled for scale b, compute the same function on x · b', () => {
  const spec = alexnetSpec('theano-alexnet', { numClasses: 5, inputSize: 67 });
  const weights = initParameters(spec, 8);
  const a = SCALE,
    b = [0.5, 2, 0.25];
  const x = randomInput(spec, 9);
  const original = convOutputs(spec, weights, scaleInput(spec, x, a));
  assertSameOutputs(original, convOutputs(spec, rescaleInputScale(spec, weights, a, b), scaleInput(spec, x, b)), 'a -> b');
  assertSameOutputs(original, convOutputs(spec, rescaleInputScale(spec, weights, a, undefined), x), 'a -> none');
  assert.equal(rescaleInputScale(spec, weights, undefined, undefined), weights);
});

test('checkpoints keep the input scale in state.json and the safetensors metadata; load checks and returns it', () => {
  const root = mkdtempSync(join(tmpdir(), 'scale-test-'));
  try {
    const spec = alexnetSpec('theano-alexnet', { numClasses: 5, inputSize: 67, dropout: 0 });
    const weights = initParameters(spec, 1);
    const dir = saveCheckpoint(join(root, 'epoch-0001'), { spec, weights, inputScale: SCALE, state: { epoch: 1 } });
    const state = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8'));
    assert.deepEqual(state[INPUT_SCALE_KEY], SCALE);
    assert.deepEqual(JSON.parse(decodeSafetensors(readFileSync(join(dir, WEIGHTS_FILE))).metadata[INPUT_SCALE_KEY]), SCALE);
    const back = loadCheckpoint(dir);
    assert.deepEqual(back.inputScale, SCALE);
    assert.deepEqual(back.state, { epoch: 1 }, "the scale is not part of the trainer's state");
    assert.deepEqual(loadCheckpoint(join(dir, WEIGHTS_FILE)).inputScale, SCALE, 'a lone weights file keeps it');
    // A checkpoint without one has none.
    const plain = saveCheckpoint(join(root, 'epoch-0002'), { spec, weights, state: {} });
    assert.equal(loadCheckpoint(plain).inputScale, undefined);
    assert.throws(() => saveCheckpoint(join(root, 'epoch-0003'), { spec, weights, state: { input_scale: [1, 1, 1] } }), /state.input_scale is reserved/);
    assert.throws(() => saveCheckpoint(join(root, 'epoch-0003'), { spec, weights, inputScale: [1, -1, 1], state: {} }), /is not 3 finite numbers > 0/);
    // Edited or mixed files are refused, naming the file.
    writeFileSync(join(dir, STATE_FILE), JSON.stringify({ ...state, [INPUT_SCALE_KEY]: [1, 1, 1] }));
    assert.throws(() => loadCheckpoint(dir), /says input_scale \[1, 1, 1\] but .*weights.safetensors was written with/);
    writeFileSync(join(dir, STATE_FILE), JSON.stringify({ ...state, [INPUT_SCALE_KEY]: undefined }));
    assert.throws(() => loadCheckpoint(dir), /has no input_scale but .*weights.safetensors was written with/);
    writeFileSync(join(dir, STATE_FILE), JSON.stringify({ ...state, [INPUT_SCALE_KEY]: [1, 'x', 1] }));
    assert.throws(() => loadCheckpoint(dir), {
      code: 'ERR_CHECKPOINT',
      message: /state\.json: expected a list of numbers > 0, one per input channel \(or null\) for input_scale\[1\] but received "x"$/,
    });
    // Well-formed, but not one factor per channel of this model: checked against the spec.
    writeFileSync(join(dir, STATE_FILE), JSON.stringify({ ...state, [INPUT_SCALE_KEY]: [1, 1] }));
    assert.throws(() => loadCheckpoint(dir), /state.json \(input_scale\): input scale \[1,1\] is not 3 finite numbers > 0/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
