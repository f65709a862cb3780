import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { addHalfInto, decodeHalfInto, encodeHalf, float16ToFloat32, floatBitsToHalf, roundToHalfInPlace } from './fp16';

const bitsOf = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0];
const half = (x: number) => floatBitsToHalf(bitsOf(x));

describe('float16 conversion', () => {
  it('float16ToFloat32 handles subnormals, zero and NaN', () => {
    const out = float16ToFloat32(new Uint16Array([0x0001, 0x8000, 0x7e00, 0x3555, 0x7bff]));
    assert.equal(out[0], 2 ** -24);
    assert.ok(Object.is(out[1], -0));
    assert.ok(Number.isNaN(out[2]));
    assert.equal(out[3], 0.333251953125);
    assert.equal(out[4], 65504);
  });

  it('encodes known values (IEEE 754 binary16 table)', () => {
    assert.equal(half(0), 0x0000);
    assert.equal(half(-0), 0x8000);
    assert.equal(half(1), 0x3c00);
    assert.equal(half(-2), 0xc000);
    assert.equal(half(65504), 0x7bff); // largest finite
    assert.equal(half(65520), 0x7c00); // rounds up to Inf
    assert.equal(half(1e6), 0x7c00);
    assert.equal(half(Infinity), 0x7c00);
    assert.equal(half(NaN) & 0x7c00, 0x7c00);
    assert.ok(half(NaN) & 0x3ff);
    assert.equal(half(2 ** -24), 0x0001); // smallest subnormal
    assert.equal(half(2 ** -14), 0x0400); // smallest normal
    assert.equal(half(2 ** -26), 0x0000); // below half the smallest subnormal
    assert.equal(half(1 / 3), 0x3555);
  });

  it('rounds to nearest, ties to even', () => {
    // 1 + 2^-11 is exactly between 1 (0x3c00, even) and 1 + 2^-10 (0x3c01): → even.
    assert.equal(half(1 + 2 ** -11), 0x3c00);
    // 1 + 3·2^-11 is between 0x3c01 (odd) and 0x3c02 (even): → 0x3c02.
    assert.equal(half(1 + 3 * 2 ** -11), 0x3c02);
    assert.equal(half(1 + 2 ** -11 + 2 ** -20), 0x3c01); // above the tie: up
    // Subnormal tie: 1.5 · 2^-24 → 2 · 2^-24 (even), 2.5 · 2^-24 → 2 · 2^-24.
    assert.equal(half(1.5 * 2 ** -24), 0x0002);
    assert.equal(half(2.5 * 2 ** -24), 0x0002);
  });

  it('round-trips every finite float16 exactly and decodes, adds and rounds consistently', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const floats = new Float32Array(65536);
    decodeHalfInto(all, floats);
    const back = encodeHalf(floats);
    for (let h = 0; h < 65536; h++) {
      const nan = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (!nan) assert.equal(back[h], h, `0x${h.toString(16)}`);
    }
    const values = new Float32Array([0.1, -Math.PI, 1234.5678, 1e-6]);
    const rounded = values.slice();
    roundToHalfInPlace(rounded);
    const acc = new Float32Array(4).fill(1);
    addHalfInto(encodeHalf(values), acc);
    for (let i = 0; i < 4; i++) {
      assert.ok(Math.abs(rounded[i] - values[i]) <= Math.abs(values[i]) * 2 ** -11 + 2 ** -25);
      assert.equal(acc[i], Math.fround(1 + rounded[i]));
    }
  });
});
