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
import { type GraphBuilder, float, int, ints, str } from '@alexnet-stream/onnx-export';
import { type ConvGradGeometry, convInputGrad, convolve, convWeightGrad, pads2 } from './conv-lowering';

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

/** Sum over a window of `size` channels around each channel (ONNX LRN's window), as an AveragePool·size on [N, 1, C, H·W]. */
function channelWindowMean(b: GraphBuilder, x: string, shape: Shape, size: number): string {
  const [c, h, w] = shape;
  const lo = Math.floor((size - 1) / 2);
  const hi = Math.ceil((size - 1) / 2);
  const r = b.op('Reshape', [x, b.int64s([0, 1, c, h * w])]);
  const avg = b.op('AveragePool', [r], { kernel_shape: ints([size, 1]), pads: ints([lo, 0, hi, 0]), strides: ints([1, 1]), count_include_pad: int(1) });
  return b.op('Reshape', [avg, b.int64s([0, c, h, w])]);
}

const conv: Rule<ConvLayer> = {
  // Y = Conv(X, W, b)
  forward({ b, weight, bias, inShape, lowering }, l, x) {
    const y = convolve(b, lowering.nchwcBlock, x, weight!, bias!, { c: inShape[0], o: l.outChannels, k: l.kernel, g: l.group, stride: l.stride, pad: l.pad });
    return { y, saved: { x } };
  },
  // dX = ConvTranspose(dY, W), cropped to X's size (output_padding);
  // dW[o, c', i, j] = Σ_n Σ_yx dY[n, o, y, x] · Xpad[n, g(o)·C/g + c', s·y + i, s·x + j];
  // db = Σ dY over N, H, W.
  // How each is lowered (conv-lowering.ts) is a speed choice, not a result. (The input of the
  // first conv needs no dX: the walk skips it.)
  backward({ b, weight, inShape, outShape, lowering }, l, dy, { x }, needDx) {
    const geometry: ConvGradGeometry = { inShape, outShape, layer: l };
    return {
      ...(needDx ? { dx: convInputGrad(b, lowering, geometry, dy, weight!) } : {}),
      dWeight: convWeightGrad(b, lowering, geometry, dy, x),
      dBias: b.op('ReduceSum', [dy, b.int64s([0, 2, 3])], { keepdims: int(0) }),
    };
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
    const flat = b.op('ScatterElements', [zeros, b.op('Reshape', [indices, b.int64s([-1])]), b.op('Reshape', [dy, b.int64s([-1])])], {
      axis: int(0),
      reduction: str('add'),
    });
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
  const k = l.kernel,
    s = l.stride,
    p = l.pad,
    taps = k * k;
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
  return b.op('ConvTranspose', [stacked, oneHot], {
    kernel_shape: ints([k, k]),
    strides: ints([s, s]),
    pads: pads2(p),
    group: int(c),
    output_padding: ints(outputPadding),
  });
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
