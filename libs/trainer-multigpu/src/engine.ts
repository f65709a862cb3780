/**
 * What the trainer needs from an engine (DESIGN §5): step on a batch, evaluate a batch, and
 * get/set weights and velocities as named Float32Arrays (names from model-alexnet's
 * `parameterList`, e.g. `conv1.weight`). Engines: onnxruntime (default, a generated training
 * graph) and tfjs (optional, autodiff; the reference in tests).
 */
import { check, type NamedTensors } from '@alexnet-stream/core';
import type { ModelSpec } from '@alexnet-stream/model-alexnet';

/** The seed's optimizer (DESIGN §7). */
export interface OptimizerConfig {
  /** false: plain SGD (the seed's use_momentum: False). */
  useMomentum: boolean;
  /** Nesterov momentum (the seed's use_nesterov_momentum). */
  nesterov: boolean;
  /** μ, default 0.9. */
  momentum: number;
  /** λ on weights only (not biases), default 5e-4. */
  weightDecay: number;
  /** Biases learn at this multiple of lr, without decay; the seed uses 2. */
  biasLrMultiplier: number;
}

/** The training loss: softmax cross-entropy, against label-smoothed targets when `labelSmoothing` > 0. */
export interface LossConfig {
  /**
   * ε: targets (1 − ε)·onehot + ε/K (PyTorch's `CrossEntropyLoss(label_smoothing=ε)`), for the
   * training step only; evaluation reports plain cross-entropy. Default 0.
   */
  labelSmoothing: number;
}

export const DEFAULT_LOSS: LossConfig = { labelSmoothing: 0 };

/** A loss config, checked once where an engine is created. */
export function checkLoss(loss: LossConfig): LossConfig {
  check.number('loss.labelSmoothing', loss.labelSmoothing, { min: 0, max: 1, maxExclusive: true });
  return loss;
}

export const DEFAULT_OPTIMIZER: OptimizerConfig = {
  useMomentum: true,
  nesterov: false,
  momentum: 0.9,
  weightDecay: 5e-4,
  biasLrMultiplier: 2,
};

/** Every field of an optimizer config, checked once where an engine is created. */
export function checkOptimizer(o: OptimizerConfig): OptimizerConfig {
  check.boolean('optimizer.useMomentum', o.useMomentum);
  check.boolean('optimizer.nesterov', o.nesterov);
  check.number('optimizer.momentum', o.momentum, { min: 0, max: 1, maxExclusive: true });
  check.number('optimizer.weightDecay', o.weightDecay, { min: 0 });
  check.number('optimizer.biasLrMultiplier', o.biasLrMultiplier, { min: 0 });
  return o;
}

/** A batch ready for the engine: float32 NCHW (already mean-subtracted and cropped). */
export interface EngineBatch {
  data: Float32Array;
  labels: Int32Array;
  /** Number of images (data.length / (3 * inputSize²)). */
  size: number;
}

/** Sums over the batch, so that results of several batches (and workers) add up. */
export interface BatchMetrics {
  /** Mean softmax cross-entropy over the batch. */
  loss: number;
  /** Number of images whose label is not the top-1 prediction. */
  top1Errors: number;
  /** Number of images whose label is not among the top-5 predictions. */
  top5Errors: number;
  size: number;
}

/** `count` batches of `size` images each, stacked: data [count·size, C, S, S], labels [count·size]. */
export interface BatchGroup {
  data: Float32Array;
  labels: Int32Array;
  size: number;
  count: number;
}

export interface TrainingEngine {
  readonly name: string;
  readonly spec: ModelSpec;
  /** One SGD step (forward with dropout, loss, backward, update) at learning rate `lr`. */
  step(batch: EngineBatch, lr: number): Promise<BatchMetrics>;
  /** The most steps `stepGroup` takes in one call (absent: the engine has no `stepGroup`). */
  readonly stepsPerRun?: number;
  /**
   * `group.count` SGD steps, one per stacked batch, at `lr` (one number: every step; a list: the
   * lr of each step, `group.count` of them, as a per-iteration schedule gives them): the same as
   * that many `step` calls, in fewer round trips (an engine whose per-call cost is high,
   * onnxruntime-node's output copies, amortizes it). Metrics per step, in order.
   */
  stepGroup?(group: BatchGroup, lr: number | readonly number[]): Promise<BatchMetrics[]>;
  /** Forward without dropout; no update. */
  evaluate(batch: EngineBatch): Promise<BatchMetrics>;
  /** Current weights (copies: safe to keep across steps). */
  getWeights(): NamedTensors;
  setWeights(weights: NamedTensors): void;
  getVelocities(): NamedTensors;
  setVelocities(velocities: NamedTensors): void;
  /** Dropout's random stream, so a checkpoint can resume it exactly. */
  getRngState(): unknown;
  setRngState(state: unknown): void;
  dispose(): Promise<void> | void;
}
