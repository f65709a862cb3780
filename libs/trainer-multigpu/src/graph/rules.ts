/**
 * Forward and backward rules of every layer kind, as ONNX nodes, in one table (DESIGN §5, in
 * the spirit of tinygrad's gradient table): each entry lowers its layer's forward pass, says
 * which forward values its backward needs (`saved`), and lowers the backward pass from the
 * output gradient `dy` to the input gradient `dx` and the parameter gradients.
 *
 * Conventions: activations NCHW (or [N, F] after flatten) with a dynamic batch dimension, conv
 * weights OIHW, fc weights [out, in] (Gemm transB=1), LRN in ONNX semantics (alpha divided by
 * size). `dy` of the loss is `(softmax − onehot)/N`, times lr in train graphs (training-graph.ts).
 */
import type { ConvLayer, FcLayer, LayerSpec, LrnLayer, MaxPoolLayer, Shape, DropoutLayer } from '@alexnet-stream/model-alexnet';
import { GraphBuilder, float, int, ints, str } from '@alexnet-stream/onnx-export';
import { convWeightGradByGather, stridedConvWeightGradByGather } from './conv-weight-grad-gather';

export type Mode = 'train' | 'eval';

/**
 * Lowering choices that change speed, not results (both variants of each are tested):
 * - `convInputGrad`: 'conv' lowers dX of a stride-1 conv as a plain Conv of dY with the
 *   spatially flipped, in/out-swapped kernel (onnxruntime's fast conv kernels);
 *   'convTranspose' uses ConvTranspose(dY, W) for every conv (DESIGN §5's rule as written).
 * - `convWeightGrad`: 'gemm' lowers dW as Gemms over Slices of X, one Slice per kernel tap,
 *   a few taps stacked per Gemm (an im2col in chunks; batch and output pixels form the long K
 *   dimension; strided convs go through SpaceToDepth first); 'gather' does the stride-1 convs'
 *   im2col as one Gather of channels-last X per chunk of taps and one batched MatMul
 *   (conv-weight-grad-gather.ts), strided group-1 ones the same over SpaceToDepth blocks, other
 *   strided ones as 'gemm'; 'dilatedConv' is DESIGN §5's Conv over
 *   batch-transposed X and dY with dilation = stride.
 * The fast pair is the default: on the full AlexNet it made a step ~1.45x faster (bench/train.mjs).
 * - `nchwcBlock`: onnxruntime's NCHWc block size (8 with AVX2, 16 with AVX-512: the engine
 *   probes it, engines/onnxruntime/nchwc.ts), or 0. When set, forward convolutions and the
 *   stride-1 dX convolutions run on onnxruntime's blocked-layout direct-convolution kernels
 *   (`com.microsoft.nchwc` Conv). onnxruntime only switches a model to them by itself for
 *   constant weights (an exported model); ours are graph inputs, so the graph asks for them
 *   and blocks the weights itself. 1.1-1.5x per AlexNet conv layer, reorders included.
 */
export interface LoweringOptions {
  convInputGrad: 'conv' | 'convTranspose';
  convWeightGrad: 'gemm' | 'gather' | 'dilatedConv';
  nchwcBlock: number;
  /**
   * MaxPool's backward: 'indices' takes MaxPool's second output (the flat index of each
   * window's maximum) and scatters dY with ScatterElements(reduction='add') (onnxruntime's CPU
   * and CUDA kernels); 'compare' finds the same element by comparing the window's taps with Y
   * and scatters through one grouped ConvTranspose (`maxPoolGradByCompare`): for providers
   * whose MaxPool has no Indices output (WebGPU: "The Indices output is not supported yet").
   */
  maxPoolGrad: 'indices' | 'compare';
  /**
   * Only ops that every provider we target runs on the device (checked against onnxruntime's
   * WebGPU kernel registry and on lavapipe): strided dW without SpaceToDepth, and the loss and
   * error counts without LogSoftmax and int64 (training-graph.ts). With false, those parts use
   * the ops the CPU runs fastest; a provider that lacks one runs it on the CPU between device
   * ops (correct, but a round trip per step).
   */
  portableOps: boolean;
}

/** The CPU lowering (onnxruntime's CPU provider; the engine adds its CPU's `nchwcBlock`). */
export const DEFAULT_LOWERING: LoweringOptions = { convInputGrad: 'conv', convWeightGrad: 'gemm', nchwcBlock: 0, maxPoolGrad: 'indices', portableOps: false };

/**
 * For GPU providers (WebGPU; CUDA too, whose kernels cover it): the same math from ops each of
 * them runs, so no step leaves the device. On the CPU provider it gives the same step as
 * DEFAULT_LOWERING (training-graph.test.ts, portable-lowering.test.ts).
 */
export const PORTABLE_LOWERING: LoweringOptions = { convInputGrad: 'conv', convWeightGrad: 'gemm', nchwcBlock: 0, maxPoolGrad: 'compare', portableOps: true };

/** What a rule may use while lowering one layer. */
export interface RuleContext {
  b: GraphBuilder;
  mode: Mode;
  lowering: LoweringOptions;
  /** Graph values of the layer's parameters (weights, biases) by role; absent for layers without. */
  weight?: string;
  bias?: string;
  /** The dropout mask input of this layer (train mode), already scaled: 0 or 1/(1 − rate). */
  mask?: string;
  /** Shapes without the batch dimension. */
  inShape: Shape;
  outShape: Shape;
}

export interface Saved {
  [key: string]: string;
}

export interface Forward {
  y: string;
  saved: Saved;
}

export interface Backward {
  /** Absent when the caller said the input needs no gradient (the network's input). */
  dx?: string;
  /** Gradients of the layer's weight and bias (param layers only). */
  dWeight?: string;
  /**
   * Instead of `dWeight`, a weight gradient of the form dW = dYᵀ·X (fc): the update then folds
   * the momentum term into the same Gemm (Gemm's C input), saving passes over a big tensor.
   */
  dWeightGemm?: { dy: string; x: string };
  dBias?: string;
}

export interface Rule<L extends LayerSpec> {
  forward(ctx: RuleContext, layer: L, x: string): Forward;
  backward(ctx: RuleContext, layer: L, dy: string, saved: Saved, needDx: boolean): Backward;
}

const pads2 = (p: number) => ints([p, p, p, p]);

/** Sum over a window of `size` channels around each channel (ONNX LRN's window), as an AveragePool·size on [N, 1, C, H·W]. */
function channelWindowMean(b: GraphBuilder, x: string, shape: Shape, size: number): string {
  const [c, h, w] = shape;
  const lo = Math.floor((size - 1) / 2);
  const hi = Math.ceil((size - 1) / 2);
  const r = b.op('Reshape', [x, b.int64s([0, 1, c, h * w])]);
  const avg = b.op('AveragePool', [r], { kernel_shape: ints([size, 1]), pads: ints([lo, 0, hi, 0]), strides: ints([1, 1]), count_include_pad: int(1) });
  return b.op('Reshape', [avg, b.int64s([0, c, h, w])]);
}

export const NCHWC_DOMAIN = 'com.microsoft.nchwc';

interface ConvGeometry {
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
function convolve(b: GraphBuilder, nchwcBlock: number, x: string, w: string, bias: string | undefined, geo: ConvGeometry): string {
  const { c, o, k, g } = geo;
  const cg = c / g, og = o / g, B = nchwcBlock;
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

const conv: Rule<ConvLayer> = {
  // Y = Conv(X, W, b)
  forward({ b, weight, bias, inShape, lowering }, l, x) {
    const y = convolve(b, lowering.nchwcBlock, x, weight!, bias!, { c: inShape[0], o: l.outChannels, k: l.kernel, g: l.group, stride: l.stride, pad: l.pad });
    return { y, saved: { x } };
  },
  // dX = ConvTranspose(dY, W) with output_padding restoring the input size (stride 4 / odd
  // sizes), or for stride 1 the equivalent Conv with the flipped kernel;
  // dW[o,c',i,j] = Σ_n Σ_yx dY[n,o,y,x]·Xpad[n, g(o)·C/g + c', s·y+i, s·x+j]: Gemms over per-tap
  // Slices of X, or a Conv of X with the batch moved to channels ([C/g, g·N, H, W]) by the kernel
  // dYᵀ [O, N, Ho, Wo], group g, dilation = stride, cropped to k×k, then [C/g, O] → [O, C/g].
  // db = ΣdY over N, H, W. (The input of the first conv needs no dX: the walk skips it.)
  backward({ b, weight, inShape, outShape, lowering }, l, dy, { x }, needDx) {
    const [c, h, w] = inShape;
    const [o, ho, wo] = outShape;
    const s = l.stride, p = l.pad, k = l.kernel, g = l.group, cg = c / g, og = o / g;
    const out: Backward = {};
    if (needDx) {
      if (lowering.convInputGrad === 'conv' && s === 1 && p <= k - 1) {
        // Stride 1: dX = Conv(dY, W'), W'[g·Cg + c', o', i, j] = W[g·Og + o', c', k−1−i, k−1−j],
        // padding k−1−p: a plain (fast) convolution.
        const swapped = g === 1
          ? b.op('Transpose', [weight!], { perm: ints([1, 0, 2, 3]) })
          : b.op('Reshape', [b.op('Transpose', [b.op('Reshape', [weight!, b.int64s([g, og, cg, k, k])])], { perm: ints([0, 2, 1, 3, 4]) }), b.int64s([c, og, k, k])]);
        const flipped = b.op('Slice', [swapped, b.int64s([-1, -1]), b.int64s([-(k + 1), -(k + 1)]), b.int64s([2, 3]), b.int64s([-1, -1])]);
        out.dx = convolve(b, lowering.nchwcBlock, dy, flipped, undefined, { c: o, o: c, k, g, stride: 1, pad: k - 1 - p });
      } else {
        const outputPadding = [h - (s * (ho - 1) + k - 2 * p), w - (s * (wo - 1) + k - 2 * p)];
        out.dx = b.op('ConvTranspose', [dy, weight!], { kernel_shape: ints([k, k]), strides: ints([s, s]), pads: pads2(p), group: int(g), output_padding: ints(outputPadding) });
      }
    }
    const im2col = lowering.convWeightGrad === 'gemm' || lowering.convWeightGrad === 'gather';
    const geometry = { inShape, outShape, kernel: k, stride: s, pad: p, group: g };
    if (lowering.convWeightGrad === 'gather' && (s === 1 || (g === 1 && !lowering.portableOps))) {
      out.dWeight = s === 1 ? convWeightGradByGather(b, x, dy, geometry) : stridedConvWeightGradByGather(b, x, dy, geometry);
    } else if (im2col && s > 1 && g === 1 && !lowering.portableOps) {
      // Strided (conv1: 11x11/4): im2col through SpaceToDepth, so that the k² strided gathers
      // become ⌈k/s⌉² contiguous Slices. Blocks: Xb[(di, dj, c), n, Y, X] = Xpad[n, c, s·Y + di,
      // s·X + dj]; then the conv is a ⌈k/s⌉² stride-1 conv over blocks with a kernel zero-padded
      // to s·⌈k/s⌉, and dW is the first k×k of that kernel's gradient.
      const kb = Math.ceil(k / s);
      const hb = ho - 1 + kb, wb = wo - 1 + kb; // blocks the windows touch
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
      out.dWeight = kb * s === k ? dwPadded : b.op('Slice', [dwPadded, b.int64s([0, 0]), b.int64s([k, k]), b.int64s([2, 3])]);
    } else if (im2col) {
      // im2col of X with the batch inside, one kernel tap per Slice: for tap (i, j) the Slice
      // X_ij[c, (n, y, x)] = Xpad[n, c, s·y + i, s·x + j] of the channel-major, zero-padded X, and
      // dW[o, c', i, j] = Σ_(n,y,x) dY[n, o, y, x] · X_ij[g·Cg + c', (n, y, x)]: per group, Gemms
      // (M = O/g, K = N·Ho·Wo, transB) over a few taps' Slices stacked (tapGemms).
      const xt = b.op('Transpose', [x], { perm: ints([1, 0, 2, 3]) }); // [C, N, H, W]
      const xp = p > 0 ? b.op('Pad', [xt, b.int64s([0, 0, p, p, 0, 0, p, p])]) : xt;
      const dyt = b.op('Reshape', [b.op('Transpose', [dy], { perm: ints([1, 0, 2, 3]) }), b.int64s([o, -1])]); // [O, N·Ho·Wo]
      const groupGrads: string[] = [];
      for (let gi = 0; gi < g; gi++) {
        const dyg = g === 1 ? dyt : b.op('Slice', [dyt, b.int64s([gi * og]), b.int64s([(gi + 1) * og]), b.int64s([0])]);
        const slices: string[] = [];
        for (let i = 0; i < k; i++) {
          for (let j = 0; j < k; j++) {
            const starts = [gi * cg, i, j], ends = [(gi + 1) * cg, i + s * (ho - 1) + 1, j + s * (wo - 1) + 1];
            slices.push(b.op('Reshape', [b.op('Slice', [xp, b.int64s(starts), b.int64s(ends), b.int64s([0, 2, 3]), b.int64s([1, s, s])]), b.int64s([cg, -1])]));
          }
        }
        // [O/g, k², Cg] → [O/g, Cg, k²]
        groupGrads.push(b.op('Transpose', [b.op('Reshape', [tapGemms(b, dyg, slices, cg), b.int64s([og, k * k, cg])])], { perm: ints([0, 2, 1]) }));
      }
      const dw = g === 1 ? groupGrads[0] : b.op('Concat', groupGrads, { axis: int(0) });
      out.dWeight = b.op('Reshape', [dw, b.int64s([o, cg, k, k])]);
    } else {
      const xt = g === 1
        ? b.op('Transpose', [x], { perm: ints([1, 0, 2, 3]) })
        : b.op('Reshape', [b.op('Transpose', [b.op('Reshape', [x, b.int64s([0, g, cg, h, w])])], { perm: ints([2, 1, 0, 3, 4]) }), b.int64s([cg, -1, h, w])]);
      const dyt = b.op('Transpose', [dy], { perm: ints([1, 0, 2, 3]) });
      let dw = b.op('Conv', [xt, dyt], { dilations: ints([s, s]), pads: pads2(p), group: int(g), strides: ints([1, 1]) }); // [C/g, O, Hk, Wk]
      const hk = h + 2 * p - s * (ho - 1);
      const wk = w + 2 * p - s * (wo - 1);
      if (hk !== k || wk !== k) dw = b.op('Slice', [dw, b.int64s([0, 0]), b.int64s([k, k]), b.int64s([2, 3])]);
      out.dWeight = b.op('Transpose', [dw], { perm: ints([1, 0, 2, 3]) });
    }
    out.dBias = b.op('ReduceSum', [dy, b.int64s([0, 2, 3])], { keepdims: int(0) });
    return out;
  },
};

const relu: Rule<LayerSpec> = {
  forward({ b }, _l, x) {
    const y = b.op('Relu', [x]);
    return { y, saved: { y } };
  },
  // dX = dY · (Y > 0)
  backward({ b }, _l, dy, { y }) {
    return { dx: b.op('Where', [b.op('Greater', [y, b.scalar(0)]), dy, b.scalar(0)]) };
  },
};

const maxpool: Rule<MaxPoolLayer> = {
  // Y, I = MaxPool(X) (I: flat NCHW index of each window's max; only the 'indices' backward
  // asks for it, and evaluation needs no backward)
  forward({ b, mode, lowering }, l, x): Forward {
    const attrs = { kernel_shape: ints([l.kernel, l.kernel]), strides: ints([l.stride, l.stride]), pads: pads2(l.pad) };
    if (mode === 'eval' || lowering.maxPoolGrad === 'compare') {
      const y = b.op('MaxPool', [x], attrs);
      return { y, saved: { x, y } };
    }
    const [y, indices] = b.node('MaxPool', [x], attrs, { outputs: 2 });
    return { y, saved: { x, indices } };
  },
  // dX = ScatterElements(zeros, I, dY, reduction='add') over the flattened input: overlapping
  // windows (3x3/2) send several gradients to one input element; they add up.
  backward(ctx, l, dy, { x, y, indices }) {
    const { b } = ctx;
    if (ctx.lowering.maxPoolGrad === 'compare') return { dx: maxPoolGradByCompare(ctx, l, dy, x, y) };
    const shape = b.op('Shape', [x]);
    const zeros = b.op('Reshape', [b.op('ConstantOfShape', [shape]), b.int64s([-1])]);
    const flat = b.op('ScatterElements', [zeros, b.op('Reshape', [indices, b.int64s([-1])]), b.op('Reshape', [dy, b.int64s([-1])])], { axis: int(0), reduction: str('add') });
    return { dx: b.op('Reshape', [flat, shape]) };
  },
};

/**
 * MaxPool's dX without its Indices output. For each tap (i, j) of the k×k window, in row-major
 * order, the strided Slice T_ij[n, c, y, x] = Xpad[n, c, s·y + i, s·x + j] is the tap's value
 * in window (y, x); the first tap equal to Y[y, x] takes dY[y, x] (`claimed` keeps later equal
 * taps out), which is the element onnxruntime's CPU kernel names in Indices: it walks the
 * window in the same order and keeps the first maximum (a strict `>`). So ties route as on the
 * CPU; equal values in *different* windows are different windows' maxima, as there. The k²
 * maps, stacked as channels [N, C·k², Ho, Wo], go back to the input positions in one grouped
 * ConvTranspose (group C, stride s, pads p) whose constant kernel is one-hot, W[c·k² + t, 0, i,
 * j] = [t = i·k + j]; where windows overlap (3x3/2) it adds, as ScatterElements' 'add' does.
 * Padding (-∞, never a maximum) is only needed for the Slices.
 */
function maxPoolGradByCompare({ b, inShape, outShape }: RuleContext, l: MaxPoolLayer, dy: string, x: string, y: string): string {
  const [c, h, w] = inShape;
  const [, ho, wo] = outShape;
  const k = l.kernel, s = l.stride, p = l.pad, taps = k * k;
  const xp = p > 0 ? b.op('Pad', [x, b.int64s([0, 0, p, p, 0, 0, p, p]), b.scalar(-3.4e38)]) : x;
  const one = b.scalar(1);
  let claimed = '';
  const grads: string[] = [];
  for (let i = 0; i < k; i++) {
    for (let j = 0; j < k; j++) {
      const tap = b.op('Slice', [xp, b.int64s([i, j]), b.int64s([i + s * (ho - 1) + 1, j + s * (wo - 1) + 1]), b.int64s([2, 3]), b.int64s([s, s])]);
      const equal = b.op('Cast', [b.op('Equal', [tap, y])], { to: int(1) });
      const taken = claimed ? b.op('Mul', [equal, b.op('Sub', [one, claimed])]) : equal;
      claimed = claimed ? b.op('Add', [claimed, taken]) : taken;
      grads.push(b.op('Reshape', [b.op('Mul', [taken, dy]), b.int64s([0, c, 1, ho * wo])]));
    }
  }
  const stacked = b.op('Reshape', [b.op('Concat', grads, { axis: int(2) }), b.int64s([0, c * taps, ho, wo])]);
  const kernel = new Float32Array(c * taps * taps);
  for (let ch = 0; ch < c; ch++) for (let t = 0; t < taps; t++) kernel[(ch * taps + t) * taps + t] = 1;
  const oneHot = b.constant(kernel, [c * taps, 1, k, k], 'maxpool_scatter');
  const outputPadding = [h - (s * (ho - 1) + k - 2 * p), w - (s * (wo - 1) + k - 2 * p)];
  return b.op('ConvTranspose', [stacked, oneHot], { kernel_shape: ints([k, k]), strides: ints([s, s]), pads: pads2(p), group: int(c), output_padding: ints(outputPadding) });
}

const lrn: Rule<LrnLayer> = {
  // Y = X · D^−β, D = bias + α/n · Σ_window X² (ONNX LRN). Train mode lowers it by hand so that
  // the backward can reuse D and D^−β; eval mode uses the LRN op.
  forward({ b, mode, inShape }, l, x): Forward {
    if (mode === 'eval') {
      return { y: b.op('LRN', [x], { size: int(l.size), alpha: float(l.alpha), beta: float(l.beta), bias: float(l.bias) }), saved: {} };
    }
    // α/n · Σ = α · mean (count_include_pad: the window average always divides by n)
    const d = b.op('Add', [b.op('Mul', [channelWindowMean(b, b.op('Mul', [x, x]), inShape, l.size), b.scalar(l.alpha)]), b.scalar(l.bias)]);
    const dPow = b.op('Pow', [d, b.scalar(-l.beta)]);
    const y = b.op('Mul', [x, dPow]);
    return { y, saved: { x, y, d, dPow } };
  },
  // dX_j = dY_j·D_j^−β − 2αβ/n · X_j · Σ_{c: j ∈ window(c)} dY_c·Y_c/D_c; the window is
  // symmetric, so that sum is the same channel-window sum (as a mean · n).
  backward({ b, inShape }, l, dy, { x, y, d, dPow }) {
    const t = channelWindowMean(b, b.op('Div', [b.op('Mul', [dy, y]), d]), inShape, l.size);
    const correction = b.op('Mul', [b.op('Mul', [x, t]), b.scalar(2 * l.alpha * l.beta)]);
    return { dx: b.op('Sub', [b.op('Mul', [dy, dPow]), correction]) };
  },
};

const flatten: Rule<LayerSpec> = {
  // Y = reshape(X, [N, C·H·W]) (channel-major, as NCHW gives)
  forward({ b }, _l, x) {
    return { y: b.op('Reshape', [x, b.int64s([0, -1])]), saved: {} };
  },
  backward({ b, inShape }, _l, dy) {
    return { dx: b.op('Reshape', [dy, b.int64s([0, ...inShape])]) };
  },
};

const dropout: Rule<DropoutLayer> = {
  // Y = X · M, M = keep/(1 − rate) (inverted dropout; the mask is a graph input, drawn in JS from
  // the seeded Rng, so a resumed run draws the same masks). Eval: identity.
  forward({ b, mode, mask }, l, x) {
    if (mode === 'eval' || l.rate === 0) return { y: x, saved: {} };
    return { y: b.op('Mul', [x, mask!]), saved: {} };
  },
  // dX = dY · M
  backward({ b, mask }, l, dy) {
    if (l.rate === 0) return { dx: dy };
    return { dx: b.op('Mul', [dy, mask!]) };
  },
};

const fc: Rule<FcLayer> = {
  // Y = X·Wᵀ + b
  forward({ b, weight, bias }, _l, x) {
    return { y: b.op('Gemm', [x, weight!, bias!], { transB: int(1) }), saved: { x } };
  },
  // dX = dY·W; dW = dYᵀ·X; db = Σ_n dY
  backward({ b, weight }, _l, dy, { x }, needDx) {
    return {
      dx: needDx ? b.op('MatMul', [dy, weight!]) : undefined,
      dWeightGemm: { dy, x }, // dW = Gemm(dY, X, transA=1), emitted by the caller (maybe fused with the update)
      dBias: b.op('ReduceSum', [dy, b.int64s([0])], { keepdims: int(0) }),
    };
  },
};

/** The table: layer kind → its forward and backward rule. */
export const RULES: { [K in LayerSpec['kind']]: Rule<Extract<LayerSpec, { kind: K }>> } = {
  conv,
  relu: relu as Rule<Extract<LayerSpec, { kind: 'relu' }>>,
  maxpool,
  lrn,
  flatten: flatten as Rule<Extract<LayerSpec, { kind: 'flatten' }>>,
  dropout,
  fc,
};
