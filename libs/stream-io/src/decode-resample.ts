/**
 * Bilinear (triangle-filter) resampling of 8-bit interleaved RGB into planar (CHW) RGB, in
 * plain JS: the resize step of `decode` for images that need at most a few-fold reduction.
 *
 * Why not libvips: any libvips resize adds ~1.5 ms of CPU per image in pipeline set-up,
 * whatever the kernel, which was about as much as decoding a 500x375 JPEG (docs/speed.md "Decode").
 * A separable filter with precomputed integer tables costs less, and the HWC → CHW transpose
 * comes free with it (the horizontal pass writes planes).
 *
 * The filter is Pillow's BILINEAR (`ImagingResample`): a triangle of radius 1 that widens by
 * the scale factor when reducing, so it antialiases; weights normalised per output pixel
 * (at the edges the taps that fall outside the image are dropped and the rest renormalised);
 * fixed point with 22 fractional bits; the intermediate (after the horizontal pass) rounded to
 * 8 bits, as Pillow does. Its output equals Pillow's within rounding and libvips' `linear`
 * reduce (what `decode` used before) within a level or two at most (decode-resample.test.ts).
 */

import { resampleRgbToChwWasm } from './decode-resample-wasm';

/**
 * Fractional bits of the fixed-point weights. 14 (Pillow uses 22): a weight then fits the
 * signed 16-bit lanes of the WebAssembly horizontal pass (i32x4.dot_i16x8_s); the weights'
 * rounding moves an output by at most taps x 255 / 2^15, about 0.03 of a level.
 */
export const PRECISION_BITS = 14;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

/**
 * The taps of a 1-D resampling: output pixel i is the sum over k < taps of
 * `weights[i * taps + k]` (fixed point, summing to about 2^14) times input pixel `starts[i] + k`.
 * Every output pixel has the same number of taps (zero weights pad the shorter ones, their
 * start moved so that they stay inside the input), so that the loops below have a fixed trip
 * count and can be unrolled.
 */
export interface AxisTable {
  outLength: number;
  taps: number;
  starts: Int32Array;
  weights: Int32Array;
}

/**
 * Taps for resampling the input interval [from, from + span) (input pixel units; pixel j
 * covers [j, j + 1)) onto `outLength` output pixels, from an input of `inLength` pixels.
 * Squash: from 0, span inLength. Center crop: the centred part of the longer axis.
 */
export function axisTable(inLength: number, outLength: number, from = 0, span = inLength): AxisTable {
  const scale = span / outLength; // input pixels per output pixel
  const filterScale = Math.max(scale, 1); // widen the triangle when reducing: antialiasing
  const support = filterScale; // the triangle's radius (1) times filterScale
  const maxTaps = Math.ceil(support) * 2 + 1;
  const firsts = new Int32Array(outLength);
  const counts = new Int32Array(outLength);
  const exact = new Float64Array(outLength * maxTaps);
  let taps = 1;
  for (let i = 0; i < outLength; i++) {
    const center = from + (i + 0.5) * scale;
    // Pillow's bounds: truncation of center ± support + 0.5, clipped to the image
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inLength);
    let sum = 0;
    for (let k = 0; k < hi - lo; k++) {
      const x = Math.abs((lo + k - center + 0.5) / filterScale);
      const w = x < 1 ? 1 - x : 0;
      exact[i * maxTaps + k] = w;
      sum += w;
    }
    for (let k = 0; k < hi - lo; k++) exact[i * maxTaps + k] = sum === 0 ? 0 : exact[i * maxTaps + k] / sum;
    firsts[i] = lo;
    counts[i] = hi - lo;
    taps = Math.max(taps, hi - lo);
  }
  const starts = new Int32Array(outLength);
  const weights = new Int32Array(outLength * taps);
  for (let i = 0; i < outLength; i++) {
    const start = Math.max(0, Math.min(firsts[i], inLength - taps));
    starts[i] = start;
    for (let k = 0; k < counts[i]; k++) {
      // Pillow rounds half away from zero (the weights are >= 0 here)
      weights[i * taps + firsts[i] - start + k] = Math.floor(exact[i * maxTaps + k] * ONE + 0.5);
    }
  }
  return { outLength, taps, starts, weights };
}

/**
 * Resample interleaved RGB (`hwc`, width x height x 3) by the tables `xs` (along a row) and
 * `ys` (along a column) into planar RGB (`out`, 3 planes of ys.outLength x xs.outLength):
 * vertically first (whole interleaved rows), rounded to 8 bits, then horizontally, writing
 * the planes. The WebAssembly kernels (decode-resample.wat) do exactly this, faster; this is
 * their reference and the fallback where they cannot run (rows under 8 bytes, no WebAssembly).
 *
 * No clamping: the weights are >= 0 and sum to at most 2^14 plus rounding, so every sum
 * stays within 0..255.5 before the shift.
 */
export function resampleRgbToChwJs(
  hwc: Uint8Array,
  width: number,
  xs: AxisTable,
  ys: AxisTable,
  out: Uint8Array = new Uint8Array(3 * xs.outLength * ys.outLength),
): Uint8Array {
  const stride = width * 3;
  const outW = xs.outLength,
    outH = ys.outLength;
  const mid = new Uint8Array(outH * stride);
  for (let j = 0; j < outH; j++) {
    const first = ys.starts[j] * stride;
    for (let e = 0; e < stride; e++) {
      let acc = HALF;
      for (let k = 0; k < ys.taps; k++) acc += ys.weights[j * ys.taps + k] * hwc[first + k * stride + e];
      mid[j * stride + e] = acc >> PRECISION_BITS;
    }
  }
  const plane = outW * outH;
  for (let j = 0; j < outH; j++) {
    for (let i = 0; i < outW; i++) {
      let red = HALF,
        green = HALF,
        blue = HALF;
      for (let k = 0; k < xs.taps; k++) {
        const w = xs.weights[i * xs.taps + k];
        const p = j * stride + (xs.starts[i] + k) * 3;
        red += w * mid[p];
        green += w * mid[p + 1];
        blue += w * mid[p + 2];
      }
      out[j * outW + i] = red >> PRECISION_BITS;
      out[plane + j * outW + i] = green >> PRECISION_BITS;
      out[2 * plane + j * outW + i] = blue >> PRECISION_BITS;
    }
  }
  return out;
}

/**
 * `resampleRgbToChwJs`, by the WebAssembly kernels where they run (~5x faster), else in JS.
 * Both give identical bytes (decode-resample.test.ts).
 */
export function resampleRgbToChw(
  hwc: Uint8Array,
  width: number,
  xs: AxisTable,
  ys: AxisTable,
  out: Uint8Array = new Uint8Array(3 * xs.outLength * ys.outLength),
): Uint8Array {
  return resampleRgbToChwWasm(hwc, width, xs, ys, out) ?? resampleRgbToChwJs(hwc, width, xs, ys, out);
}

/**
 * The two tables of a resize of a width x height image to size x size: squash maps the whole
 * image; center-crop scales the shorter side to `size` and keeps the middle of the longer one,
 * where sharp's `fit: 'cover'` puts it (so that both decode paths agree): libvips scales by
 * exactly the shrink, onto a whole number of pixels (round(length / shrink)) centred on the
 * input, and sharp then crops at a whole-pixel offset (rounding up).
 */
export function resizeTables(width: number, height: number, size: number, mode: 'squash' | 'center-crop'): { xs: AxisTable; ys: AxisTable } {
  if (mode === 'squash') return { xs: axisTable(width, size), ys: axisTable(height, size) };
  const shrink = Math.min(width, height) / size;
  const axis = (length: number) => {
    const resized = Math.round(length / shrink); // the whole image at the crop's scale
    const gridFrom = (length - resized * shrink) / 2; // that grid centred on the input
    return axisTable(length, size, gridFrom + ((resized - size + 1) >> 1) * shrink, size * shrink);
  };
  return { xs: axis(width), ys: axis(height) };
}

const tableCache = new Map<string, { xs: AxisTable; ys: AxisTable }>();
const TABLE_CACHE_ENTRIES = 64;

/**
 * `resizeTables`, remembered for the last few image shapes (a data set has few: most of
 * ImageNet is 500x375 or 500x333), since building them costs ~0.07 ms per image.
 */
export function resizeTablesCached(width: number, height: number, size: number, mode: 'squash' | 'center-crop'): { xs: AxisTable; ys: AxisTable } {
  const key = `${width}x${height}:${size}:${mode}`;
  let tables = tableCache.get(key);
  if (!tables) {
    tables = resizeTables(width, height, size, mode);
    if (tableCache.size >= TABLE_CACHE_ENTRIES) tableCache.delete(tableCache.keys().next().value as string);
    tableCache.set(key, tables);
  }
  return tables;
}
