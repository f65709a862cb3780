/**
 * Importing the seed's weight files (theano_alexnet `save_weights` layout) end to end: a known
 * model is written in the seed's exact layout, partly by the library's writer and partly by
 * explicit index loops here (c01b + spatial flip spelled out, independent of the library), then
 * imported (library and CLI) and compared bit for bit, through a checkpoint save/load too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { decodeNpy, encodeNpy, type NamedTensors } from '@alexnet-stream/core';
import {
  alexnetSpec,
  exportTheanoNpy,
  importTheanoNpy,
  initParameters,
  loadCheckpoint,
  parameterList,
  saveCheckpoint,
  theanoEpochs,
} from '@alexnet-stream/model-alexnet';
import { lowerInference, writeOnnx } from '@alexnet-stream/onnx-export';

const CLI = resolve(__dirname, '../../apps/cli/bin/alexnet-stream.js');
// theano-alexnet at input 67 (conv1 15x15 → pool5 1x1, fc6 256 → 4096) and 10 classes: every
// layer and group of the real model at a quarter of its size (~21M parameters).
const spec = alexnetSpec('theano-alexnet', { numClasses: 10, inputSize: 67 });
const known = initParameters(spec, 2026);
// Make every value distinct from its neighbours so a wrong index cannot go unnoticed: biases are
// constants in the init rules, so give them distinct values too.
for (const p of parameterList(spec)) if (p.role === 'bias') known[p.name] = known[p.name].map((_, i) => 0.001 * (i + 1) * ((p.name.length % 7) + 1));
const EPOCH = 3;

const root = mkdtempSync(join(tmpdir(), 'import-theano-'));
const seedDir = join(root, 'seed-weights');
const bytesEqual = (a: Float32Array, b: Float32Array) =>
  a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

function assertSameWeights(actual: NamedTensors, expected: NamedTensors, what: string) {
  assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), what);
  for (const name of Object.keys(expected)) assert.ok(bytesEqual(actual[name], expected[name]), `${what}: ${name} differs`);
}

/**
 * The seed's grouped conv file W{g}_{i}_{N}.npy by hand: c01b (in/2, kh, kw, out/2), value at
 * [c, y, x, o] = our OIHW weight [g·out/2 + o, c, kh-1-y, kw-1-x] (Theano's cuDNN dnn_conv is a true
 * convolution, so its kernel is ours rotated by 180 degrees).
 */
function handMadeGroupedConv(name: string, g: number): { data: Float32Array; shape: number[] } {
  const info = parameterList(spec).find((p) => p.name === name)!;
  const [outAll, inPer, kh, kw] = info.shape;
  const outPer = outAll / 2;
  const w = known[name];
  const data = new Float32Array(inPer * kh * kw * outPer);
  let n = 0;
  for (let c = 0; c < inPer; c++)
    for (let y = 0; y < kh; y++)
      for (let x = 0; x < kw; x++)
        for (let o = 0; o < outPer; o++) {
          const oo = g * outPer + o,
            yy = kh - 1 - y,
            xx = kw - 1 - x;
          data[n++] = w[((oo * inPer + c) * kh + yy) * kw + xx];
        }
  return { data, shape: [inPer, kh, kw, outPer] };
}

/** The seed's fc file W_i_N.npy by hand: (n_in, n_out), value at [i, o] = ours [o, i]. */
function handMadeFc(name: string): { data: Float32Array; shape: number[] } {
  const [out, inn] = parameterList(spec).find((p) => p.name === name)!.shape;
  const data = new Float32Array(inn * out);
  for (let i = 0; i < inn; i++) for (let o = 0; o < out; o++) data[i * out + o] = known[name][o * inn + i];
  return { data, shape: [inn, out] };
}

test.after(() => rmSync(root, { recursive: true, force: true }));

test("seed layout: the writer makes exactly the seed's files, and hand-made files agree byte for byte", () => {
  exportTheanoNpy(spec, known, seedDir, EPOCH);
  assert.deepEqual(theanoEpochs(seedDir), [EPOCH]);
  // Layer indices 0-7: conv1, conv2 (grouped), conv3, conv4 (grouped), conv5 (grouped), fc6, fc7, softmax.
  for (const f of ['W_0', 'b_0', 'W0_1', 'W1_1', 'b0_1', 'b1_1', 'W_2', 'b_2', 'W0_3', 'W1_3', 'W0_4', 'W1_4', 'W_5', 'b_5', 'W_6', 'W_7', 'b_7']) {
    assert.ok(existsSync(join(seedDir, `${f}_${EPOCH}.npy`)), f);
  }
  assert.ok(!existsSync(join(seedDir, `W_1_${EPOCH}.npy`)), 'a grouped layer has no W_i file');
  // Replace conv2's and conv5's halves and fc6 with files made by the loops above.
  const handMade: [string, { data: Float32Array; shape: number[] }][] = [
    [`W0_1_${EPOCH}.npy`, handMadeGroupedConv('conv2.weight', 0)],
    [`W1_1_${EPOCH}.npy`, handMadeGroupedConv('conv2.weight', 1)],
    [`W1_4_${EPOCH}.npy`, handMadeGroupedConv('conv5.weight', 1)],
    [`W_5_${EPOCH}.npy`, handMadeFc('fc6.weight')],
    [`b1_1_${EPOCH}.npy`, { data: known['conv2.bias'].slice(128), shape: [128] }],
  ];
  for (const [file, { data, shape }] of handMade) {
    const bytes = encodeNpy(data, shape);
    assert.deepEqual(readFileSync(join(seedDir, file)), bytes, `${file}: the library's file equals the hand-made one`);
    writeFileSync(join(seedDir, file), bytes);
  }
  assert.deepEqual(decodeNpy(readFileSync(join(seedDir, `W0_1_${EPOCH}.npy`))).shape, [48, 5, 5, 128]);
});

test("the flip: the seed's true convolution with its c01b kernel equals our cross-correlation with the imported OIHW kernel", () => {
  // One output of conv2 group 1 on a random input patch, both ways, from the definitions:
  // true convolution (valid): out[p] = Σ_m in[p + m] · k[K-1-m]; cross-correlation: Σ_m in[p + m] · w[m].
  const imported = importTheanoNpy(seedDir, EPOCH, spec);
  const seedKernel = decodeNpy(readFileSync(join(seedDir, `W1_1_${EPOCH}.npy`))).data as Float32Array; // (48, 5, 5, 128)
  const input = Float32Array.from({ length: 48 * 5 * 5 }, (_, i) => Math.sin(i * 1.7)); // [c, y, x] patch
  for (const o of [0, 77, 127]) {
    let trueConv = 0;
    let crossCorr = 0;
    for (let c = 0; c < 48; c++)
      for (let u = 0; u < 5; u++)
        for (let v = 0; v < 5; v++) {
          const x = input[(c * 5 + u) * 5 + v];
          trueConv += x * seedKernel[((c * 5 + (4 - u)) * 5 + (4 - v)) * 128 + o];
          crossCorr += x * imported['conv2.weight'][(((128 + o) * 48 + c) * 5 + u) * 5 + v];
        }
    assert.equal(crossCorr, trueConv, `output channel ${128 + o}`); // same products, same order: exact
  }
});

test('import is bit-exact, and import -> save -> load keeps every bit', () => {
  const imported = importTheanoNpy(seedDir, EPOCH, spec);
  assertSameWeights(imported, known, 'imported');
  const dir = saveCheckpoint(join(root, 'lib-ckpt', 'epoch-0003'), { spec, weights: imported, state: { epoch: EPOCH } });
  const loaded = loadCheckpoint(dir, spec);
  assertSameWeights(loaded.weights, known, 'loaded');
  assert.deepEqual(loaded.spec, spec);
  // --no-flip reads the same files as cross-correlation kernels: conv weights differ, fc equal.
  const unflipped = importTheanoNpy(seedDir, EPOCH, spec, { flip: false });
  assert.ok(!bytesEqual(unflipped['conv1.weight'], known['conv1.weight']));
  assert.ok(bytesEqual(unflipped['fc6.weight'], known['fc6.weight']));
});

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
}

test('CLI import --from theano-npy writes a checkpoint (classes from b_7) and the mean image', () => {
  // The seed's img_mean.npy, here written HWC (256, 256, 3) as float64 to exercise the conversion;
  // 67x67, the smallest a model of input 67 takes (import checks S >= the input size).
  const h = 67,
    w = 67;
  const hwc = Float64Array.from({ length: h * w * 3 }, (_, i) => i + 0.5);
  writeFileSync(join(root, 'img_mean.npy'), encodeNpy(hwc, [h, w, 3]));
  const out = join(root, 'cli-ckpt', 'epoch-0003');
  const r = cli([
    'import',
    seedDir,
    '--from',
    'theano-npy',
    '--epoch',
    String(EPOCH),
    '--input-size',
    '67',
    '--out',
    out,
    '--mean',
    join(root, 'img_mean.npy'),
    '--mean-out',
    join(root, 'mean.npy'),
  ]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /theano-alexnet, 10 classes, input 67/);
  assert.match(r.stderr, /kernels flipped/);
  assert.match(r.stderr, /HWC and transposed/);
  const loaded = loadCheckpoint(out);
  assert.deepEqual(loaded.spec, spec);
  assert.equal(loaded.state.epoch, EPOCH);
  assertSameWeights(loaded.weights, known, 'CLI checkpoint');
  const mean = decodeNpy(readFileSync(join(root, 'mean.npy')));
  assert.equal(mean.dtype, 'float32');
  assert.deepEqual(mean.shape, [3, h, w]);
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        assert.equal((mean.data as Float32Array)[(c * h + y) * w + x], hwc[(y * w + x) * 3 + c]);
      }
  // An existing --out is not replaced without --force.
  const again = cli(['import', seedDir, '--from', 'theano-npy', '--epoch', String(EPOCH), '--input-size', '67', '--out', out]);
  assert.equal(again.status, 2);
  assert.match(again.stderr, /exists; .*--force/);
});

test('CLI import: bad input is a clear message naming the file, exit 2, nothing written', () => {
  const out = join(root, 'bad-ckpt');
  const base = ['import', seedDir, '--from', 'theano-npy', '--input-size', '67', '--out', out];
  const expectFailure = (args: string[], message: RegExp) => {
    const r = cli(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.ok(!existsSync(out), 'nothing written');
  };
  const file = (name: string) => join(seedDir, `${name}_${EPOCH}.npy`);
  const saved = join(root, 'saved.npy');

  expectFailure([...base, '--epoch', '9'], /seed-weights: no weights of epoch 9 \(W_0_9.npy or W0_0_9.npy\); epochs found there: 3/);
  expectFailure(base, /needs --epoch N \(epochs found in .*: 3\)/);
  expectFailure([...base.slice(0, 3), 'caffe', ...base.slice(4), '--epoch', '3'], /Expected one of theano-npy, onnx for --from but received "caffe"/);

  copyFileSync(file('b0_3'), saved);
  unlinkSync(file('b0_3'));
  expectFailure([...base, '--epoch', '3'], /b0_3_3.npy: missing; epochs found there: 3/);
  writeFileSync(file('b0_3'), encodeNpy(new Float32Array(191), [191]));
  expectFailure([...base, '--epoch', '3'], /b0_3_3.npy: shape \(191\), but conv4.bias of the theano-alexnet, 10 classes, input 67 model needs \(192\)/);
  copyFileSync(saved, file('b0_3'));

  copyFileSync(file('W0_3'), saved);
  const good = readFileSync(saved);
  writeFileSync(file('W0_3'), good.subarray(0, good.length - 100));
  expectFailure([...base, '--epoch', '3'], /W0_3_3.npy: truncated/);
  copyFileSync(saved, file('W0_3'));

  expectFailure([...base, '--epoch', '3', '--num-classes', '12'], /W_7_3.npy: shape \(4096, 10\), but fc8.weight .* needs \(4096, 12\) \(n_in, n_out\)/);
  expectFailure([...base, '--epoch', '3', '--mean', join(root, 'no-such-mean.npy')], /no-such-mean.npy: cannot read the mean image: no such file/);
  expectFailure([...base, '--epoch', '3', '--mean-out', 'm.npy'], /--mean-out needs --mean/);
  // The repaired folder imports again.
  assertSameWeights(importTheanoNpy(seedDir, EPOCH, spec), known, 'after repair');
});

test("CLI import --from onnx dispatches to onnx-export's importer", () => {
  const onnxPath = join(root, 'model.onnx');
  writeOnnx(onnxPath, lowerInference(spec, known));
  const out = join(root, 'onnx-ckpt');
  const r = cli(['import', onnxPath, '--from', 'onnx', '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  const loaded = loadCheckpoint(out);
  assert.equal(loaded.spec.numClasses, 10);
  assertSameWeights(loaded.weights, known, 'onnx import');
  const bad = cli(['import', join(root, 'img_mean.npy'), '--from', 'onnx', '--out', join(root, 'x')]);
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /img_mean.npy/);
  const wrongFlag = cli(['import', onnxPath, '--from', 'onnx', '--epoch', '1', '--out', join(root, 'x')]);
  assert.equal(wrongFlag.status, 2);
  assert.match(wrongFlag.stderr, /--epoch does not apply to --from onnx/);
});
