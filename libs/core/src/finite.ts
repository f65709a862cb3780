/**
 * Index of the first NaN or infinite value of `values`, or -1.
 *
 * Weights (61M values of a full AlexNet) and every served tensor are checked, so the common case
 * is a sum: a NaN or infinity makes the sum NaN or infinite (+inf + -inf is NaN), so a finite sum
 * proves every value finite. The float64 sum of finite float32 values cannot overflow
 * (|sum| <= n x 3.4e38); float64 values can, and then the exact scan below answers, so the fast
 * path is only ever a shortcut. Eight independent sums let the adds overlap (about 3x faster
 * than a compare per value); only data that fails the sum is scanned for the index.
 */
export function firstNonFinite(values: Float32Array | Float64Array): number {
  const n = values.length;
  const whole = n - (n & 7);
  let s0 = 0,
    s1 = 0,
    s2 = 0,
    s3 = 0,
    s4 = 0,
    s5 = 0,
    s6 = 0,
    s7 = 0;
  let i = 0;
  for (; i < whole; i += 8) {
    s0 += values[i];
    s1 += values[i + 1];
    s2 += values[i + 2];
    s3 += values[i + 3];
    s4 += values[i + 4];
    s5 += values[i + 5];
    s6 += values[i + 6];
    s7 += values[i + 7];
  }
  for (; i < n; i++) s0 += values[i];
  const sum = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
  if (sum - sum === 0) return -1;
  // x - x is 0 for every finite x, NaN for NaN and ±Infinity.
  for (let k = 0; k < n; k++) if (values[k] - values[k] !== 0) return k;
  return -1;
}

/** `bytes` (little-endian float32 values) as a Float32Array: a view when 4-byte aligned, else an aligned copy. */
export function float32View(bytes: Uint8Array): Float32Array {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes);
  return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength >> 2);
}
