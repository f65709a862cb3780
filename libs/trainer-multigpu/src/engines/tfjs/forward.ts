/**
 * The model spec lowered to tfjs ops: the *reference* forward pass (DESIGN §5). Other engines
 * (the ONNX inference graph, the ONNX training graph) are checked against this one, and tfjs
 * autodiff through it gives the reference gradients, so it is written to be obviously correct,
 * not fast: one small case per layer kind, each stating the convention it implements.
 *
 * Layouts. The spec's tensors are NCHW activations, OIHW conv weights `[out, in/group, kh, kw]`
 * and fc weights `[out, in]`. tfjs' conv2d/maxPool/LRN want NHWC, so the input is transposed to
 * NHWC once, activations stay NHWC through the conv part, and each conv weight is transposed
 * OIHW → HWIO where it is used (so gradients w.r.t. the weights come back in the spec's OIHW
 * layout). Flatten transposes back to NCHW first, so the flat order is channel-major (C, H, W)
 * exactly as an NCHW reshape gives (DESIGN §7).
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { NamedTensors, Rng } from '@alexnet-stream/core';
import { type LayerSpec, type ModelSpec, parameterList } from '@alexnet-stream/model-alexnet';
import { InputError } from '@alexnet-stream/core';
import type { Tf } from './backend';

/** Parameter name (`conv1.weight`, …) → tfjs tensor (or variable) in the spec's layout. */
export type TfParams = Record<string, tfjs.Tensor>;

export interface TfjsForwardOptions {
  /** Dropout layers are active only when training. */
  training: boolean;
  /**
   * Keep masks (1 = keep, 0 = drop) by dropout layer name, in the layer input's NCHW / [N, F]
   * shape. A given mask is used as is (so two engines can be fed the same mask); the output is
   * `x · mask / (1 − rate)` (inverted dropout).
   */
  dropoutMasks?: Record<string, tfjs.Tensor>;
  /** Draws the masks not given in `dropoutMasks` (see `drawDropoutMask`); required then. */
  rng?: Rng;
}

/**
 * Tensors for `weights`, shaped as `parameterList(spec)` says. Checks that every parameter is
 * present with the right number of elements. The tensors hold copies of the data; the caller
 * owns (and disposes) them.
 */
export function weightsToTensors(tf: Tf, spec: ModelSpec, weights: NamedTensors): TfParams {
  const out: TfParams = {};
  for (const p of parameterList(spec)) {
    const data = weights[p.name];
    const size = p.shape.reduce((a, b) => a * b, 1);
    if (!data) throw new InputError(`weights: missing parameter ${p.name} (shape [${p.shape.join(', ')}])`, { code: 'ERR_WEIGHTS_MISMATCH' });
    if (data.length !== size) {
      throw new InputError(`weights: ${p.name} has ${data.length} values, expected ${size} (shape [${p.shape.join(', ')}])`, { code: 'ERR_WEIGHTS_MISMATCH' });
    }
    // A copy: tfjs' cpu backend would otherwise keep (alias) the caller's array.
    out[p.name] = tf.tensor(Float32Array.from(data), p.shape, 'float32');
  }
  return out;
}

/**
 * A dropout keep mask drawn from `rng`: element i is kept (1) when `rng.nextFloat() >= rate`,
 * else 0, drawn in row-major order of `shape` (NCHW or [N, F]). The engine draws the masks of
 * a step layer by layer in spec order.
 */
export function drawDropoutMask(rng: Rng, shape: number[], rate: number): Float32Array {
  const size = shape.reduce((a, b) => a * b, 1);
  const mask = new Float32Array(size);
  for (let i = 0; i < size; i++) mask[i] = rng.nextFloat() >= rate ? 1 : 0;
  return mask;
}

/**
 * Logits `[N, numClasses]` of `spec` for a float32 NCHW `input` `[N, C, H, W]`: a pure function
 * of spec, weights, input (and, when training, the dropout masks). Differentiable w.r.t.
 * `weights` by tfjs autodiff. Inputs are not disposed; intermediates are (tf.tidy).
 */
export function tfjsForward(tf: Tf, spec: ModelSpec, weights: TfParams, input: tfjs.Tensor4D, options: TfjsForwardOptions): tfjs.Tensor2D {
  const expected = [spec.inputChannels, spec.inputSize, spec.inputSize];
  if (input.rank !== 4 || input.shape[1] !== expected[0] || input.shape[2] !== expected[1] || input.shape[3] !== expected[2]) {
    throw new Error(`tfjsForward: input shape [${input.shape.join(', ')}] does not match the spec's [N, ${expected.join(', ')}]`);
  }
  return tf.tidy(() => {
    // NHWC while the activation is spatial; [N, F] after flatten.
    let x: tfjs.Tensor = tf.transpose(input, [0, 2, 3, 1]);
    for (const layer of spec.layers) x = applyLayer(tf, layer, x, weights, options);
    if (x.rank !== 2) throw new Error(`tfjsForward: the spec ends with a rank-${x.rank} activation; expected [N, numClasses] logits (last layer fc)`);
    return x as tfjs.Tensor2D;
  });
}

function param(weights: TfParams, name: string): tfjs.Tensor {
  const t = weights[name];
  if (!t) throw new Error(`tfjsForward: missing parameter ${name}`);
  return t;
}

function applyLayer(tf: Tf, layer: LayerSpec, x: tfjs.Tensor, weights: TfParams, options: TfjsForwardOptions): tfjs.Tensor {
  switch (layer.kind) {
    case 'conv': {
      // ONNX Conv(group=g): input channels and output channels are both split into g equal
      // consecutive blocks; output block j sees only input block j. tfjs conv2d has no group
      // argument, so: split, convolve each block with its weight block, concatenate.
      const x4 = x as tfjs.Tensor4D; // NHWC
      const w = param(weights, `${layer.name}.weight`); // OIHW [out, in/g, kh, kw]
      const b = param(weights, `${layer.name}.bias`); // [out]
      const wHwio = tf.transpose(w, [2, 3, 1, 0]) as tfjs.Tensor4D; // [kh, kw, in/g, out]
      const padded =
        layer.pad > 0
          ? tf.pad(x4, [
              [0, 0],
              [layer.pad, layer.pad],
              [layer.pad, layer.pad],
              [0, 0],
            ])
          : x4; // zero padding
      const xs = layer.group === 1 ? [padded] : tf.split(padded, layer.group, 3);
      const ws = layer.group === 1 ? [wHwio] : tf.split(wHwio, layer.group, 3);
      const ys = xs.map((xg, g) => tf.conv2d(xg as tfjs.Tensor4D, ws[g] as tfjs.Tensor4D, layer.stride, 'valid'));
      const y = ys.length === 1 ? ys[0] : tf.concat(ys, 3);
      return tf.add(y, b); // bias broadcasts over the last (channel) axis
    }
    case 'relu':
      return tf.relu(x);
    case 'maxpool': {
      // Floor-mode output size; padding (if any) with −∞ so that it never wins the max, as
      // ONNX MaxPool's pads do.
      const x4 = x as tfjs.Tensor4D;
      const padded =
        layer.pad > 0
          ? tf.pad(
              x4,
              [
                [0, 0],
                [layer.pad, layer.pad],
                [layer.pad, layer.pad],
                [0, 0],
              ],
              -Infinity,
            )
          : x4;
      return tf.maxPool(padded, layer.kernel, layer.stride, 'valid');
    }
    case 'lrn': {
      // Spec (ONNX): y = x / (bias + alpha/size · Σ_{|c'−c| ≤ (size−1)/2} x_{c'}²)^beta.
      // tfjs: y = x / (bias + alpha_tf · Σ_{|c'−c| ≤ depthRadius} x_{c'}²)^beta over the last
      // axis, α not divided by anything: depthRadius = (size−1)/2, alpha_tf = alpha/size.
      if (layer.size % 2 !== 1) throw new Error(`${layer.name}: LRN size ${layer.size} is even; only odd (symmetric) windows are supported`);
      return tf.localResponseNormalization(x as tfjs.Tensor4D, (layer.size - 1) / 2, layer.bias, layer.alpha / layer.size, layer.beta);
    }
    case 'flatten': {
      // Channel-major (C, H, W) order: back to NCHW, then reshape.
      const nchw = x.rank === 4 ? tf.transpose(x, [0, 3, 1, 2]) : x;
      return tf.reshape(nchw, [nchw.shape[0], -1]);
    }
    case 'fc': {
      // y = x · Wᵀ + b with W [out, in] (ONNX Gemm transB=1).
      if (x.rank !== 2) throw new Error(`${layer.name}: fc needs a flat input (add a flatten layer)`);
      const w = param(weights, `${layer.name}.weight`);
      const b = param(weights, `${layer.name}.bias`);
      return tf.add(tf.matMul(x as tfjs.Tensor2D, w as tfjs.Tensor2D, false, true), b);
    }
    case 'dropout': {
      if (!options.training || layer.rate === 0) return x;
      // Masks are NCHW / [N, F] like everything the outside sees; the activation is NHWC here.
      const s = x.shape as number[];
      const nchwShape = x.rank === 4 ? [s[0], s[3], s[1], s[2]] : s;
      let mask = options.dropoutMasks?.[layer.name];
      if (mask) {
        if (mask.shape.join(',') !== nchwShape.join(',')) {
          throw new Error(`${layer.name}: dropout mask shape [${mask.shape.join(', ')}] does not match the activation's [${nchwShape.join(', ')}]`);
        }
      } else {
        if (!options.rng) throw new Error(`${layer.name}: training needs dropoutMasks.${layer.name} or an rng`);
        mask = tf.tensor(drawDropoutMask(options.rng, nchwShape, layer.rate), nchwShape, 'float32');
      }
      const maskHere = x.rank === 4 ? tf.transpose(mask, [0, 2, 3, 1]) : mask;
      return tf.mul(x, tf.div(maskHere, 1 - layer.rate));
    }
  }
}
