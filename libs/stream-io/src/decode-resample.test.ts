import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import sharp from 'sharp';
import { axisTable, resampleRgbToChw, resampleRgbToChwJs, resizeTables } from './decode-resample';
import { resampleRgbToChwWasm } from './decode-resample-wasm';

/** A smooth, photo-like interleaved RGB test image (no noise: resampling differences show). */
function photo(width: number, height: number): Uint8Array {
  const px = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        const v = 128 + 60 * Math.sin(x * 0.07 + c) + 50 * Math.cos(y * 0.05 - c) + 20 * Math.sin((x + y) * 0.3);
        px[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  }
  return px;
}

const pseudoRandom = (length: number) => Uint8Array.from({ length }, (_, i) => (i * 7919 + (i >> 7) * 13 + ((i * i) >> 3)) & 255);

test('axisTable: weights of a 4 → 2 reduction are the hand-computed triangle taps', () => {
  // scale 2: the triangle widens to radius 2. Output 0 is centred at 1.0 (edge coordinates) and
  // reads pixels 0..2, centres 0.5, 1.5, 2.5: distances 0.5, 0.5, 1.5 → 1 - d/2 = 3/4, 3/4, 1/4,
  // normalised 3/7, 3/7, 1/7. Output 1 (centre 3.0) reads 1..3: 1/7, 3/7, 3/7.
  const t = axisTable(4, 2);
  assert.equal(t.taps, 3);
  assert.deepEqual([...t.starts], [0, 1]);
  const one = 2 ** 14;
  const expected = [3 / 7, 3 / 7, 1 / 7, 1 / 7, 3 / 7, 3 / 7].map((w) => Math.floor(w * one + 0.5));
  assert.deepEqual([...t.weights], expected);
});

test('resample: a 4x1 image reduced to 2x1 equals the hand-computed sums, per channel, in planes', () => {
  // red 0, 70, 140, 210: (0·3 + 70·3 + 140·1)/7 = 50 and (70·1 + 140·3 + 210·3)/7 = 160;
  // green = 255 - red: 205 and 95; blue constant 9.
  const hwc = Uint8Array.from([0, 255, 9, 70, 185, 9, 140, 115, 9, 210, 45, 9]);
  const xs = axisTable(4, 2),
    ys = axisTable(1, 1);
  for (const out of [resampleRgbToChwJs(hwc, 4, xs, ys), resampleRgbToChw(hwc, 4, xs, ys)]) assert.deepEqual([...out], [50, 160, 205, 95, 9, 9]);
});

test('resample to the same size is the identity (transposed to planes)', () => {
  const square = pseudoRandom(12 * 12 * 3);
  const { xs, ys } = resizeTables(12, 12, 12, 'squash');
  const out = resampleRgbToChw(square, 12, xs, ys);
  for (let i = 0; i < 144; i++) for (let c = 0; c < 3; c++) assert.equal(out[c * 144 + i], square[i * 3 + c]);
});

test('decode-resample-wasm.generated.ts is what decode-resample.wat assembles to', (t) => {
  try {
    require.resolve('wabt');
  } catch {
    t.skip('wabt (a devDependency) is not installed');
    return;
  }
  const script = join(__dirname, '..', 'scripts', 'build-wasm.mjs');
  const result = spawnSync(process.execPath, [script, '--check'], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
});

test('a 1-px checker in 2x2 blocks squashed by 2 gives the hand-computed 0.625 / 0.375 mix', () => {
  // per axis taps 1/8, 3/8, 3/8, 1/8: own block 3/4, each neighbour 1/8; separably the own colour
  // gets 3/4·3/4 + 1/4·1/4 = 0.625 → 159.4 and the other 0.375 → 95.6 (interior pixels;
  // ±1 for the 8-bit rounding between the passes)
  const n = 64;
  const hwc = new Uint8Array(n * n * 3);
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) hwc.fill(((x >> 1) + (y >> 1)) % 2 ? 255 : 0, (y * n + x) * 3, (y * n + x) * 3 + 3);
  const { xs, ys } = resizeTables(n, n, n / 2, 'squash');
  const out = resampleRgbToChw(hwc, n, xs, ys);
  for (let y = 1; y < n / 2 - 1; y++) {
    for (let x = 1; x < n / 2 - 1; x++) {
      const expected = (x + y) % 2 ? 255 * 0.625 : 255 * 0.375;
      assert.ok(Math.abs(out[y * (n / 2) + x] - expected) <= 1, `(${x},${y}) = ${out[y * (n / 2) + x]}, expected ${expected}`);
    }
  }
});

test('the WebAssembly kernels give exactly the bytes of the JS loops (tap counts 1-7, odd row lengths, crops)', () => {
  const cases: Array<[number, number, number, 'squash' | 'center-crop']> = [
    [500, 375, 256, 'squash'],
    [375, 500, 256, 'center-crop'],
    [500, 333, 256, 'center-crop'],
    [7, 5, 16, 'squash'],
    [6, 9, 4, 'squash'],
    [700, 700, 256, 'squash'],
    [100, 80, 256, 'squash'],
    [33, 17, 8, 'center-crop'],
  ];
  for (const [w, h, size, mode] of cases) {
    const hwc = pseudoRandom(w * h * 3);
    const { xs, ys } = resizeTables(w, h, size, mode);
    const wasm = resampleRgbToChwWasm(hwc, w, xs, ys, new Uint8Array(3 * size * size));
    assert.ok(wasm, 'WebAssembly SIMD runs in Node 20');
    assert.deepEqual(wasm, resampleRgbToChwJs(hwc, w, xs, ys), `${w}x${h} → ${size} ${mode}`);
  }
  // rows under one 16-byte block: the kernels decline, resampleRgbToChw falls back to JS
  const narrow = pseudoRandom(5 * 9 * 3);
  const { xs, ys } = resizeTables(5, 9, 4, 'squash');
  assert.equal(resampleRgbToChwWasm(narrow, 5, xs, ys, new Uint8Array(48)), undefined);
  assert.deepEqual(resampleRgbToChw(narrow, 5, xs, ys), resampleRgbToChwJs(narrow, 5, xs, ys));
});

test('squash and center-crop agree with sharp/libvips (kernel linear) when reducing', async () => {
  // Same triangle filter; libvips differs in its internal rounding (it keeps more precision
  // between passes and orders them differently). Measured on this image: max 3, mean 0.09-0.17
  // levels. Tolerance: max 4 levels, mean 0.3.
  for (const [w, h, size, mode] of [
    [300, 200, 128, 'squash'],
    [200, 300, 128, 'center-crop'],
    [300, 200, 128, 'center-crop'],
    [640, 480, 256, 'squash'],
  ] as const) {
    const hwc = photo(w, h);
    const { xs, ys } = resizeTables(w, h, size, mode);
    const ours = resampleRgbToChw(hwc, w, xs, ys);
    const fit = mode === 'squash' ? 'fill' : 'cover';
    const ref = await sharp(Buffer.from(hwc), { raw: { width: w, height: h, channels: 3 } })
      .resize(size, size, { fit, kernel: 'linear' })
      .raw()
      .toBuffer();
    let max = 0,
      sum = 0;
    for (let i = 0; i < size * size; i++) {
      for (let c = 0; c < 3; c++) {
        const e = Math.abs(ours[c * size * size + i] - ref[i * 3 + c]);
        max = Math.max(max, e);
        sum += e;
      }
    }
    assert.ok(max <= 4 && sum / (3 * size * size) <= 0.3, `${w}x${h} → ${size} ${mode}: max ${max}, mean ${(sum / (3 * size * size)).toFixed(3)}`);
  }
});
