/**
 * A conv's weight gradient as an im2col by one Gather per chunk of kernel taps and one batched
 * MatMul per chunk (LoweringOptions.convWeightGrad 'gather'), for stride-1 and strided convs
 * with any group count.
 *
 * dW[o, c', i, j] = Σ_(n,y,x) dY[n, o, y, x] · Xpad[n, g(o)·Cg + c', s·y + i, s·x + j]
 *
 * X goes channels-last per group, [g, N, Hp·Wp, Cg] (one Transpose and a Pad), so each kernel tap
 * of each output pixel is a contiguous run of Cg floats; a Gather along the pixel axis with the
 * constant table idx[p, t] = (s·y + i)·Wp + (s·x + j) (p = (y, x), t = (i, j)) gives
 * [g, N, P, taps, Cg] = [g, N·P, taps·Cg], the im2col matrix in one kernel instead of one strided
 * Slice per tap plus Concats (the 'gemm' lowering: at the 113x113 input's 5x5 and 12x12 maps
 * those copies cost about as much as the Gemms). dYᵀ per group is [g, Og, N·P] (the Transpose
 * the 'gemm' lowering uses too), and MatMul([g, Og, N·P], [g, N·P, taps·Cg]) is the gradient of
 * those taps, [g, Og, taps, Cg]. Taps go in chunks so that no gathered matrix exceeds
 * MAX_GATHER_FLOATS per image (memory is bounded by the batch size, as elsewhere).
 *
 * The sums run in a different order than the other lowerings (one long K = N·P per MatMul, as
 * in 'gemm'), so results agree with them to float rounding (rules.test.ts checks all lowerings
 * against tfjs autodiff at the same tolerances).
 */
import { type GraphBuilder, int, ints } from '@alexnet-stream/onnx-export';

/**
 * Most floats one chunk's gathered matrix may hold per image (taps·Cg·P ≤ this): 1M floats = 4
 * MB per image, e.g. 128 MB at batch 32. At the 113x113 input every layer but conv1 fits in one
 * chunk; at 227, conv2 (27x27 maps, 25 taps of 48 channels, 2 groups) needs 3.
 */
export const MAX_GATHER_FLOATS_PER_IMAGE = 1 << 20;

export interface WeightGradGeometry {
  /** Input shape without the batch [C, H, W], output shape [O, Ho, Wo]. */
  inShape: number[];
  outShape: number[];
  kernel: number;
  stride: number;
  pad: number;
  group: number;
}

/** dW [O, C/g, k, k] of a conv from its input `x` [N, C, H, W] and output gradient `dy` [N, O, Ho, Wo]. */
export function convWeightGradByGather(
  b: GraphBuilder,
  x: string,
  dy: string,
  geo: WeightGradGeometry,
  maxFloatsPerImage = MAX_GATHER_FLOATS_PER_IMAGE,
): string {
  const [c, h, w] = geo.inShape;
  const [o, ho, wo] = geo.outShape;
  const { kernel: k, stride: s, pad: p, group: g } = geo;
  const cg = c / g,
    og = o / g;
  const hp = h + 2 * p,
    wp = w + 2 * p;
  const pixels = ho * wo,
    taps = k * k;
  // [N, C, H, W] → [g, N, H, W, Cg] → pad H, W → [g, N, Hp·Wp, Cg]
  const xg = b.op('Transpose', [b.op('Reshape', [x, b.int64s([0, g, cg, h, w])])], { perm: ints([1, 0, 3, 4, 2]) });
  const xp = p > 0 ? b.op('Pad', [xg, b.int64s([0, 0, p, p, 0, 0, 0, p, p, 0])]) : xg;
  const columns = b.op('Reshape', [xp, b.int64s([g, 0, hp * wp, cg])]);
  // dYᵀ per group: [N, O, Ho, Wo] → [O, N, Ho, Wo] → [g, Og, N·P]
  const dyt = b.op('Reshape', [b.op('Transpose', [dy], { perm: ints([1, 0, 2, 3]) }), b.int64s([g, og, -1])]);
  const perChunk = Math.max(1, Math.min(taps, Math.floor(maxFloatsPerImage / (cg * pixels))));
  const chunks = Math.ceil(taps / perChunk);
  const tapsPerChunk = Math.ceil(taps / chunks); // equal chunks
  const grads: string[] = [];
  for (let t0 = 0; t0 < taps; t0 += tapsPerChunk) {
    const t1 = Math.min(taps, t0 + tapsPerChunk);
    const index = new Int32Array(pixels * (t1 - t0));
    let at = 0;
    for (let y = 0; y < ho; y++) {
      for (let xo = 0; xo < wo; xo++) {
        for (let t = t0; t < t1; t++) index[at++] = (s * y + Math.floor(t / k)) * wp + (s * xo + (t % k));
      }
    }
    const idx = b.constant(index, [pixels, t1 - t0], 'im2col_index');
    const im2col = b.op('Reshape', [b.op('Gather', [columns, idx], { axis: int(2) }), b.int64s([g, -1, (t1 - t0) * cg])]); // [g, N·P, taps·Cg]
    grads.push(b.op('MatMul', [dyt, im2col])); // [g, Og, taps·Cg]
  }
  const dw = grads.length === 1 ? grads[0] : b.op('Concat', grads, { axis: int(2) });
  // [g, Og, taps, Cg] → [O, Cg, taps] → [O, Cg, k, k]
  const oct = b.op('Transpose', [b.op('Reshape', [dw, b.int64s([o, taps, cg])])], { perm: ints([0, 2, 1]) });
  return b.op('Reshape', [oct, b.int64s([o, cg, k, k])]);
}

/**
 * dW of a strided conv (group 1: conv1, 11x11/4) through SpaceToDepth, as the 'gemm' lowering
 * does it (rules.ts), then by convWeightGradByGather: blocks Xb[n, (di, dj, c), Y, X] = Xpad[n,
 * c, s·Y + di, s·X + dj] turn the conv into a stride-1 conv over blocks with a ⌈k/s⌉² kernel
 * (zero-padded to s·⌈k/s⌉), whose gradient [O, (di, dj, c), bi, bj] is reordered to
 * [O, c, (bi, di), (bj, dj)] and cropped to k×k. Each gathered run is s²·C floats (48 for conv1)
 * instead of C (3): the Gather copies bigger blocks.
 */
export function stridedConvWeightGradByGather(
  b: GraphBuilder,
  x: string,
  dy: string,
  geo: WeightGradGeometry,
  maxFloatsPerImage = MAX_GATHER_FLOATS_PER_IMAGE,
): string {
  const [c, h, w] = geo.inShape;
  const [o, ho, wo] = geo.outShape;
  const { kernel: k, stride: s, pad: p } = geo;
  if (geo.group !== 1) throw new Error('stridedConvWeightGradByGather: group 1 only');
  const kb = Math.ceil(k / s);
  const hb = ho - 1 + kb,
    wb = wo - 1 + kb; // blocks the windows touch
  const padEnd = [s * hb - h - p, s * wb - w - p];
  let xp = b.op('Pad', [x, b.int64s([0, 0, p, p, 0, 0, Math.max(0, padEnd[0]), Math.max(0, padEnd[1])])]);
  if (padEnd[0] < 0 || padEnd[1] < 0) xp = b.op('Slice', [xp, b.int64s([0, 0]), b.int64s([s * hb, s * wb]), b.int64s([2, 3])]);
  const blocks = b.op('SpaceToDepth', [xp], { blocksize: int(s) }); // [N, s²C, hb, wb], channels (di, dj, c)
  const dwBlocks = convWeightGradByGather(
    b,
    blocks,
    dy,
    { inShape: [s * s * c, hb, wb], outShape: geo.outShape, kernel: kb, stride: 1, pad: 0, group: 1 },
    maxFloatsPerImage,
  );
  // [O, (di, dj, c), bi, bj] → [O, c, bi, di, bj, dj] → [O, c, kb·s, kb·s] → crop to k×k
  const reordered = b.op('Transpose', [b.op('Reshape', [dwBlocks, b.int64s([o, s, s, c, kb, kb])])], { perm: ints([0, 3, 4, 1, 5, 2]) });
  const dwPadded = b.op('Reshape', [reordered, b.int64s([o, c, kb * s, kb * s])]);
  return kb * s === k ? dwPadded : b.op('Slice', [dwPadded, b.int64s([0, 0]), b.int64s([k, k]), b.int64s([2, 3])]);
}
