/**
 * decode-resample.wat's kernels, instantiated once per thread (each worker has its own), with
 * the memory laid out per call: the two tables, the source pixels, the vertical pass's rows and
 * the planes out.
 */
import { DECODE_RESAMPLE_WASM_BASE64 } from './decode-resample-wasm.generated';
import type { AxisTable } from './decode-resample';

/** The little of the WebAssembly API used here (the project's TS lib has no WebAssembly types). */
interface WasmMemory {
  buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}
const WebAssembly = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

interface Kernels {
  memory: WasmMemory;
  vertical(src: number, stride: number, outH: number, pairs: number, starts: number, weights: number, dst: number): void;
  horizontal(src: number, stride: number, rows: number, outW: number, pairs: number, starts: number, weights: number, dst: number): void;
}

let kernels: Kernels | null | undefined;

/** The kernels, or null where WebAssembly SIMD is not available (then the JS loops run). */
function load(): Kernels | null {
  if (kernels === undefined) {
    try {
      const module = new WebAssembly.Module(Buffer.from(DECODE_RESAMPLE_WASM_BASE64, 'base64'));
      kernels = new WebAssembly.Instance(module, {}).exports as unknown as Kernels;
    } catch {
      kernels = null;
    }
  }
  return kernels;
}

const align16 = (n: number) => (n + 15) & ~15;

const pairWeights = new WeakMap<AxisTable, Int16Array>();

/**
 * The horizontal kernel's weights: per output pixel, per pair of taps, [w0 w1 w0 w1 w0 w1 0 0]
 * as 16-bit lanes (w1 = 0 past an odd tap count). Built once per table.
 */
function horizontalWeights(xs: AxisTable): Int16Array {
  let lanes = pairWeights.get(xs);
  if (!lanes) {
    const pairs = Math.ceil(xs.taps / 2);
    lanes = new Int16Array(xs.outLength * pairs * 8);
    for (let i = 0; i < xs.outLength; i++) {
      for (let k = 0; k < xs.taps; k++) {
        const at = (i * pairs + (k >> 1)) * 8 + (k & 1);
        lanes[at] = lanes[at + 2] = lanes[at + 4] = xs.weights[i * xs.taps + k];
      }
    }
    pairWeights.set(xs, lanes);
  }
  return lanes;
}

const pairedWeights = new WeakMap<AxisTable, Int32Array>();

/**
 * The vertical kernel's weights: per output row, per pair of taps, the two 16-bit weights in
 * one 32-bit word (low half first tap; 0 past an odd tap count). Built once per table.
 */
function verticalWeights(ys: AxisTable): Int32Array {
  let words = pairedWeights.get(ys);
  if (!words) {
    const pairs = Math.ceil(ys.taps / 2);
    const halves = new Uint16Array(ys.outLength * pairs * 2);
    for (let j = 0; j < ys.outLength; j++) {
      for (let k = 0; k < ys.taps; k++) halves[j * pairs * 2 + k] = ys.weights[j * ys.taps + k];
    }
    words = new Int32Array(halves.buffer); // little-endian: tap 2m in the low half
    pairedWeights.set(ys, words);
  }
  return words;
}

/**
 * `resampleRgbToChwJs` by the WebAssembly kernels, or undefined when they cannot run it
 * (no WebAssembly SIMD here, or rows shorter than the 16-byte SIMD block).
 */
export function resampleRgbToChwWasm(hwc: Uint8Array, width: number, xs: AxisTable, ys: AxisTable, out: Uint8Array): Uint8Array | undefined {
  const k = load();
  const stride = width * 3;
  if (!k || stride < 16) return undefined;
  const outW = xs.outLength,
    outH = ys.outLength;
  const xLanes = horizontalWeights(xs);
  const yWords = verticalWeights(ys);
  const xStarts = 0;
  const xWeights = align16(xStarts + 4 * outW);
  const yStarts = align16(xWeights + 2 * xLanes.length);
  const yWeights = align16(yStarts + 4 * outH);
  const src = align16(yWeights + 4 * yWords.length);
  const mid = align16(src + hwc.length);
  const dst = align16(mid + outH * stride);
  // the vertical pass may read one row past the source (an odd tap count's zero-weight row):
  // into mid; the last pixel pair of a mid row may read 8 bytes past it: into dst
  const end = dst + 3 * outW * outH;
  const missing = end - k.memory.buffer.byteLength;
  if (missing > 0) k.memory.grow(Math.ceil(missing / 65536));
  const bytes = new Uint8Array(k.memory.buffer);
  const ints = new Int32Array(k.memory.buffer);
  ints.set(xs.starts, xStarts >> 2);
  new Int16Array(k.memory.buffer).set(xLanes, xWeights >> 1);
  ints.set(ys.starts, yStarts >> 2);
  ints.set(yWords, yWeights >> 2);
  bytes.set(hwc, src);
  k.vertical(src, stride, outH, Math.ceil(ys.taps / 2), yStarts, yWeights, mid);
  k.horizontal(mid, stride, outH, outW, Math.ceil(xs.taps / 2), xStarts, xWeights, dst);
  out.set(bytes.subarray(dst, end));
  return out;
}
