/**
 * How a convolution and its gradients become ONNX nodes, for speed (rules.ts says *what* they
 * compute; every variant here computes the same, and each is tested against the others and
 * against tfjs autodiff):
 *
 * - `convolve`: Y = Conv(X, W[, b]), on onnxruntime's NCHWc kernels when the engine gives a
 *   block size (the input and weight reorders are graph nodes).
 * - dX (`convInputGrad`): a plain Conv of dY with the flipped, in/out-swapped kernel for stride
 *   1 (`inputGradByFlippedConv`), else ConvTranspose (`inputGradByConvTranspose`).
 * - dW (`convWeightGrad`): Gemms over per-tap Slices of X (an im2col in chunks:
 *   `weightGradByTapGemms`), through SpaceToDepth first for a strided conv
 *   (`weightGradBySpaceToDepthGemms`), or DESIGN §5's Conv of batch-transposed X and dY with
 *   dilation = stride (`weightGradByDilatedConv`).
 */
import type { ConvLayer, Shape } from '@alexnet-stream/model-alexnet';
import { type GraphBuilder, int, ints } from '@alexnet-stream/onnx-export';
import type { LoweringOptions } from './rules';
import { convWeightGradByGather, stridedConvWeightGradByGather } from './conv-weight-grad-gather';

export const pads2 = (p: number) => ints([p, p, p, p]);

export const NCHWC_DOMAIN = 'com.microsoft.nchwc';

export interface ConvGeometry {
  /** Input and output channels, square kernel size, groups. */
  c: number;
  o: number;
  k: number;
  g: number;
  stride: number;
  pad: number;
}

/**
 * Y = Conv(X, W[, bias]) (NCHW in and out, W as OIHW), on onnxruntime's NCHWc kernels when
 * `nchwcBlock` is set and the channels fit its blocks: X → ReorderInput (blocks of B channels)
 * → nchwc Conv with W reordered in the graph to MLAS's blocked filter layout → ReorderOutput.
 * Filter layouts (onnxruntime's MlasReorderFilterOIHWBiBo / OIHWBo): for blocked inputs
 * W'[O/B, I/B, kh, kw, Bi, Bo] = W[ob·B + bo, ib·B + bi, kh, kw]; for an input of fewer than B
 * channels (the image, NCHW as is) W'[O/B, I, kh, kw, Bo] = W[ob·B + bo, i, kh, kw]; both
 * keep W's OIHW shape, which the kernel reads its geometry from.
 */
export function convolve(b: GraphBuilder, nchwcBlock: number, x: string, w: string, bias: string | undefined, geo: ConvGeometry): string {
  const { c, o, k, g } = geo;
  const cg = c / g,
    og = o / g,
    B = nchwcBlock;
  const attrs = { kernel_shape: ints([k, k]), strides: ints([geo.stride, geo.stride]), pads: pads2(geo.pad), group: int(g) };
  const inputs = (xIn: string, wIn: string) => (bias ? [xIn, wIn, bias] : [xIn, wIn]);
  const imageInput = g === 1 && c < B; // MLAS' "NCHW convolution": input not blocked
  if (B < 2 || og % B !== 0 || !(imageInput || cg % B === 0)) return b.op('Conv', inputs(x, w), attrs);
  const blockedW = imageInput
    ? b.op('Transpose', [b.op('Reshape', [w, b.int64s([o / B, B, cg, k, k])])], { perm: ints([0, 2, 3, 4, 1]) })
    : b.op('Transpose', [b.op('Reshape', [w, b.int64s([o / B, B, cg / B, B, k, k])])], { perm: ints([0, 2, 4, 5, 3, 1]) });
  const wIn = b.op('Reshape', [blockedW, b.int64s([o, cg, k, k])]);
  const xIn = imageInput ? x : b.node('ReorderInput', [x], {}, { domain: NCHWC_DOMAIN })[0];
  const y = b.node('Conv', inputs(xIn, wIn), attrs, { domain: NCHWC_DOMAIN })[0];
  return b.node('ReorderOutput', [y], { channels: int(o) }, { domain: NCHWC_DOMAIN })[0];
}

/**
 * Columns a dW Gemm should have at least. MLAS packs the B operand for each Gemm call, so a
 * narrow B (a group of conv2's 48 channels, one kernel tap) pays packing and threading overhead
 * per call: 25 Gemms of [128, K]·[K, 48] took 1.2-1.35x the time of one [128, K]·[K, 1200]
 * (K = 4608..23328, quiet machine; 2.5x on a loaded one). The Concat that stacks the taps
 * costs a copy, so in a whole step the gain is small.
 */
const MIN_GEMM_COLUMNS = 256;

/**
 * dW for a list of kernel taps: Σ over K of dY[o, K]·tap[t][c, K], as [O', taps·C'] in tap
 * order. Consecutive taps are stacked (Concat) into Gemms of at least MIN_GEMM_COLUMNS columns
 * each, in chunks of equal size; stacking all of them would build the whole k²-times-larger
 * im2col matrix at once.
 */
function tapGemms(b: GraphBuilder, dy: string, taps: string[], tapWidth: number): string {
  const perGemm = Math.ceil(taps.length / Math.ceil(taps.length / Math.ceil(MIN_GEMM_COLUMNS / tapWidth)));
  const gemms: string[] = [];
  for (let t = 0; t < taps.length; t += perGemm) {
    const chunk = taps.slice(t, t + perGemm);
    const cols = chunk.length === 1 ? chunk[0] : b.op('Concat', chunk, { axis: int(0) });
    gemms.push(b.op('Gemm', [dy, cols], { transB: int(1) })); // [O', chunk·C']
  }
  return gemms.length === 1 ? gemms[0] : b.op('Concat', gemms, { axis: int(1) });
}

/** A conv layer with the shapes of its input and output (C, H, W), what its gradients need. */
export interface ConvGradGeometry {
  inShape: Shape;
  outShape: Shape;
  layer: ConvLayer;
}

function sizes({ inShape, outShape, layer }: ConvGradGeometry) {
  const [c, h, w] = inShape;
  const [o, ho, wo] = outShape;
  const { stride: s, pad: p, kernel: k, group: g } = layer;
  return { c, h, w, o, ho, wo, s, p, k, g, cg: c / g, og: o / g };
}

/** dX of a conv: the flipped-kernel Conv where it applies (stride 1, `convInputGrad: 'conv'`), else ConvTranspose. */
export function convInputGrad(b: GraphBuilder, lowering: LoweringOptions, geometry: ConvGradGeometry, dy: string, weight: string): string {
  const { s, p, k } = sizes(geometry);
  if (lowering.convInputGrad === 'conv' && s === 1 && p <= k - 1) return inputGradByFlippedConv(b, lowering.nchwcBlock, geometry, dy, weight);
  return inputGradByConvTranspose(b, geometry, dy, weight);
}

/**
 * Stride 1: dX = Conv(dY, W'), W'[g·Cg + c', o', i, j] = W[g·Og + o', c', k−1−i, k−1−j], padding
 * k−1−p: a plain (fast) convolution.
 */
function inputGradByFlippedConv(b: GraphBuilder, nchwcBlock: number, geometry: ConvGradGeometry, dy: string, weight: string): string {
  const { c, o, p, k, g, cg, og } = sizes(geometry);
  const swapped =
    g === 1
      ? b.op('Transpose', [weight], { perm: ints([1, 0, 2, 3]) })
      : b.op('Reshape', [
          b.op('Transpose', [b.op('Reshape', [weight, b.int64s([g, og, cg, k, k])])], { perm: ints([0, 2, 1, 3, 4]) }),
          b.int64s([c, og, k, k]),
        ]);
  const flipped = b.op('Slice', [swapped, b.int64s([-1, -1]), b.int64s([-(k + 1), -(k + 1)]), b.int64s([2, 3]), b.int64s([-1, -1])]);
  return convolve(b, nchwcBlock, dy, flipped, undefined, { c: o, o: c, k, g, stride: 1, pad: k - 1 - p });
}

/** dX = ConvTranspose(dY, W), with output_padding restoring the input size (stride 4, odd sizes). */
function inputGradByConvTranspose(b: GraphBuilder, geometry: ConvGradGeometry, dy: string, weight: string): string {
  const { h, w, ho, wo, s, p, k, g } = sizes(geometry);
  const outputPadding = [h - (s * (ho - 1) + k - 2 * p), w - (s * (wo - 1) + k - 2 * p)];
  return b.op('ConvTranspose', [dy, weight], {
    kernel_shape: ints([k, k]),
    strides: ints([s, s]),
    pads: pads2(p),
    group: int(g),
    output_padding: ints(outputPadding),
  });
}

/** dW of a conv: Gemms over taps (through SpaceToDepth when strided, ungrouped and not portable), or the dilated Conv. */
export function convWeightGrad(b: GraphBuilder, lowering: LoweringOptions, geometry: ConvGradGeometry, dy: string, x: string): string {
  const { s, g, k, p } = sizes(geometry);
  if (lowering.convWeightGrad === 'dilatedConv') return weightGradByDilatedConv(b, geometry, dy, x);
  if (lowering.convWeightGrad === 'gather' && (s === 1 || (g === 1 && !lowering.portableOps))) {
    const gatherGeometry = { inShape: geometry.inShape, outShape: geometry.outShape, kernel: k, stride: s, pad: p, group: g };
    return s === 1 ? convWeightGradByGather(b, x, dy, gatherGeometry) : stridedConvWeightGradByGather(b, x, dy, gatherGeometry);
  }
  if (s > 1 && g === 1 && !lowering.portableOps) return weightGradBySpaceToDepthGemms(b, geometry, dy, x);
  return weightGradByTapGemms(b, geometry, dy, x);
}

/**
 * Strided (conv1: 11x11/4): im2col through SpaceToDepth, so that the k² strided gathers become
 * ⌈k/s⌉² contiguous Slices. Blocks: Xb[(di, dj, c), n, Y, X] = Xpad[n, c, s·Y + di, s·X + dj];
 * then the conv is a ⌈k/s⌉² stride-1 conv over blocks with a kernel zero-padded to s·⌈k/s⌉, and
 * dW is the first k×k of that kernel's gradient.
 */
function weightGradBySpaceToDepthGemms(b: GraphBuilder, geometry: ConvGradGeometry, dy: string, x: string): string {
  const { c, h, w, o, ho, wo, s, p, k } = sizes(geometry);
  const kb = Math.ceil(k / s);
  const hb = ho - 1 + kb,
    wb = wo - 1 + kb; // blocks the windows touch
  const padEnd = [s * hb - h - p, s * wb - w - p];
  let xp = b.op('Pad', [x, b.int64s([0, 0, p, p, 0, 0, Math.max(0, padEnd[0]), Math.max(0, padEnd[1])])]);
  if (padEnd[0] < 0 || padEnd[1] < 0) xp = b.op('Slice', [xp, b.int64s([0, 0]), b.int64s([s * hb, s * wb]), b.int64s([2, 3])]);
  const blocks = b.op('Transpose', [b.op('SpaceToDepth', [xp], { blocksize: int(s) })], { perm: ints([1, 0, 2, 3]) }); // [s²C, N, hb, wb]
  const dyt = b.op('Reshape', [b.op('Transpose', [dy], { perm: ints([1, 0, 2, 3]) }), b.int64s([o, -1])]);
  const slices: string[] = [];
  for (let bi = 0; bi < kb; bi++) {
    for (let bj = 0; bj < kb; bj++) {
      slices.push(b.op('Reshape', [b.op('Slice', [blocks, b.int64s([bi, bj]), b.int64s([bi + ho, bj + wo]), b.int64s([2, 3])]), b.int64s([s * s * c, -1])]));
    }
  }
  const dwBlocks = b.op('Reshape', [tapGemms(b, dyt, slices, s * s * c), b.int64s([o, kb, kb, s, s, c])]); // (bi, bj, di, dj, c)
  const dwPadded = b.op('Reshape', [b.op('Transpose', [dwBlocks], { perm: ints([0, 5, 1, 3, 2, 4]) }), b.int64s([o, c, kb * s, kb * s])]); // (c, bi, di, bj, dj)
  return kb * s === k ? dwPadded : b.op('Slice', [dwPadded, b.int64s([0, 0]), b.int64s([k, k]), b.int64s([2, 3])]);
}

/**
 * im2col of X with the batch inside, one kernel tap per Slice: for tap (i, j) the Slice
 * X_ij[c, (n, y, x)] = Xpad[n, c, s·y + i, s·x + j] of the channel-major, zero-padded X, and
 * dW[o, c', i, j] = Σ_(n,y,x) dY[n, o, y, x] · X_ij[g·Cg + c', (n, y, x)]: per group, Gemms
 * (M = O/g, K = N·Ho·Wo, transB) over a few taps' Slices stacked (tapGemms).
 */
function weightGradByTapGemms(b: GraphBuilder, geometry: ConvGradGeometry, dy: string, x: string): string {
  const { o, ho, wo, s, p, k, g, cg, og } = sizes(geometry);
  const xt = b.op('Transpose', [x], { perm: ints([1, 0, 2, 3]) }); // [C, N, H, W]
  const xp = p > 0 ? b.op('Pad', [xt, b.int64s([0, 0, p, p, 0, 0, p, p])]) : xt;
  const dyt = b.op('Reshape', [b.op('Transpose', [dy], { perm: ints([1, 0, 2, 3]) }), b.int64s([o, -1])]); // [O, N·Ho·Wo]
  const groupGrads: string[] = [];
  for (let gi = 0; gi < g; gi++) {
    const dyg = g === 1 ? dyt : b.op('Slice', [dyt, b.int64s([gi * og]), b.int64s([(gi + 1) * og]), b.int64s([0])]);
    const slices: string[] = [];
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) {
        const starts = [gi * cg, i, j],
          ends = [(gi + 1) * cg, i + s * (ho - 1) + 1, j + s * (wo - 1) + 1];
        slices.push(b.op('Reshape', [b.op('Slice', [xp, b.int64s(starts), b.int64s(ends), b.int64s([0, 2, 3]), b.int64s([1, s, s])]), b.int64s([cg, -1])]));
      }
    }
    // [O/g, k², Cg] → [O/g, Cg, k²]
    groupGrads.push(b.op('Transpose', [b.op('Reshape', [tapGemms(b, dyg, slices, cg), b.int64s([og, k * k, cg])])], { perm: ints([0, 2, 1]) }));
  }
  const dw = g === 1 ? groupGrads[0] : b.op('Concat', groupGrads, { axis: int(0) });
  return b.op('Reshape', [dw, b.int64s([o, cg, k, k])]);
}

/**
 * DESIGN §5's rule as written: a Conv of X with the batch moved to channels ([C/g, g·N, H, W])
 * by the kernel dYᵀ [O, N, Ho, Wo], group g, dilation = stride, cropped to k×k, then
 * [C/g, O] → [O, C/g].
 */
function weightGradByDilatedConv(b: GraphBuilder, geometry: ConvGradGeometry, dy: string, x: string): string {
  const { h, w, ho, wo, s, p, k, g, cg } = sizes(geometry);
  const xt =
    g === 1
      ? b.op('Transpose', [x], { perm: ints([1, 0, 2, 3]) })
      : b.op('Reshape', [b.op('Transpose', [b.op('Reshape', [x, b.int64s([0, g, cg, h, w])])], { perm: ints([2, 1, 0, 3, 4]) }), b.int64s([cg, -1, h, w])]);
  const dyt = b.op('Transpose', [dy], { perm: ints([1, 0, 2, 3]) });
  let dw = b.op('Conv', [xt, dyt], { dilations: ints([s, s]), pads: pads2(p), group: int(g), strides: ints([1, 1]) }); // [C/g, O, Hk, Wk]
  const hk = h + 2 * p - s * (ho - 1);
  const wk = w + 2 * p - s * (wo - 1);
  if (hk !== k || wk !== k) dw = b.op('Slice', [dw, b.int64s([0, 0]), b.int64s([k, k]), b.int64s([2, 3])]);
  return b.op('Transpose', [dw], { perm: ints([1, 0, 2, 3]) });
}
