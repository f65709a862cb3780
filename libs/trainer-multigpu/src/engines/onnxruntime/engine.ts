/**
 * The onnxruntime engine (DESIGN §5): one generated ONNX graph per SGD step (forward, softmax-CE,
 * backward, update: graph/training-graph.ts) and one for evaluation, run by onnxruntime-node.
 *
 * Memory: weights and velocities live in JS-owned Float32Arrays, one set, fed to each run and
 * handed to it as pre-allocated outputs that onnxruntime fills in place (DESIGN §2): a run
 * allocates no 2x244 MB of new parameters in JS.
 *
 * Steps per run: the train graph runs inside an ONNX Loop (graph/step-loop.ts), so `stepGroup`
 * does up to `stepsPerRun` steps in one `run`: onnxruntime-node copies every output once more
 * after a run (0.36 s for AlexNet's 488 MB of state), and this pays that once per group.
 *
 * Partial last batches: the graphs' batch dimension is symbolic (`N`), so the same session runs
 * any batch size (onnxruntime re-plans its memory pattern per input shape, once per size).
 *
 * Dropout masks are drawn in JS from a seeded `Rng` (step by step, layer by layer in spec order,
 * row-major, keep when `nextFloat() >= rate`: the convention of tfjsForward's `drawDropoutMask`)
 * and fed as inputs; `getRngState`/`setRngState` make a resumed run draw the same masks.
 *
 * `run` blocks the JS thread for the whole step (onnxruntime-node is synchronous inside, DESIGN
 * §2): loaders must run in worker threads.
 */
import * as os from 'node:os';
import { AlexnetStreamError, check, checkOptional, InputError, InvalidParameterError, type NamedTensors, Rng, type RngState } from '@alexnet-stream/core';
import type { ModelSpec, ParamInfo } from '@alexnet-stream/model-alexnet';
import {
  createSessionOn,
  DeviceError,
  encodeModel,
  executionProvidersFor as providersForDevices,
  loadOnnxRuntime,
  primaryDeviceKind,
  type Ort,
} from '@alexnet-stream/onnx-export';
import {
  type BatchGroup,
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
import { DEFAULT_LOWERING, type LoweringOptions, PORTABLE_LOWERING } from '../../graph/rules';
import { buildGraph, type BuiltGraph, velocityName } from '../../graph/training-graph';
import { finalName, initialName, STEP_COUNT, stepInputName, stepMetricName, steppedTrainGraph } from '../../graph/step-loop';
import { nchwcBlockSize } from './nchwc';
import type { OrtDeviceEngine } from './device-engine';

export interface OrtEngineOptions {
  optimizer?: Partial<OptimizerConfig>;
  /** The training loss (label smoothing); default plain cross-entropy. */
  loss?: Partial<LossConfig>;
  /** The usual batch size; only used to validate that batches are not larger (memory). Default: no limit. */
  batchSize?: number;
  /**
   * Most SGD steps per onnxruntime run (`stepGroup`). Default 8: the copies of the whole state
   * around each run (into the Loop's outputs, then onnxruntime-node's copy of every output) are
   * paid once per 8 steps (AlexNet at 227: ~0.36 s per run; at 113, batch 64, 8 instead of 4
   * steps per run made training 1.13x faster, bench/ab-train-step.mjs); the caller's stacked
   * batches cost stepsPerRun x batch of memory.
   */
  stepsPerRun?: number;
  /** Seed of the dropout mask stream. Default 0. */
  seed?: number;
  /**
   * Devices in preference order: `cpu`, `webgpu`, `cuda:0`, … Default `['cpu']`. On `webgpu` the
   * engine keeps its state on the GPU between steps (device-engine.ts) and builds the portable
   * graph (graph/rules.ts PORTABLE_LOWERING); on `cuda` the portable graph in the step Loop.
   */
  devices?: string[];
  /** onnxruntime execution providers as is (overrides `devices`). */
  executionProviders?: Ort.InferenceSession.ExecutionProviderConfig[];
  /** Threads of onnxruntime's intra-op pool (the cores this worker owns). Default: all cores. */
  intraOpThreads?: number;
  /**
   * Whether idle intra-op threads spin between ops (onnxruntime's own default: yes). Default
   * here: false, because the loader's worker threads share these cores (DESIGN §6): measured on
   * 2 busy cores, spinning cost ~20% more CPU per image for the same wall time. True may win a
   * few percent where the engine owns its cores alone.
   */
  allowSpinning?: boolean;
  /**
   * onnxruntime's execution mode. 'sequential' (default): one chain of big ops, each split over
   * the intra-op pool. 'parallel' also runs independent branches (a conv's dX and dW) at once on
   * `interOpThreads` threads; for A/B benchmarks (bench/ab-train-step.mjs).
   */
  executionMode?: 'sequential' | 'parallel';
  /** Threads of onnxruntime's inter-op pool (only used by the 'parallel' mode). Default 1. */
  interOpThreads?: number;
  /** onnxruntime's profiler: writes `<prefix>_<date>.json` when the engine is disposed. */
  profilePrefix?: string;
  /** One line on stderr about the sessions created. */
  verbose?: boolean;
  /** Lowering variants (graph/rules.ts): same results, different speed; for benchmarks. */
  lowering?: Partial<LoweringOptions>;
}

/** `cpu` → 'cpu'; `webgpu` → 'webgpu'; `cuda:N` → { name: 'cuda', deviceId: N } (onnx-export's devices.ts). */
export const executionProvidersFor = providersForDevices;

const providerName = (e: Ort.InferenceSession.ExecutionProviderConfig) => (typeof e === 'string' ? e : e.name);

/**
 * A session for one of the engine's graphs, through onnx-export's provider selection: a device
 * this machine cannot run on is a one-line DeviceError (exit code 2), anything else names the graph.
 */
export async function createSession(graph: BuiltGraph, options: Ort.InferenceSession.SessionOptions): Promise<Ort.InferenceSession> {
  const eps = options.executionProviders ?? ['cpu'];
  const devices = eps.map((e) => {
    const name = providerName(e);
    const id = typeof e === 'string' ? undefined : (e as { deviceId?: number }).deviceId;
    return name === 'cuda' && id !== undefined ? `cuda:${id}` : name;
  });
  try {
    return await createSessionOn(encodeModel(graph.model), devices, options);
  } catch (err) {
    if (err instanceof DeviceError) throw err;
    throw new AlexnetStreamError(`onnxruntime: could not load the ${graph.kind} graph`, { code: 'ERR_ONNXRUNTIME_SESSION', cause: err });
  }
}

const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * One buffer per parameter, fed to a run as the Loop's initial state and fetched from it as the
 * final state: the same memory. That is safe because of how a Loop runs: its inputs are read
 * only as the first step's feeds, the steps' states live in onnxruntime's arena, and the final
 * state is copied into the outputs after the last step, when the inputs are no longer read.
 * (One set of 244 MB instead of the two a plain graph needs, whose outputs are written while
 * its inputs are still being read.) The tests compare runs with this aliasing against tfjs'
 * reference step and against step-by-step runs.
 */
class ParamBuffers {
  readonly data: Record<string, Float32Array> = {};
  readonly tensors: Record<string, Ort.Tensor> = {};
  constructor(params: ParamInfo[], init: (p: ParamInfo) => Float32Array) {
    const ort = loadOnnxRuntime();
    for (const p of params) {
      this.data[p.name] = init(p);
      this.tensors[p.name] = new ort.Tensor('float32', this.data[p.name], p.shape);
    }
  }
}

export class OrtEngine implements TrainingEngine {
  readonly name = 'onnxruntime';
  private rng: Rng;
  private readonly weights: ParamBuffers;
  private readonly velocities: ParamBuffers | undefined;
  /** Plain SGD keeps the velocities it was given, unchanged (as sgdUpdateReference). */
  private keptVelocities: NamedTensors | undefined;
  private readonly stepCount = new BigInt64Array(1);
  private readonly lrs: Float32Array;
  /** Dropout masks of a run, one buffer per dropout layer, grown to the largest count·size seen. */
  private masks: Float32Array[];
  private readonly imageSize: number;

  constructor(
    readonly spec: ModelSpec,
    private readonly trainGraph: BuiltGraph,
    private readonly trainSession: Ort.InferenceSession,
    private readonly evalSession: Ort.InferenceSession,
    weights: NamedTensors,
    readonly optimizer: OptimizerConfig,
    seed: number,
    private readonly maxBatch: number | undefined,
    readonly stepsPerRun: number,
  ) {
    const params = trainGraph.params;
    checkNamed('weights', params, weights);
    this.weights = new ParamBuffers(params, (p) => Float32Array.from(weights[p.name]));
    // fill(0) touches every page now: a fresh Float32Array is lazily mapped zero pages, and the
    // first run writing into it would pay ~60k page faults for fc6 alone (and RSS would creep).
    this.velocities = trainGraph.hasVelocities ? new ParamBuffers(params, (p) => new Float32Array(sizeOf(p.shape)).fill(0)) : undefined;
    this.rng = new Rng(seed);
    this.imageSize = spec.inputChannels * spec.inputSize * spec.inputSize;
    this.masks = trainGraph.masks.map(() => new Float32Array(0));
    this.lrs = new Float32Array(stepsPerRun);
  }

  /** Checks `count` stacked batches of `size` images (count 1: a plain batch). */
  private checkBatches({ data, labels, size, count }: BatchGroup): void {
    if (!Number.isInteger(size) || size < 1) throw new InputError(`batch: size must be a positive integer, got ${size}`, { code: 'ERR_BATCH_SHAPE' });
    if (this.maxBatch !== undefined && size > this.maxBatch) {
      throw new InputError(`batch: ${size} images, more than the engine's batchSize ${this.maxBatch}`, { code: 'ERR_BATCH_SHAPE' });
    }
    const s = this.spec.inputSize,
      c = this.spec.inputChannels;
    const stacked = count > 1 ? `${count} batches of ` : '';
    if (data.length !== count * size * this.imageSize) {
      throw new InputError(`batch: data has ${data.length} values, expected ${stacked}${size}x${c}x${s}x${s} = ${count * size * this.imageSize}`, {
        code: 'ERR_BATCH_SHAPE',
      });
    }
    if (labels.length !== count * size) throw new InputError(`batch: ${labels.length} labels for ${stacked}${size} images`, { code: 'ERR_BATCH_SHAPE' });
    const k = this.spec.numClasses;
    for (let i = 0; i < labels.length; i++) {
      const where = count > 1 ? `image ${i % size} of batch ${Math.floor(i / size) + 1}` : `image ${i}`;
      if (!(labels[i] >= 0 && labels[i] < k)) throw new InputError(`batch: label ${labels[i]} of ${where} is outside [0, ${k})`, { code: 'ERR_BATCH_SHAPE' });
    }
  }

  private batchFeeds(batch: EngineBatch): Record<string, Ort.Tensor> {
    this.checkBatches({ ...batch, count: 1 });
    const ort = loadOnnxRuntime();
    const s = this.spec.inputSize;
    return {
      data: new ort.Tensor('float32', batch.data, [batch.size, this.spec.inputChannels, s, s]),
      labels: new ort.Tensor('int32', batch.labels, [batch.size]),
    };
  }

  /** Draws a run's masks (step by step, each in spec order, row-major, keep when nextFloat() >= rate). */
  private drawMasks(count: number, size: number): Record<string, Ort.Tensor> {
    const ort = loadOnnxRuntime();
    const feeds: Record<string, Ort.Tensor> = {};
    const masks = this.trainGraph.masks;
    const perStep = masks.map((m) => size * sizeOf(m.shape));
    masks.forEach((m, i) => {
      if (this.masks[i].length < count * perStep[i]) this.masks[i] = new Float32Array(count * perStep[i]);
      feeds[stepInputName(m.input)] = new ort.Tensor('float32', this.masks[i].subarray(0, count * perStep[i]), [count, size, ...m.shape]);
    });
    const rng = this.rng;
    for (let step = 0; step < count; step++) {
      masks.forEach((m, i) => {
        const values = this.masks[i].subarray(step * perStep[i], (step + 1) * perStep[i]);
        const keep = 1 / (1 - m.rate);
        for (let j = 0; j < values.length; j++) values[j] = rng.nextFloat() >= m.rate ? keep : 0;
      });
    }
    return feeds;
  }

  async step(batch: EngineBatch, lr: number): Promise<BatchMetrics> {
    return (await this.stepGroup({ ...batch, count: 1 }, lr))[0];
  }

  async stepGroup(group: BatchGroup, lr: number | readonly number[]): Promise<BatchMetrics[]> {
    const { count, size } = group;
    check.integer('count', count, { min: 1, max: this.stepsPerRun });
    const lrs = typeof lr === 'number' ? new Array<number>(count).fill(lr) : lr;
    check.that('lr', lrs.length === count, `one learning rate per step (${count})`, lrs.length);
    for (const v of lrs) check.number('lr', v);
    this.checkBatches(group);
    this.lrs.set(lrs);
    this.stepCount[0] = BigInt(count);
    const ort = loadOnnxRuntime();
    const s = this.spec.inputSize;
    const feeds: Record<string, Ort.Tensor> = {
      [STEP_COUNT]: new ort.Tensor('int64', this.stepCount, []),
      [stepInputName('data')]: new ort.Tensor('float32', group.data, [count, size, this.spec.inputChannels, s, s]),
      [stepInputName('labels')]: new ort.Tensor('int32', group.labels, [count, size]),
      [stepInputName('lr')]: new ort.Tensor('float32', this.lrs.subarray(0, count), [count]),
      ...this.drawMasks(count, size),
    };
    const fetches: Record<string, Ort.Tensor | null> = {
      [stepMetricName('loss')]: null,
      [stepMetricName('top1_errors')]: null,
      [stepMetricName('top5_errors')]: null,
    };
    // The state goes in and comes out in the same buffers (ParamBuffers says why that is safe).
    for (const p of this.trainGraph.params) {
      feeds[initialName(p.name)] = fetches[finalName(p.name)] = this.weights.tensors[p.name];
      if (this.velocities) feeds[initialName(velocityName(p.name))] = fetches[finalName(velocityName(p.name))] = this.velocities.tensors[p.name];
    }
    const out = await this.trainSession.run(feeds, fetches);
    const loss = out[stepMetricName('loss')].data as Float32Array;
    const top1 = out[stepMetricName('top1_errors')].data as Float32Array;
    const top5 = out[stepMetricName('top5_errors')].data as Float32Array;
    return Array.from({ length: count }, (_, k) => ({ loss: loss[k], top1Errors: Math.round(top1[k]), top5Errors: Math.round(top5[k]), size }));
  }

  async evaluate(batch: EngineBatch): Promise<BatchMetrics> {
    const feeds: Record<string, Ort.Tensor> = this.batchFeeds(batch);
    for (const p of this.trainGraph.params) feeds[p.name] = this.weights.tensors[p.name];
    const out = await this.evalSession.run(feeds, ['loss', 'top1_errors', 'top5_errors']);
    return metricsOf(out, batch.size);
  }

  /** Logits of a batch without dropout (evaluation graph), e.g. for tests and prediction. */
  async logits(batch: EngineBatch): Promise<Float32Array> {
    const feeds: Record<string, Ort.Tensor> = this.batchFeeds(batch);
    for (const p of this.trainGraph.params) feeds[p.name] = this.weights.tensors[p.name];
    const out = await this.evalSession.run(feeds, ['logits']);
    return Float32Array.from(out.logits.data as Float32Array);
  }

  getWeights(): NamedTensors {
    return copyOut(this.weights);
  }
  setWeights(weights: NamedTensors): void {
    copyIn('weights', this.trainGraph.params, this.weights, weights);
  }
  getVelocities(): NamedTensors {
    if (!this.velocities) {
      return Object.fromEntries(
        this.trainGraph.params.map((p) => [p.name, this.keptVelocities ? Float32Array.from(this.keptVelocities[p.name]) : new Float32Array(sizeOf(p.shape))]),
      );
    }
    return copyOut(this.velocities);
  }
  setVelocities(velocities: NamedTensors): void {
    if (!this.velocities) {
      checkNamed('velocities', this.trainGraph.params, velocities);
      this.keptVelocities = Object.fromEntries(this.trainGraph.params.map((p) => [p.name, Float32Array.from(velocities[p.name])]));
      return;
    }
    copyIn('velocities', this.trainGraph.params, this.velocities, velocities);
  }
  getRngState(): RngState {
    return this.rng.state();
  }
  setRngState(state: unknown): void {
    const s = state as RngState;
    if (!s || !Array.isArray(s.s) || s.s.length !== 4 || !s.s.every((x) => Number.isInteger(x) && x >= 0 && x <= 0xffffffff)) {
      throw new InvalidParameterError('state', '{ s: [4 uint32], spareNormal } (from getRngState)', state);
    }
    this.rng = new Rng(s);
  }

  /** Ends profiling (when enabled) and returns the profile file's path. */
  endProfiling(): void {
    this.trainSession.endProfiling();
  }

  async dispose(): Promise<void> {
    await this.trainSession.release();
    await this.evalSession.release();
  }
}

export function metricsOf(out: Ort.InferenceSession.ReturnType, size: number): BatchMetrics {
  return {
    loss: (out.loss.data as Float32Array)[0],
    top1Errors: Math.round((out.top1_errors.data as Float32Array)[0]),
    top5Errors: Math.round((out.top5_errors.data as Float32Array)[0]),
    size,
  };
}

export function checkNamed(what: string, params: ParamInfo[], values: NamedTensors): void {
  if (!values || typeof values !== 'object') throw new InvalidParameterError(what, 'an object of Float32Arrays by parameter name', values);
  for (const p of params) {
    const v = values[p.name];
    if (!(v instanceof Float32Array)) {
      throw new InputError(`${what}: missing parameter ${p.name} (Float32Array of shape [${p.shape.join(', ')}])`, { code: 'ERR_WEIGHTS_MISMATCH' });
    }
    if (v.length !== sizeOf(p.shape)) {
      throw new InputError(`${what}: ${p.name} has ${v.length} values, expected ${sizeOf(p.shape)} (shape [${p.shape.join(', ')}])`, {
        code: 'ERR_WEIGHTS_MISMATCH',
      });
    }
  }
}

function copyOut(buffers: ParamBuffers): NamedTensors {
  return Object.fromEntries(Object.entries(buffers.data).map(([name, data]) => [name, Float32Array.from(data)]));
}

function copyIn(what: string, params: ParamInfo[], buffers: ParamBuffers, values: NamedTensors): void {
  checkNamed(what, params, values);
  for (const p of params) buffers.data[p.name].set(values[p.name]);
}

/** Session options tuned for one training worker on CPU (or the given execution providers). */
export function sessionOptionsFor(options: OrtEngineOptions): Ort.InferenceSession.SessionOptions {
  const threads = check.integer('intraOpThreads', options.intraOpThreads ?? os.availableParallelism?.() ?? os.cpus().length, { min: 1, max: 1024 });
  return {
    executionProviders: options.executionProviders ?? executionProvidersFor(options.devices ?? ['cpu']),
    graphOptimizationLevel: 'all',
    executionMode: options.executionMode ?? 'sequential', // one chain of big ops: see OrtEngineOptions.executionMode
    intraOpNumThreads: threads,
    interOpNumThreads: options.interOpThreads ?? 1,
    enableCpuMemArena: true,
    enableMemPattern: true,
    enableProfiling: options.profilePrefix !== undefined,
    profileFilePrefix: options.profilePrefix,
    logSeverityLevel: 3,
    ...(options.allowSpinning !== true ? { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } } : {}),
  };
}

/** An onnxruntime engine for `spec`, starting from `weights` (velocities zero). */
export async function createOrtEngine(spec: ModelSpec, weights: NamedTensors, options: OrtEngineOptions = {}): Promise<OrtEngine | OrtDeviceEngine> {
  const optimizer: OptimizerConfig = { ...DEFAULT_OPTIMIZER, ...options.optimizer };
  checkOptimizer(optimizer);
  const seed = check.integer('seed', options.seed ?? 0, { min: 0 });
  checkOptional.integer('batchSize', options.batchSize, { min: 1 });
  const sessionOptions = sessionOptionsFor(options);
  const device = primaryDeviceKind((sessionOptions.executionProviders ?? ['cpu']).map(providerName));
  if (device === 'webgpu') {
    const { createOrtDeviceEngine } = require('./device-engine') as typeof import('./device-engine');
    return createOrtDeviceEngine(spec, weights, { ...options, optimizer, seed }, sessionOptions);
  }
  // NCHWc kernels are onnxruntime's CPU kernels; a GPU provider gets the portable graph.
  const lowering: LoweringOptions =
    device === 'cpu' ? { ...DEFAULT_LOWERING, nchwcBlock: await nchwcBlockSize(), ...options.lowering } : { ...PORTABLE_LOWERING, ...options.lowering };
  const stepsPerRun = check.integer('stepsPerRun', options.stepsPerRun ?? 8, { min: 1 });
  const loss = checkLoss({ ...DEFAULT_LOSS, ...options.loss });
  const trainGraph = steppedTrainGraph(buildGraph(spec, 'train', optimizer, lowering, loss));
  const evalGraph = buildGraph(spec, 'eval', undefined, lowering);
  const t0 = Date.now();
  const trainSession = await createSession(trainGraph, sessionOptions);
  const evalSession = await createSession(evalGraph, { ...sessionOptions, enableProfiling: false });
  if (options.verbose) {
    process.stderr.write(
      `onnxruntime: training + evaluation graphs for ${spec.preset} ${spec.inputSize}x${spec.inputSize} loaded in ${Date.now() - t0} ms (${sessionOptions.intraOpNumThreads} threads)\n`,
    );
  }
  return new OrtEngine(spec, trainGraph, trainSession, evalSession, weights, optimizer, seed, options.batchSize, stepsPerRun);
}
