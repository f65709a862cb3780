/**
 * export / predict / validate / import --from onnx through the CLI (spawned), on the demo data
 * set and a reduced-width theano-alexnet (227 input, so the real 256 → 227 center crop is used):
 * results checked against independent computations, and every bad input (broken checkpoint,
 * truncated files, a foreign ONNX graph, non-images) checked for a clear message, exit code 2
 * and nothing written.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { NamedTensors } from '@alexnet-stream/core';
import {
  alexnetSpec,
  encodeSafetensors,
  inferShapes,
  initParameters,
  loadCheckpoint,
  type ModelSpec,
  parameterList,
  saveCheckpoint,
} from '@alexnet-stream/model-alexnet';
import { GraphBuilder, importOnnxWeights, InferenceModel, int, ints, META, readOnnx, writeOnnx } from '@alexnet-stream/onnx-export';
import { centerOffset, cropMirrorSubtract, decodeImage, readMeanNpy, readShard, readShardIndex, shardSet } from '@alexnet-stream/stream-io';
import { loadTfjs, tfjsForward, weightsToTensors } from '@alexnet-stream/trainer-multigpu';

const CLI = resolve(__dirname, '../../apps/cli/bin/alexnet-stream.js');
const root = mkdtempSync(join(tmpdir(), 'export-predict-'));
after(() => rmSync(root, { recursive: true, force: true }));
const demo = join(root, 'demo');
const data = join(root, 'data');
const ckpt = join(root, 'ckpt');
let spec: ModelSpec;
let weights: NamedTensors;
let valImages: string[];

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: root });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ok(args: string[]) {
  const r = cli(args);
  assert.equal(r.code, 0, `${args.join(' ')} failed: ${r.stderr}`);
  return r;
}

/** Exit code 2, one clear line matching `message`, no stack trace. */
function refused(args: string[], message: RegExp) {
  const r = cli(args);
  assert.equal(r.code, 2, `expected exit 2 from ${args.join(' ')}, got ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  return r;
}

/** The plain export with class names and channel means (made once, by whichever test needs it first). */
function plainModel(): string {
  const out = join(root, 'plain.onnx');
  if (!existsSync(out)) ok(['export', '--weights', ckpt, '--out', out, '--classes', join(demo, 'classes.txt'), '--mean', join(data, 'mean.npy')]);
  return out;
}

before(() => {
  ok(['make-demo-data', '--out', demo, '--train-per-class', '4', '--val-per-class', '3']);
  ok(['prepare', '--train', join(demo, 'train'), '--val', join(demo, 'val'), '--val-list', join(demo, 'val.txt'), '--out', data, '--batch-size', '8']);
  // theano-alexnet with widths / 8 (fc / 64): same layers, groups, LRN and 227 input; small and fast.
  spec = alexnetSpec('theano-alexnet', { numClasses: 6 });
  spec.layers = spec.layers.map((l) =>
    l.kind === 'conv' ? { ...l, outChannels: l.outChannels / 8 } : l.kind === 'fc' && l.name !== 'fc8' ? { ...l, outFeatures: 64 } : l,
  );
  inferShapes(spec);
  // He-scaled weights so that predictions depend on the image (the spec's init gives near-uniform outputs).
  weights = initParameters(spec, 3);
  for (const p of parameterList(spec)) {
    if (p.role === 'weight') {
      const scale = Math.sqrt(2 / p.shape.slice(1).reduce((a, b) => a * b, 1)) / (p.init.dist === 'normal' ? p.init.std : 1);
      weights[p.name] = weights[p.name].map((v) => v * scale);
    }
  }
  saveCheckpoint(ckpt, { spec, weights, state: { epoch: 1 } });
  valImages = readdirSync(join(demo, 'val'))
    .filter((f) => f.endsWith('.jpg'))
    .sort()
    .map((f) => join(demo, 'val', f));
});

test('export writes a model whose metadata and weights round-trip through import --from onnx bit for bit', async () => {
  const out = plainModel();
  const model = await InferenceModel.load(out);
  assert.deepEqual(model.info.spec, spec);
  assert.deepEqual(model.info.classNames, readFileSync(join(demo, 'classes.txt'), 'utf8').trim().split('\n'));
  assert.equal(model.info.meanChannels!.length, 3);
  await model.close();
  const back = join(root, 'reimported');
  ok(['import', out, '--from', 'onnx', '--out', back]);
  const a = loadCheckpoint(ckpt).weights;
  const b = loadCheckpoint(back).weights;
  for (const p of parameterList(spec)) {
    assert.ok(
      Buffer.from(a[p.name].buffer, a[p.name].byteOffset, a[p.name].byteLength).equals(
        Buffer.from(b[p.name].buffer, b[p.name].byteOffset, b[p.name].byteLength),
      ),
      p.name,
    );
  }
});

test('predict: one line per image in order, top-k by probability, equal to the pipeline computed here (batches incl. a partial one)', async () => {
  const out = plainModel();
  const r = ok(['predict', '--model', out, '--json', '--topk', '3', '--batch-size', '4', ...valImages]);
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(lines.length, valImages.length);
  // Reference: decode + center crop + full mean image (not the model's channel means) + tfjs forward.
  const mean = await readMeanNpy(join(data, 'mean.npy'));
  const viaMeanFile = ok(['predict', '--model', out, '--json', '--topk', '6', '--mean', join(data, 'mean.npy'), ...valImages])
    .stdout.trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  const { tf } = await loadTfjs();
  const params = weightsToTensors(tf, spec, weights);
  const o = centerOffset(256, 227);
  for (const [i, path] of valImages.entries()) {
    assert.equal(lines[i].path, path);
    assert.equal(lines[i].top.length, 3);
    assert.ok(lines[i].top[0].prob >= lines[i].top[1].prob && lines[i].top[1].prob >= lines[i].top[2].prob);
    const img = await decodeImage(readFileSync(path), { size: 256, resize: 'squash' });
    const crop = cropMirrorSubtract(
      { type: 'batch', dtype: 'uint8', shape: [1, 3, 256, 256], layout: 'NCHW', data: img.data, labels: new Int32Array(1), keys: [] },
      mean,
      { crop: 227, offsetY: Int32Array.of(o), offsetX: Int32Array.of(o), mirror: new Uint8Array(1) },
    );
    const x = tf.tensor4d(crop, [1, 3, 227, 227]);
    const logits = tfjsForward(tf, spec, params, x, { training: false });
    const prob = await tf.softmax(logits).data();
    tf.dispose([x, logits]);
    for (const t of viaMeanFile[i].top) {
      // float32 in both engines, different summation order: see onnx-parity.test.ts.
      assert.ok(Math.abs(t.prob - prob[t.index]) <= 1e-4, `${path} class ${t.index}: ${t.prob} vs tfjs ${prob[t.index]}`);
    }
  }
  tf.dispose(Object.values(params));
  const human = ok(['predict', '--model', out, '--topk', '2', valImages[0]]).stdout;
  assert.match(human, new RegExp(`^${valImages[0].replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: [a-z-]+ \\d+\\.\\d\\d%, [a-z-]+ \\d+\\.\\d\\d%\\n$`));
});

test('a model exported --with-preprocessing (uint8 NHWC in) predicts what the plain model does with --mean', () => {
  const pre = join(root, 'pre.onnx');
  const plain = join(root, 'plain2.onnx');
  refused(['export', '--weights', ckpt, '--out', pre, '--with-preprocessing'], /--with-preprocessing needs --mean/);
  assert.ok(!existsSync(pre));
  ok(['export', '--weights', ckpt, '--out', pre, '--with-preprocessing', '--mean', join(data, 'mean.npy')]);
  ok(['export', '--weights', ckpt, '--out', plain]);
  const a = ok(['predict', '--model', pre, '--json', '--topk', '6', ...valImages.slice(0, 5)])
    .stdout.trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  const b = ok(['predict', '--model', plain, '--json', '--topk', '6', '--mean', join(data, 'mean.npy'), ...valImages.slice(0, 5)])
    .stdout.trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  for (let i = 0; i < a.length; i++) {
    for (let j = 0; j < 6; j++) {
      const pb = b[i].top.find((t: { index: number }) => t.index === a[i].top[j].index).prob;
      assert.ok(Math.abs(a[i].top[j].prob - pb) <= 1e-5, `image ${i} class ${a[i].top[j].index}: ${a[i].top[j].prob} vs ${pb}`);
    }
  }
  refused(['predict', '--model', pre, '--mean', join(data, 'mean.npy'), valImages[0]], /--mean does not apply/);
  refused(['predict', '--model', plain, valImages[0]], /no mean in its metadata: give --mean/);
});

test('validate reports top-1/top-5 error and loss equal to a tfjs evaluation of the same crops', async () => {
  const r = ok(['validate', '--weights', ckpt, '--data', data, '--json', '--batch-size', '5']);
  const result = JSON.parse(r.stdout);
  const human = ok(['validate', '--weights', ckpt, '--data', data]).stdout;
  assert.match(human, /^val: 18 images, top-1 error \d+\.\d\d%, top-5 error \d+\.\d\d%, loss \d+\.\d{4}\n$/);
  const { tf } = await loadTfjs();
  const params = weightsToTensors(tf, spec, weights);
  const index = await readShardIndex(data);
  const set = shardSet(index, 'val', data);
  const mean = await readMeanNpy(join(data, 'mean.npy'));
  let n = 0,
    top1 = 0,
    top5 = 0,
    loss = 0;
  for (const file of set.shards) {
    for (const batch of (await readShard(data, set, file)).batches) {
      const m = batch.shape[0];
      const o = centerOffset(256, 227);
      const crop = cropMirrorSubtract(batch, mean, {
        crop: 227,
        offsetY: new Int32Array(m).fill(o),
        offsetX: new Int32Array(m).fill(o),
        mirror: new Uint8Array(m),
      });
      const x = tf.tensor4d(crop, [m, 3, 227, 227]);
      const logits = tfjsForward(tf, spec, params, x, { training: false });
      const logProb = await tf.logSoftmax(logits).data();
      tf.dispose([x, logits]);
      for (let i = 0; i < m; i++) {
        const row = Array.from(logProb.subarray(i * 6, (i + 1) * 6));
        const order = row
          .map((v, j) => [v, j])
          .sort((p, q) => q[0] - p[0])
          .map((p) => p[1]);
        if (order[0] !== batch.labels[i]) top1++;
        if (!order.slice(0, 5).includes(batch.labels[i])) top5++;
        loss -= row[batch.labels[i]];
        n++;
      }
    }
  }
  tf.dispose(Object.values(params));
  assert.equal(result.images, 18);
  assert.equal(n, 18);
  assert.equal(result.top1Error, top1 / n);
  assert.equal(result.top5Error, top5 / n);
  assert.ok(Math.abs(result.loss - loss / n) <= 1e-4 * Math.max(1, loss / n), `loss ${result.loss} vs tfjs ${loss / n}`);
});

test('export --random-init writes initParameters(spec, seed) of the preset', () => {
  const a = join(root, 'r1.onnx');
  ok(['export', '--random-init', '--seed', '5', '--preset', 'torchvision-alexnet', '--num-classes', '3', '--out', a]);
  const imported = importOnnxWeights(a);
  const expected = alexnetSpec('torchvision-alexnet', { numClasses: 3 });
  assert.deepEqual(imported.spec, expected);
  const init = initParameters(expected, 5);
  for (const p of parameterList(expected)) assert.deepEqual(imported.weights[p.name], init[p.name], p.name);
  assert.equal(readOnnx(a).metadataProps!.find((p) => p.key === META.preset)!.value, 'torchvision-alexnet');
  refused(['export', '--random-init', '--out', join(root, 'r3.onnx')], /--random-init needs --seed/);
  refused(['export', '--out', join(root, 'r3.onnx')], /give --weights <ckpt>/);
  assert.ok(!existsSync(join(root, 'r3.onnx')));
});

test('bad checkpoints: a missing tensor, a mis-shaped tensor, a truncated file: exit 2, the tensor/file named, nothing written', () => {
  const meta = { format: 'alexnet-stream-checkpoint/1', content: 'weights', spec: JSON.stringify(spec) };
  const tensors = Object.fromEntries(parameterList(spec).map((p) => [p.name, { dtype: 'F32' as const, shape: p.shape, data: weights[p.name] }]));
  const { 'fc8.bias': _gone, ...missing } = tensors;
  writeFileSync(join(root, 'missing.safetensors'), encodeSafetensors(missing, meta));
  const shapes = { ...tensors, 'conv2.weight': { dtype: 'F32' as const, shape: [32, 6, 25], data: weights['conv2.weight'] } };
  writeFileSync(join(root, 'misshaped.safetensors'), encodeSafetensors(shapes, meta));
  const whole = encodeSafetensors(tensors, meta);
  writeFileSync(join(root, 'cut.safetensors'), whole.subarray(0, whole.length - 100));
  const out = join(root, 'never.onnx');
  refused(['export', '--weights', join(root, 'missing.safetensors'), '--out', out], /missing\.safetensors.*missing fc8\.bias/);
  refused(['export', '--weights', join(root, 'misshaped.safetensors'), '--out', out], /misshaped\.safetensors.*conv2\.weight has shape \[32, 6, 25\]/);
  refused(['export', '--weights', join(root, 'cut.safetensors'), '--out', out], /cut\.safetensors/);
  refused(['validate', '--weights', join(root, 'cut.safetensors'), '--data', data], /cut\.safetensors/);
  assert.ok(!existsSync(out));
  assert.deepEqual(
    readdirSync(root).filter((f) => f.includes('never') || f.endsWith('.tmp')),
    [],
  );
});

test('a truncated .onnx and an ONNX model of another architecture: exit 2, named, nothing written', () => {
  const whole = readFileSync(plainModel());
  const cut = join(root, 'cut.onnx');
  writeFileSync(cut, whole.subarray(0, whole.length >> 1));
  refused(['predict', '--model', cut, valImages[0]], /cut\.onnx: not a readable ONNX model/);
  refused(['import', cut, '--from', 'onnx', '--out', join(root, 'never-ckpt')], /cut\.onnx: not a readable ONNX model/);
  // conv -> relu -> conv -> global average pool -> fc: a CNN, not an AlexNet.
  const g = new GraphBuilder('other');
  let x = g.input('x', 'float32', ['N', 3, 32, 32]);
  x = g.op('Relu', [
    g.op('Conv', [x, g.initializer('c.w', new Float32Array(16 * 27), [16, 3, 3, 3]), g.initializer('c.b', new Float32Array(16), [16])], {
      kernel_shape: ints([3, 3]),
      pads: ints([1, 1, 1, 1]),
    }),
  ]);
  x = g.op('Conv', [x, g.initializer('d.w', new Float32Array(16 * 16 * 9), [16, 16, 3, 3]), g.initializer('d.b', new Float32Array(16), [16])], {
    kernel_shape: ints([3, 3]),
  });
  x = g.op('Flatten', [g.op('GlobalAveragePool', [x])], { axis: int(1) });
  g.output(
    g.op('Gemm', [x, g.initializer('f.w', new Float32Array(160), [10, 16]), g.initializer('f.b', new Float32Array(10), [10])], { transB: int(1) }),
    'float32',
    ['N', 10],
  );
  const other = join(root, 'other.onnx');
  writeOnnx(other, g.model());
  refused(['import', other, '--from', 'onnx', '--out', join(root, 'never-ckpt')], /other\.onnx: .*not an AlexNet layer/);
  refused(['predict', '--model', other, valImages[0]], /other\.onnx: no alexnet-stream model spec in the metadata/);
  assert.ok(!existsSync(join(root, 'never-ckpt')));
});

test('predict with non-image arguments: missing files refused up front; undecodable files skipped, named, exit 2', () => {
  const model = plainModel();
  const up = refused(
    ['predict', '--model', model, valImages[0], join(root, 'no-such.jpg'), demo],
    /not image files: .*no-such\.jpg \(no such file\).*demo \(not a file\)/,
  );
  assert.equal(up.stdout, '', 'nothing printed');
  const text = join(root, 'notes.jpg');
  writeFileSync(text, 'this is text, not a JPEG\n');
  const truncated = join(root, 'truncated.jpg');
  writeFileSync(truncated, readFileSync(valImages[1]).subarray(0, 600));
  const r = refused(['predict', '--model', model, '--json', valImages[0], text, truncated, valImages[2]], /skipped .*notes\.jpg: not an image/);
  // The reason depends on where libjpeg notices the cut ("truncated or corrupt", sometimes less specific): the file must be named.
  assert.match(r.stderr, /skipped .*truncated\.jpg: /);
  assert.match(r.stderr, /2 of 4 files were not decodable images/);
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    lines.map((l) => l.path),
    [valImages[0], valImages[2]],
  );
});
