/**
 * IEEE 754 half-precision conversion (Node 20 has no Float16Array), for the workers' optional
 * fp16 transfer and for F16 tensors in safetensors files. float32 → float16 rounds to nearest,
 * ties to even (as hardware does), with overflow to ±Inf, gradual underflow to subnormals, and
 * NaN kept NaN; float16 → float32 is exact (a 64 Ki-entry table, built on first use).
 */

let toFloat32Table: Float32Array | undefined;

function halfToFloatSlow(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >>> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

function table(): Float32Array {
  if (!toFloat32Table) {
    toFloat32Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) toFloat32Table[h] = halfToFloatSlow(h);
  }
  return toFloat32Table;
}

/** Bits of one float32 (given as its uint32 bits) → float16 bits, round to nearest even. */
export function floatBitsToHalf(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const e = exponent - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: ±0
    mantissa |= 0x800000;
    const shift = 14 - e;
    let h = mantissa >>> shift;
    const rest = mantissa & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rest > half || (rest === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (and can reach Inf).
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++;
  return sign | h;
}

/** out[i] = half(src[i]); `out` may be a fresh Uint16Array of src.length. */
export function encodeHalf(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) out[i] = floatBitsToHalf(bits[i]);
  return out;
}

/** Raw IEEE half bits → a new Float32Array, exactly (every half is representable in float32). */
export function float16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  decodeHalfInto(bits, out);
  return out;
}

/** dst[i] = float(src[i]). */
export function decodeHalfInto(src: Uint16Array, dst: Float32Array): void {
  const t = table();
  for (let i = 0; i < src.length; i++) dst[i] = t[src[i]];
}

/** dst[i] += float(src[i]). */
export function addHalfInto(src: Uint16Array, dst: Float32Array): void {
  const t = table();
  for (let i = 0; i < src.length; i++) dst[i] += t[src[i]];
}

/** Round every value of `data` to the nearest float16 in place (so the owner holds what it sends). */
export function roundToHalfInPlace(data: Float32Array): void {
  const t = table();
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  for (let i = 0; i < bits.length; i++) data[i] = t[floatBitsToHalf(bits[i])];
}
