/**
 * The tfjs training engine (DESIGN §5, optional engine): forward by the reference lowering,
 * tfjs autodiff for the backward pass, the seed's optimizer (sgd-reference.ts states the exact
 * formulas) as tfjs ops. Fast only with tfjs-node(-gpu); on pure-JS tfjs it is for tests and
 * tiny models (full AlexNet ≈ 0.006 img/s, DESIGN §2).
 */
import type * as tfjs from '@tensorflow/tfjs';
import { check, InputError, InvalidParameterError, type NamedTensors, Rng, type RngState } from '@alexnet-stream/core';
import { type ModelSpec, parameterList } from '@alexnet-stream/model-alexnet';
import {
  type BatchMetrics,
  checkLoss,
  checkOptimizer,
  DEFAULT_LOSS,
  DEFAULT_OPTIMIZER,
  type EngineBatch,
  type LossConfig,
  type OptimizerConfig,
  type TrainingEngine,
} from '../../engine';
import { loadTfjs, type Tf } from './backend';
import { tfjsForward, type TfParams, weightsToTensors } from './forward';
import { countTopKErrors, tfjsLossAndGradientTensors, tfjsSoftmaxCrossEntropy } from './loss';

export interface TfjsEngineOptions {
  /** Fields not given take DEFAULT_OPTIMIZER's values (the seed's). */
  optimizer: Partial<OptimizerConfig>;
  /** The training loss (label smoothing); default plain cross-entropy. */
  loss?: Partial<LossConfig>;
  /** Seeds the dropout masks' random stream. */
  seed: number;
  /** One line on stderr naming the tfjs backend chosen. */
  verbose?: boolean;
}

export async function createTfjsEngine(spec: ModelSpec, weights: NamedTensors, options: TfjsEngineOptions): Promise<TrainingEngine> {
  const optimizer: OptimizerConfig = { ...DEFAULT_OPTIMIZER, ...options.optimizer };
  checkOptimizer(optimizer);
  check.integer('seed', options.seed, { min: 0 });
  const { tf, backend } = await loadTfjs({ verbose: options.verbose });
  const loss = checkLoss({ ...DEFAULT_LOSS, ...options.loss });
  return new TfjsEngine(tf, backend, spec, weights, optimizer, options.seed, loss);
}

class TfjsEngine implements TrainingEngine {
  readonly name: string;
  private readonly params: Record<string, tfjs.Variable> = {};
  private readonly velocities: Record<string, tfjs.Variable> = {};
  private readonly roles: Record<string, 'weight' | 'bias'> = {};
  private readonly shapes: Record<string, number[]> = {};
  private rng: Rng;
  private disposed = false;

  constructor(
    private readonly tf: Tf,
    backend: string,
    readonly spec: ModelSpec,
    weights: NamedTensors,
    private readonly optimizer: OptimizerConfig,
    seed: number,
    private readonly loss: LossConfig = DEFAULT_LOSS,
  ) {
    this.name = `tfjs-${backend}`;
    this.rng = new Rng(seed);
    const initial = weightsToTensors(tf, spec, weights); // validates names and sizes
    for (const p of parameterList(spec)) {
      this.roles[p.name] = p.role;
      this.shapes[p.name] = p.shape;
      // Unnamed variables: tfjs names must be unique per process, and several engines may coexist.
      this.params[p.name] = tf.variable(initial[p.name], true);
      this.velocities[p.name] = tf.variable(tf.zerosLike(initial[p.name]), false);
      initial[p.name].dispose();
    }
  }

  private input(batch: EngineBatch): tfjs.Tensor4D {
    const { inputChannels: c, inputSize: s, numClasses } = this.spec;
    check.integer('batch.size', batch.size, { min: 1 });
    if (batch.data.length !== batch.size * c * s * s) {
      throw new InputError(`batch: ${batch.data.length} values for ${batch.size} images of ${c}x${s}x${s} (expected ${batch.size * c * s * s})`, {
        code: 'ERR_BATCH_SHAPE',
      });
    }
    if (batch.labels.length !== batch.size) throw new InputError(`batch: ${batch.labels.length} labels for ${batch.size} images`, { code: 'ERR_BATCH_SHAPE' });
    for (const label of batch.labels)
      if (!(label >= 0 && label < numClasses)) throw new InputError(`batch: label ${label} outside 0..${numClasses - 1}`, { code: 'ERR_BATCH_SHAPE' });
    return this.tf.tensor4d(batch.data, [batch.size, c, s, s], 'float32');
  }

  private metrics(loss: number, logits: ArrayLike<number>, batch: EngineBatch): BatchMetrics {
    const k = this.spec.numClasses;
    return {
      loss,
      top1Errors: countTopKErrors(logits, batch.labels, k, 1),
      top5Errors: countTopKErrors(logits, batch.labels, k, Math.min(5, k)),
      size: batch.size,
    };
  }

  async step(batch: EngineBatch, lr: number): Promise<BatchMetrics> {
    this.checkAlive();
    check.number('lr', lr, { min: 0 });
    const tf = this.tf;
    const x = this.input(batch);
    const { loss, logits, grads } = tfjsLossAndGradientTensors(tf, this.spec, this.params, x, batch.labels, {
      training: true,
      rng: this.rng,
      labelSmoothing: this.loss.labelSmoothing,
    });
    const lossValue = (await loss.data())[0];
    const logitValues = await logits.data();
    const o = this.optimizer;
    tf.tidy(() => {
      for (const name of Object.keys(this.params)) {
        const w = this.params[name],
          v = this.velocities[name],
          g = grads[name];
        const isWeight = this.roles[name] === 'weight';
        const lrHere = isWeight ? lr : o.biasLrMultiplier * lr;
        const gEff = isWeight && o.weightDecay !== 0 ? tf.add(g, tf.mul(w, o.weightDecay)) : g;
        if (!o.useMomentum) {
          w.assign(tf.sub(w, tf.mul(gEff, lrHere)));
        } else {
          // momentum: v ← μv − lr'g';  Nesterov (the seed's form): v ← μ²v − (1+μ)lr'g';  W ← W + v
          const step = o.nesterov
            ? tf.sub(tf.mul(v, o.momentum * o.momentum), tf.mul(gEff, (1 + o.momentum) * lrHere))
            : tf.sub(tf.mul(v, o.momentum), tf.mul(gEff, lrHere));
          v.assign(step);
          w.assign(tf.add(w, step));
        }
      }
    });
    tf.dispose([x, loss, logits, ...Object.values(grads)]);
    return this.metrics(lossValue, logitValues, batch);
  }

  async evaluate(batch: EngineBatch): Promise<BatchMetrics> {
    this.checkAlive();
    const tf = this.tf;
    const x = this.input(batch);
    const [loss, logits] = tf.tidy(() => {
      const y = tfjsForward(tf, this.spec, this.params as TfParams, x, { training: false });
      return [tfjsSoftmaxCrossEntropy(tf, y, batch.labels), y] as const;
    });
    const lossValue = (await loss.data())[0];
    const logitValues = await logits.data();
    tf.dispose([x, loss, logits]);
    return this.metrics(lossValue, logitValues, batch);
  }

  getWeights(): NamedTensors {
    return this.read(this.params);
  }
  setWeights(weights: NamedTensors): void {
    this.write(this.params, weights, 'setWeights');
  }
  getVelocities(): NamedTensors {
    return this.read(this.velocities);
  }
  setVelocities(velocities: NamedTensors): void {
    this.write(this.velocities, velocities, 'setVelocities');
  }

  private read(vars: Record<string, tfjs.Variable>): NamedTensors {
    this.checkAlive();
    const out: NamedTensors = {};
    for (const [name, v] of Object.entries(vars)) out[name] = Float32Array.from(v.dataSync()); // a copy
    return out;
  }

  private write(vars: Record<string, tfjs.Variable>, values: NamedTensors, what: string): void {
    this.checkAlive();
    // Validate everything first, so that a bad call changes nothing.
    for (const name of Object.keys(vars)) {
      const size = this.shapes[name].reduce((a, b) => a * b, 1);
      if (!values[name]) throw new InputError(`${what}: missing ${name}`, { code: 'ERR_WEIGHTS_MISMATCH' });
      if (values[name].length !== size) {
        throw new InputError(`${what}: ${name} has ${values[name].length} values, expected ${size} (shape [${this.shapes[name].join(', ')}])`, {
          code: 'ERR_WEIGHTS_MISMATCH',
        });
      }
    }
    for (const [name, v] of Object.entries(vars)) {
      // A copy: the cpu backend would alias the caller's array, and assign() shares t's data.
      const t = this.tf.tensor(Float32Array.from(values[name]), this.shapes[name], 'float32');
      v.assign(t);
      t.dispose();
    }
  }

  getRngState(): RngState {
    return this.rng.state();
  }

  setRngState(state: unknown): void {
    const s = state as RngState;
    if (
      !s ||
      !Array.isArray(s.s) ||
      s.s.length !== 4 ||
      !s.s.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32) ||
      !(s.spareNormal === null || typeof s.spareNormal === 'number')
    ) {
      throw new InvalidParameterError('state', '{ s: [4 uint32], spareNormal: number | null } (from getRngState)', state);
    }
    this.rng = new Rng(s);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.tf.dispose([...Object.values(this.params), ...Object.values(this.velocities)]);
  }

  private checkAlive(): void {
    if (this.disposed) throw new Error(`${this.name} engine: used after dispose()`);
  }
}
