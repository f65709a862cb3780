/**
 * The tfjs training engine (DESIGN §5, optional engine): forward by the reference lowering,
 * tfjs autodiff for the backward pass, the seed's optimizer (sgd-reference.ts states the exact
 * formulas) as tfjs ops. Fast only with tfjs-node(-gpu); on pure-JS tfjs it is for tests and
 * tiny models (full AlexNet ≈ 0.006 img/s, DESIGN §2).
 */
import type * as tfjs from '@tensorflow/tfjs';
import { NamedTensors, Rng, RngState } from '@alexnet-stream/core';
import { ModelSpec, parameterList } from '@alexnet-stream/model-alexnet';
import { type BatchMetrics, DEFAULT_OPTIMIZER, type EngineBatch, type OptimizerConfig, type TrainingEngine } from '../../engine';
import { loadTfjs, Tf } from './backend';
import { tfjsForward, TfParams, weightsToTensors } from './forward';
import { countTopKErrors, tfjsLossAndGradientTensors, tfjsSoftmaxCrossEntropy } from './loss';

export interface TfjsEngineOptions {
  /** Fields not given take DEFAULT_OPTIMIZER's values (the seed's). */
  optimizer: Partial<OptimizerConfig>;
  /** Seeds the dropout masks' random stream. */
  seed: number;
  /** One line on stderr naming the tfjs backend chosen. */
  verbose?: boolean;
}

export async function createTfjsEngine(spec: ModelSpec, weights: NamedTensors, options: TfjsEngineOptions): Promise<TrainingEngine> {
  const optimizer: OptimizerConfig = { ...DEFAULT_OPTIMIZER, ...options.optimizer };
  validateOptimizer(optimizer);
  if (!Number.isInteger(options.seed)) throw new Error(`Expected an integer for seed but received ${options.seed}`);
  const { tf, backend } = await loadTfjs({ verbose: options.verbose });
  return new TfjsEngine(tf, backend, spec, weights, optimizer, options.seed);
}

function validateOptimizer(o: OptimizerConfig): void {
  const check = (ok: boolean, what: string, expected: string, got: unknown) => {
    if (!ok) throw new Error(`Expected ${expected} for optimizer.${what} but received ${JSON.stringify(got)}`);
  };
  check(typeof o.useMomentum === 'boolean', 'useMomentum', 'a boolean', o.useMomentum);
  check(typeof o.nesterov === 'boolean', 'nesterov', 'a boolean', o.nesterov);
  check(o.momentum >= 0 && o.momentum < 1, 'momentum', 'a number in [0, 1)', o.momentum);
  check(o.weightDecay >= 0 && Number.isFinite(o.weightDecay), 'weightDecay', 'a finite number >= 0', o.weightDecay);
  check(o.biasLrMultiplier >= 0 && Number.isFinite(o.biasLrMultiplier), 'biasLrMultiplier', 'a finite number >= 0', o.biasLrMultiplier);
}

class TfjsEngine implements TrainingEngine {
  readonly name: string;
  private readonly params: Record<string, tfjs.Variable> = {};
  private readonly velocities: Record<string, tfjs.Variable> = {};
  private readonly roles: Record<string, 'weight' | 'bias'> = {};
  private readonly shapes: Record<string, number[]> = {};
  private rng: Rng;
  private disposed = false;

  constructor(private readonly tf: Tf, backend: string, readonly spec: ModelSpec, weights: NamedTensors, private readonly optimizer: OptimizerConfig, seed: number) {
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
    if (!(Number.isInteger(batch.size) && batch.size >= 1)) throw new Error(`batch.size must be a positive integer, got ${batch.size}`);
    if (batch.data.length !== batch.size * c * s * s) throw new Error(`batch: ${batch.data.length} values for ${batch.size} images of ${c}x${s}x${s} (expected ${batch.size * c * s * s})`);
    if (batch.labels.length !== batch.size) throw new Error(`batch: ${batch.labels.length} labels for ${batch.size} images`);
    for (const label of batch.labels) if (!(label >= 0 && label < numClasses)) throw new Error(`batch: label ${label} outside 0..${numClasses - 1}`);
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
    if (!(lr >= 0 && Number.isFinite(lr))) throw new Error(`step: lr must be a finite number >= 0, got ${lr}`);
    const tf = this.tf;
    const x = this.input(batch);
    const { loss, logits, grads } = tfjsLossAndGradientTensors(tf, this.spec, this.params, x, batch.labels, { training: true, rng: this.rng });
    const lossValue = (await loss.data())[0];
    const logitValues = await logits.data();
    const o = this.optimizer;
    tf.tidy(() => {
      for (const name of Object.keys(this.params)) {
        const w = this.params[name], v = this.velocities[name], g = grads[name];
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

  getWeights(): NamedTensors { return this.read(this.params); }
  setWeights(weights: NamedTensors): void { this.write(this.params, weights, 'setWeights'); }
  getVelocities(): NamedTensors { return this.read(this.velocities); }
  setVelocities(velocities: NamedTensors): void { this.write(this.velocities, velocities, 'setVelocities'); }

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
      if (!values[name]) throw new Error(`${what}: missing ${name}`);
      if (values[name].length !== size) throw new Error(`${what}: ${name} has ${values[name].length} values, expected ${size} (shape [${this.shapes[name].join(', ')}])`);
    }
    for (const [name, v] of Object.entries(vars)) {
      // A copy: the cpu backend would alias the caller's array, and assign() shares t's data.
      const t = this.tf.tensor(Float32Array.from(values[name]), this.shapes[name], 'float32');
      v.assign(t);
      t.dispose();
    }
  }

  getRngState(): RngState { return this.rng.state(); }

  setRngState(state: unknown): void {
    const s = state as RngState;
    if (!s || !Array.isArray(s.s) || s.s.length !== 4 || !s.s.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32) || !(s.spareNormal === null || typeof s.spareNormal === 'number')) {
      throw new Error(`setRngState: expected {s: [4 uint32], spareNormal: number|null}, got ${JSON.stringify(state)}`);
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
