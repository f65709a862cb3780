import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firstNonFinite, float32View } from './finite';

test('firstNonFinite: the first NaN or infinity at any position (the unrolled sum and its tail), none in large finite tensors', () => {
  for (const n of [0, 1, 7, 8, 9, 17, 1000]) {
    const v = new Float32Array(n).map((_, i) => Math.sin(i) * 1e3);
    assert.equal(firstNonFinite(v), -1, `${n} finite values`);
    for (const at of new Set([0, Math.floor(n / 2), n - 1].filter((k) => k >= 0 && k < n))) {
      for (const bad of [Number.NaN, Infinity, -Infinity]) {
        const w = v.slice();
        w[at] = bad;
        assert.equal(firstNonFinite(w), at, `${bad} at ${at} of ${n}`);
      }
    }
  }
  // +inf and -inf together (their sum is NaN, still found), the first one named.
  const both = new Float32Array(64);
  both[40] = Infinity;
  both[41] = -Infinity;
  assert.equal(firstNonFinite(both), 40);
  // The largest finite float32s, many of them: the float64 sum does not overflow.
  assert.equal(firstNonFinite(new Float32Array(200_000).fill(3.4028234663852886e38)), -1);
  assert.equal(firstNonFinite(new Float32Array(200_000).fill(-3.4028234663852886e38)), -1);
  // Float64 values whose sum overflows although each is finite: the exact scan answers.
  assert.equal(firstNonFinite(new Float64Array(16).fill(1.7e308)), -1);
  const f64 = new Float64Array(16).fill(1.7e308);
  f64[9] = Number.NaN;
  assert.equal(firstNonFinite(f64), 9);
  // Unaligned bytes are copied by float32View.
  const raw = new Uint8Array(4 * 10 + 1);
  new DataView(raw.buffer).setFloat32(1 + 4 * 3, Number.NaN, true);
  const view = float32View(raw.subarray(1));
  assert.equal(view.length, 10);
  assert.equal(firstNonFinite(view), 3);
});
