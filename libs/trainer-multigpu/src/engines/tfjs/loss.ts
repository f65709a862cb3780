/**
 * Loss, gradients and error counts around the tfjs forward: mean softmax cross-entropy, tfjs
 * autodiff of it w.r.t. every parameter (the reference gradients of DESIGN §5), and top-1 /
 * top-k error counts.
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { NamedTensors } from '@alexnet-stream/core';
import { type ModelSpec, parameterList } from '@alexnet-stream/model-alexnet';
import type { Tf } from './backend';
import { type TfjsForwardOptions, type TfParams, tfjsForward } from './forward';

/**
 * Mean over the batch of −Σ_k q_k · log softmax(logits)_k, with q the one-hot label, or with
 * label smoothing ε the targets (1 − ε)·onehot + ε/K (PyTorch's CrossEntropyLoss(label_smoothing)).
 * With ε = 0: −log softmax(logits)[label].
 */
export function tfjsSoftmaxCrossEntropy(tf: Tf, logits: tfjs.Tensor2D, labels: Int32Array, labelSmoothing = 0): tfjs.Scalar {
  return tf.tidy(() => {
    const k = logits.shape[1];
    const oneHot = tf.oneHot(tf.tensor1d(labels, 'int32'), k).toFloat();
    const target = labelSmoothing > 0 ? tf.add(tf.mul(oneHot, 1 - labelSmoothing), labelSmoothing / k) : oneHot;
    const perImage = tf.neg(tf.sum(tf.mul(target, tf.logSoftmax(logits)), 1));
    return tf.mean(perImage) as tfjs.Scalar;
  });
}

export interface TfjsLossAndGradients {
  /** Mean cross-entropy (float32, as computed by tfjs). */
  loss: number;
  /** [N, numClasses] row-major. */
  logits: Float32Array;
  /** d loss / d parameter, in the spec's layouts (OIHW, [out, in]). */
  grads: NamedTensors;
}

/**
 * Loss and tfjs-autodiff gradients of `spec` at `params` for one batch: the reference that the
 * ONNX training graph's backward is tested against. With `training: true`, dropout masks come
 * from `options.dropoutMasks` or are drawn from `options.rng` (as the engine does).
 */
export function tfjsLossAndGradients(
  tf: Tf,
  spec: ModelSpec,
  params: TfParams,
  input: tfjs.Tensor4D,
  labels: Int32Array,
  options: TfjsLossOptions,
): TfjsLossAndGradients {
  const { loss, logits, grads } = tfjsLossAndGradientTensors(tf, spec, params, input, labels, options);
  const out: TfjsLossAndGradients = { loss: loss.dataSync()[0], logits: Float32Array.from(logits.dataSync()), grads: {} };
  for (const [name, g] of Object.entries(grads)) out.grads[name] = Float32Array.from(g.dataSync());
  tf.dispose([loss, logits, ...Object.values(grads)]);
  return out;
}

/** The forward's options plus the loss's: label smoothing ε (default 0). */
export interface TfjsLossOptions extends TfjsForwardOptions {
  labelSmoothing?: number;
}

/** As `tfjsLossAndGradients`, leaving everything as tensors (the caller disposes them). */
export function tfjsLossAndGradientTensors(
  tf: Tf,
  spec: ModelSpec,
  params: TfParams,
  input: tfjs.Tensor4D,
  labels: Int32Array,
  options: TfjsLossOptions,
): { loss: tfjs.Scalar; logits: tfjs.Tensor2D; grads: TfParams } {
  const names = parameterList(spec).map((p) => p.name);
  let logits: tfjs.Tensor2D | undefined;
  const f = (...ps: tfjs.Tensor[]): tfjs.Scalar => {
    const byName: TfParams = {};
    names.forEach((n, i) => {
      byName[n] = ps[i];
    });
    const y = tfjsForward(tf, spec, byName, input, options);
    logits = tf.keep(y);
    return tfjsSoftmaxCrossEntropy(tf, y, labels, options.labelSmoothing ?? 0);
  };
  const { value, grads } = tf.valueAndGrads(f)(
    names.map((n) => {
      const p = params[n];
      if (!p) throw new Error(`tfjsLossAndGradients: missing parameter ${n}`);
      return p;
    }),
  );
  const out: TfParams = {};
  names.forEach((n, i) => {
    out[n] = grads[i];
  });
  return { loss: value, logits: logits!, grads: out };
}

/**
 * Images whose label is not among the k highest logits. Rank = how many classes score strictly
 * higher than the label (ties count in the label's favour; with float logits ties are rare).
 */
export function countTopKErrors(logits: ArrayLike<number>, labels: ArrayLike<number>, numClasses: number, k: number): number {
  let errors = 0;
  for (let i = 0; i < labels.length; i++) {
    const own = logits[i * numClasses + labels[i]];
    if (Number.isNaN(own)) {
      errors++;
      continue;
    } // a diverged net is wrong, not right
    let higher = 0;
    for (let j = 0; j < numClasses; j++) if (logits[i * numClasses + j] > own) higher++;
    if (higher >= k) errors++;
  }
  return errors;
}
