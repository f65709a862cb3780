import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { alexnetSpec } from './presets';
import { parameterList } from './spec';
import { initParameters, parameterSeed, reinitParameters } from './init';

const sha256 = (a: Float32Array) =>
  createHash('sha256')
    .update(Buffer.from(a.buffer, a.byteOffset, a.byteLength))
    .digest('hex');

function moments(a: Float32Array): { mean: number; std: number; min: number; max: number } {
  let sum = 0,
    min = Infinity,
    max = -Infinity;
  for (const v of a) {
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const mean = sum / a.length;
  let ss = 0;
  for (const v of a) ss += (v - mean) ** 2;
  return { mean, std: Math.sqrt(ss / a.length), min, max };
}

const CONV1_SHA256 = '2c22e872deb1255308ca39a433acf913605b2f9567c55f98336e685a5e261c1e';
const small = alexnetSpec('theano-alexnet', { numClasses: 10, inputSize: 67 });

// One full init (~20M values, ~1 s) shared by the tests that only read it.
const shared = initParameters(small, 1234);
const only = (names: string[], seed: number) => reinitParameters(small, {}, names, seed);

test('initParameters gives every parameter of parameterList, in order, with the right sizes', () => {
  const w = shared;
  const params = parameterList(small);
  assert.deepEqual(
    Object.keys(w),
    params.map((p) => p.name),
  );
  for (const p of params)
    assert.equal(
      w[p.name].length,
      p.shape.reduce((a, b) => a * b, 1),
      p.name,
    );
});

test('same seed -> same bytes (a constant fixed in this test); another seed differs', () => {
  const a = shared;
  // Computed once from this implementation (xoshiro128** + Box-Muller, FNV-1a name seeds).
  // Rng is integer-exact and V8 computes Math.log/sin/cos with its own fdlibm port (not the
  // platform libm), so every platform gives these bytes. If this fails, initial weights changed.
  assert.equal(sha256(a['conv1.weight']), CONV1_SHA256);
  assert.equal(sha256(only(['conv1.weight'], 1234)['conv1.weight']), CONV1_SHA256);
  assert.notEqual(sha256(only(['conv1.weight'], 1235)['conv1.weight']), CONV1_SHA256);
});

test("a parameter's values do not depend on other layers (seeded by name)", () => {
  const a = shared;
  // Different class count and no LRN/dropout layers: the layer list differs, shared names do not.
  const other = initParameters(alexnetSpec('theano-alexnet', { numClasses: 37, inputSize: 67, lrn: false, dropout: 0 }), 1234);
  assert.equal(sha256(other['conv1.weight']), sha256(a['conv1.weight']));
  assert.equal(sha256(other['conv3.weight']), sha256(a['conv3.weight']));
  assert.equal(sha256(other['fc7.weight']), sha256(a['fc7.weight']));
  assert.notEqual(parameterSeed(7, 'conv1.weight'), parameterSeed(7, 'conv2.weight'));
});

test('normal init moments: N(0, 0.01) conv1 and N(0, 0.005) fc7; constant biases', () => {
  const w = shared;
  // n = 34848 (conv1) / 16.7M (fc7). Sample std has relative standard error 1/sqrt(2n) < 0.4%,
  // the mean a standard error std/sqrt(n) (5.4e-5 for conv1): bounds of 3% and 5e-4 are > 8 sigma.
  const c1 = moments(w['conv1.weight']);
  assert.ok(Math.abs(c1.mean) < 5e-4, `conv1 mean ${c1.mean}`);
  assert.ok(Math.abs(c1.std / 0.01 - 1) < 0.03, `conv1 std ${c1.std}`);
  const f7 = moments(w['fc7.weight']);
  assert.ok(Math.abs(f7.mean) < 1e-5, `fc7 mean ${f7.mean}`);
  assert.ok(Math.abs(f7.std / 0.005 - 1) < 0.003, `fc7 std ${f7.std}`);
  assert.ok(w['conv2.bias'].every((v) => v === Math.fround(0.1)));
  assert.ok(w['conv1.bias'].every((v) => v === 0));
  assert.ok(w['fc6.bias'].every((v) => v === Math.fround(0.1)));
});

test('fan-in-uniform (torchvision preset) stays within ±1/sqrt(fan_in) and has variance bound²/3', () => {
  const spec = alexnetSpec('torchvision-alexnet', { numClasses: 10, inputSize: 63 });
  const w = initParameters(spec, 3);
  for (const [name, fanIn] of [
    ['conv1.weight', 3 * 11 * 11],
    ['conv2.weight', 64 * 25],
    ['conv2.bias', 64 * 25],
  ] as const) {
    const bound = 1 / Math.sqrt(fanIn);
    const m = moments(w[name]);
    assert.ok(m.min >= -bound && m.max <= bound, `${name} within ±${bound}: [${m.min}, ${m.max}]`);
    if (w[name].length > 10000) {
      // U(-b, b): std b/sqrt(3); n >= 23232, relative standard error of the std < 0.3%: 3% bound.
      assert.ok(Math.abs(m.std / (bound / Math.sqrt(3)) - 1) < 0.03, `${name} std ${m.std}`);
      assert.ok(m.max > 0.99 * bound && m.min < -0.99 * bound, `${name} covers the range`);
    }
  }
});

test('init kaiming: conv1 keeps N(0, 0.01), the layers after it N(0, 2/fan_in), the classifier N(0, 1/fan_in); biases unchanged', () => {
  const spec = alexnetSpec('theano-alexnet', { numClasses: 10, inputSize: 67, init: 'kaiming' });
  const w = initParameters(spec, 5);
  // fan_in: in/group · k² for conv, the flattened input for fc (256·1·1 at 67: pool5 is 1x1)
  const want: [string, number][] = [
    ['conv1.weight', 0.01],
    ['conv2.weight', Math.sqrt(2 / (48 * 25))],
    ['conv3.weight', Math.sqrt(2 / (256 * 9))],
    ['conv5.weight', Math.sqrt(2 / (192 * 9))],
    ['fc6.weight', Math.sqrt(2 / 256)],
    ['fc7.weight', Math.sqrt(2 / 4096)],
    ['fc8.weight', Math.sqrt(1 / 4096)],
  ];
  for (const [name, std] of want) {
    // n >= 34848 values: the sample std's relative standard error is < 0.4%; 3% is > 7 sigma.
    const m = moments(w[name]);
    assert.ok(Math.abs(m.std / std - 1) < 0.03, `${name}: std ${m.std}, expected ${std}`);
    assert.ok(Math.abs(m.mean) < 0.03 * std, `${name}: mean ${m.mean}`);
  }
  assert.deepEqual(w['conv1.weight'], only(['conv1'], 5)['conv1.weight'], "conv1: the preset's values, bit for bit");
  assert.ok(w['conv2.bias'].every((v) => v === Math.fround(0.1)));
  assert.throws(
    () => alexnetSpec('theano-alexnet', { init: 'xavier' as never }),
    /Expected one of preset, kaiming, kaiming-all for init but received "xavier"/,
  );
});

test('init kaiming-all: He-normal in conv1 too (for inputs of unit scale); every later layer as kaiming', () => {
  const all = initParameters(alexnetSpec('theano-alexnet', { numClasses: 10, inputSize: 67, init: 'kaiming-all' }), 5);
  const kaiming = initParameters(alexnetSpec('theano-alexnet', { numClasses: 10, inputSize: 67, init: 'kaiming' }), 5);
  // conv1: fan_in 3·11·11 = 363; n = 34848 values, relative standard error of the std < 0.4%: 3% bound.
  const m = moments(all['conv1.weight']);
  assert.ok(Math.abs(m.std / Math.sqrt(2 / 363) - 1) < 0.03, `conv1.weight: std ${m.std}, expected ${Math.sqrt(2 / 363)}`);
  for (const name of ['conv2.weight', 'conv5.weight', 'fc6.weight', 'fc8.weight', 'conv1.bias', 'fc6.bias']) {
    assert.deepEqual(all[name], kaiming[name], `${name}: as init kaiming, bit for bit`);
  }
});

test("reinitParameters replaces only the named layer, with the spec's shape, as initParameters would", () => {
  const spec5 = alexnetSpec('theano-alexnet', { numClasses: 5, inputSize: 67 });
  const w = { ...only(['conv1', 'fc8'], 9) };
  const conv1 = w['conv1.weight'];
  const out = reinitParameters(spec5, w, ['fc8'], 9);
  assert.equal(out, w);
  assert.equal(w['conv1.weight'], conv1);
  const fresh = reinitParameters(spec5, {}, ['fc8'], 9);
  assert.equal(w['fc8.weight'].length, 5 * 4096);
  assert.deepEqual(w['fc8.weight'], fresh['fc8.weight']);
  assert.deepEqual(w['fc8.bias'], fresh['fc8.bias']);
  assert.throws(
    () => reinitParameters(spec5, w, ['fc9'], 9),
    /Expected parameter or layer names of the theano-alexnet spec \(conv1.weight, .*\) for names but received "fc9"/,
  );
});
