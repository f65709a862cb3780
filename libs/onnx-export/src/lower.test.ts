import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NamedTensors } from '@alexnet-stream/core';
import { alexnetSpec, inferShapes, type ModelSpec, narrowSpec, parameterList, PRESETS } from '@alexnet-stream/model-alexnet';
import { channelMeans, configHash, lowerInference, lowerWithPreprocessing, META } from './lower';
import { modelMetadata, readOnnx, writeOnnx } from './files';
import { InferenceModel, topK } from './inference';
import { decodeModel, encodeModel } from './proto';

/** Deterministic pseudo-random numbers in [-1, 1) (a tiny LCG: tests need variety, not quality). */
function randoms(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

/** A preset with its widths divided (structure, groups, LRN and order kept) at a small input. */
const reducedSpec = (preset: (typeof PRESETS)[number], numClasses = 7): ModelSpec => narrowSpec(alexnetSpec(preset, { numClasses, inputSize: 67 }), 8, 64);

function randomWeights(spec: ModelSpec, seed: number): NamedTensors {
  const w: NamedTensors = {};
  parameterList(spec).forEach((p, i) => {
    const fanIn = p.shape.slice(1).reduce((a, b) => a * b, 1);
    w[p.name] = randoms(
      p.shape.reduce((a, b) => a * b, 1),
      seed + i,
      p.role === 'bias' ? 0.1 : 1 / Math.sqrt(fanIn),
    );
  });
  return w;
}

/**
 * Naive float64 forward pass straight from the layer definitions (the independent reference
 * for these small cases): grouped cross-correlation, ReLU, floor-mode max pooling, ONNX LRN,
 * channel-major flatten, fc with [out, in] weights.
 */
function naiveForward(spec: ModelSpec, w: NamedTensors, input: Float32Array, n: number): Float64Array {
  let x = Float64Array.from(input);
  let shape = [spec.inputChannels, spec.inputSize, spec.inputSize];
  for (const { layer, output } of inferShapes(spec)) {
    const [c, h, wd] = shape;
    const per = shape.reduce((a, b) => a * b, 1);
    const outPer = output.reduce((a, b) => a * b, 1);
    const y = new Float64Array(n * outPer);
    if (layer.kind === 'conv') {
      const [oc, oh, ow] = output;
      const W = w[`${layer.name}.weight`],
        B = w[`${layer.name}.bias`];
      const icg = c / layer.group,
        ocg = oc / layer.group,
        k = layer.kernel;
      for (let b = 0; b < n; b++)
        for (let o = 0; o < oc; o++)
          for (let i = 0; i < oh; i++)
            for (let j = 0; j < ow; j++) {
              let s = B[o];
              const g = Math.floor(o / ocg);
              for (let ci = 0; ci < icg; ci++)
                for (let u = 0; u < k; u++)
                  for (let v = 0; v < k; v++) {
                    const yy = i * layer.stride - layer.pad + u,
                      xx = j * layer.stride - layer.pad + v;
                    if (yy < 0 || yy >= h || xx < 0 || xx >= wd) continue;
                    s += W[((o * icg + ci) * k + u) * k + v] * x[b * per + ((g * icg + ci) * h + yy) * wd + xx];
                  }
              y[b * outPer + (o * oh + i) * ow + j] = s;
            }
    } else if (layer.kind === 'relu') {
      for (let i = 0; i < x.length; i++) y[i] = Math.max(0, x[i]);
    } else if (layer.kind === 'maxpool') {
      const [, oh, ow] = output;
      for (let b = 0; b < n; b++)
        for (let ch = 0; ch < c; ch++)
          for (let i = 0; i < oh; i++)
            for (let j = 0; j < ow; j++) {
              let m = -Infinity;
              for (let u = 0; u < layer.kernel; u++)
                for (let v = 0; v < layer.kernel; v++) {
                  const yy = i * layer.stride - layer.pad + u,
                    xx = j * layer.stride - layer.pad + v;
                  if (yy >= 0 && yy < h && xx >= 0 && xx < wd) m = Math.max(m, x[b * per + (ch * h + yy) * wd + xx]);
                }
              y[b * outPer + (ch * oh + i) * ow + j] = m;
            }
    } else if (layer.kind === 'lrn') {
      const half = Math.floor((layer.size - 1) / 2);
      const plane = h * wd;
      for (let b = 0; b < n; b++)
        for (let ch = 0; ch < c; ch++)
          for (let p = 0; p < plane; p++) {
            let sq = 0;
            for (let d = Math.max(0, ch - half); d <= Math.min(c - 1, ch + Math.ceil((layer.size - 1) / 2)); d++) sq += x[b * per + d * plane + p] ** 2;
            y[b * per + ch * plane + p] = x[b * per + ch * plane + p] / (layer.bias + (layer.alpha / layer.size) * sq) ** layer.beta;
          }
    } else if (layer.kind === 'fc') {
      const W = w[`${layer.name}.weight`],
        B = w[`${layer.name}.bias`];
      const inF = per;
      for (let b = 0; b < n; b++)
        for (let o = 0; o < layer.outFeatures; o++) {
          let s = B[o];
          for (let i = 0; i < inF; i++) s += W[o * inF + i] * x[b * inF + i];
          y[b * outPer + o] = s;
        }
    } else {
      y.set(x); // flatten (NCHW is already channel-major), dropout (identity at inference)
    }
    x = y;
    shape = output;
  }
  return x;
}

function maxRelError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  let err = 0;
  for (let i = 0; i < expected.length; i++) err = Math.max(err, Math.abs(actual[i] - expected[i]));
  return err / Math.max(scale, 1e-12);
}

for (const preset of PRESETS) {
  test(`${preset} (reduced widths, 67x67): onnxruntime logits and prob equal a naive float64 forward`, async () => {
    const spec = reducedSpec(preset);
    const weights = randomWeights(spec, 11);
    const n = 2;
    const input = randoms(n * 3 * 67 * 67, 5, 100); // mean-subtracted pixels are in ±128
    const model = await InferenceModel.fromModel(lowerInference(spec, weights), preset);
    const { logits, prob } = await model.run(input, n);
    const expected = naiveForward(spec, weights, input, n);
    // float32 vs float64 accumulation over up to ~2400 terms per output: ~1e-6 relative
    // expected; 1e-4 leaves room for onnxruntime's reordered (blocked/Winograd) sums.
    assert.ok(maxRelError(logits, expected) < 1e-4, `max rel error ${maxRelError(logits, expected)}`);
    for (let b = 0; b < n; b++) {
      let max = -Infinity,
        sum = 0;
      for (let k = 0; k < spec.numClasses; k++) max = Math.max(max, expected[b * spec.numClasses + k]);
      for (let k = 0; k < spec.numClasses; k++) sum += Math.exp(expected[b * spec.numClasses + k] - max);
      for (let k = 0; k < spec.numClasses; k++) {
        assert.ok(Math.abs(prob[b * spec.numClasses + k] - Math.exp(expected[b * spec.numClasses + k] - max) / sum) < 1e-5);
      }
    }
    await model.close();
  });
}

test('the graph has the parameters as named initializers, a dynamic batch and our metadata', () => {
  const spec = reducedSpec('theano-alexnet', 3);
  const weights = randomWeights(spec, 1);
  const classNames = ['cat', 'dog', 'eel'];
  const model = decodeModel(encodeModel(lowerInference(spec, weights, { classNames, meanChannels: [1, 2, 3], imageSize: 128 })));
  const names = model.graph!.initializer!.map((t) => t.name);
  for (const p of parameterList(spec)) assert.ok(names.includes(p.name), p.name);
  assert.equal(model.graph!.input![0].name, 'data');
  assert.equal(model.graph!.input![0].type!.tensorType!.shape!.dim![0].dimParam, 'N');
  assert.deepEqual(
    model.graph!.output!.map((o) => o.name),
    ['logits', 'prob'],
  );
  assert.ok(!model.graph!.node!.some((node) => node.opType === 'Dropout'));
  const meta = modelMetadata(model);
  assert.deepEqual(JSON.parse(meta[META.spec]), spec);
  assert.deepEqual(JSON.parse(meta[META.classNames]), classNames);
  assert.deepEqual(JSON.parse(meta[META.meanChannels]), [1, 2, 3]);
  // predict decodes to this size before the center crop: without it a model trained on 128x128
  // images would be fed crops of 256x256 ones (a different scale)
  assert.equal(meta[META.imageSize], '128');
  assert.equal(meta[META.preset], 'theano-alexnet');
  assert.equal(meta[META.configHash], configHash(spec, classNames));
  assert.notEqual(configHash(spec, classNames), configHash(spec, ['cat', 'dog', 'fox']));
});

test('missing or mis-shaped weights are refused naming the tensor', () => {
  const spec = reducedSpec('bvlc-alexnet');
  const weights = randomWeights(spec, 1);
  const { 'conv3.bias': _dropped, ...missing } = weights;
  assert.throws(() => lowerInference(spec, missing), /conv3\.bias is missing/);
  assert.throws(() => lowerInference(spec, { ...weights, 'fc7.weight': new Float32Array(5) }), /fc7\.weight has 5 values/);
});

test('with preprocessing: uint8 NHWC image -> cast, transpose, mean, center crop -> the same network', async () => {
  const spec = alexnetSpec('theano-alexnet', { numClasses: 5, inputSize: 67 });
  spec.layers = reducedSpec('theano-alexnet', 5).layers;
  const weights = randomWeights(spec, 3);
  const S0 = 80,
    n = 2,
    c = 3;
  const mean = randoms(c * S0 * S0, 9, 60).map((v) => v + 120);
  const image = new Uint8Array(n * S0 * S0 * c).map((_, i) => (i * 7919) % 256);
  // Reference preprocessing by hand: (pixel - mean) at the center crop, NCHW.
  const off = (S0 - 67) >> 1;
  const data = new Float32Array(n * c * 67 * 67);
  for (let b = 0; b < n; b++)
    for (let ch = 0; ch < c; ch++)
      for (let y = 0; y < 67; y++)
        for (let x = 0; x < 67; x++) {
          data[((b * c + ch) * 67 + y) * 67 + x] = image[((b * S0 + y + off) * S0 + x + off) * c + ch] - mean[(ch * S0 + y + off) * S0 + x + off];
        }
  const plain = await InferenceModel.fromModel(lowerInference(spec, weights), 'plain');
  const pre = await InferenceModel.fromModel(lowerWithPreprocessing(spec, weights, { meanImage: mean, imageSize: S0 }), 'pre');
  assert.equal(pre.info.input, 'image');
  assert.deepEqual(pre.info.meanChannels, channelMeans(mean, 3));
  const a = Float32Array.from((await plain.run(data, n)).logits);
  const b = (await pre.run(image, n)).logits;
  // Same float32 inputs to the same body: equal up to kernel selection differences.
  assert.ok(maxRelError(b, a) < 1e-5, `max rel error ${maxRelError(b, a)}`);
});

test('run() reuses its output buffers and handles a last partial batch', async () => {
  const spec = reducedSpec('caffenet');
  const model = await InferenceModel.fromModel(lowerInference(spec, randomWeights(spec, 2)), 'm');
  const batch = randoms(3 * model.inputLength, 4, 50);
  const first = await model.run(batch, 3);
  const firstLogits = Float32Array.from(first.logits);
  const again = await model.run(batch, 3);
  assert.equal(again.logits, first.logits, 'same buffer for the same batch size');
  assert.deepEqual(Array.from(again.logits), Array.from(firstLogits));
  const one = await model.run(batch, 1);
  assert.equal(one.logits.length, spec.numClasses);
  assert.ok(maxRelError(one.logits, firstLogits.subarray(0, spec.numClasses)) < 1e-5);
});

test('topK: the k largest, largest first, earliest index on ties', () => {
  const v = new Float32Array([0.1, 0.5, 0.2, 0.5, 0.9, 0, 3, 1]);
  assert.deepEqual(topK(v, 0, 6, 3), [4, 1, 3]);
  assert.deepEqual(topK(v, 1, 2, 1), [1]);
  assert.deepEqual(topK(v, 1, 2, 5), [1, 0]);
});

test('writeOnnx is atomic and readOnnx names a truncated or missing file', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'onnx-files-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const spec = reducedSpec('torchvision-alexnet');
  const path = join(dir, 'm.onnx');
  const bytes = writeOnnx(path, lowerInference(spec, randomWeights(spec, 1)));
  assert.deepEqual(readdirSync(dir), ['m.onnx'], 'no temp file left behind');
  assert.equal(readFileSync(path).length, bytes);
  assert.equal(readOnnx(path).graph!.name, 'alexnet_torchvision_alexnet');
  writeFileSync(join(dir, 'cut.onnx'), readFileSync(path).subarray(0, bytes >> 1));
  assert.throws(
    () => readOnnx(join(dir, 'cut.onnx')),
    (e: Error & { exitCode?: number }) => /cut\.onnx: not a readable ONNX model/.test(e.message) && e.exitCode === 2,
  );
  assert.throws(() => readOnnx(join(dir, 'nope.onnx')), /nope\.onnx: cannot read the ONNX model \(no such file\)/);
  assert.throws(
    () => writeOnnx(join(dir, 'no-dir', 'm.onnx'), lowerInference(spec, randomWeights(spec, 1))),
    (e: Error & { exitCode?: number }) => e.exitCode === 2 && /no-dir\/m\.onnx: cannot write: its folder does not exist \(ENOENT\)/.test(e.message),
  );
});
