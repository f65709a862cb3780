/**
 * The onnxruntime engine (DESIGN §5): one generated ONNX graph per SGD step (forward, softmax-CE,
 * backward, update: graph/training-graph.ts) and one for evaluation, run by onnxruntime-node.
 *
 * Memory: weights and velocities live in JS-owned Float32Arrays, two sets (A and B). A step
 * feeds set A and hands set B to `run` as pre-allocated outputs, which onnxruntime fills in
 * place (DESIGN §2); then the sets swap. So a step allocates no 2x244 MB of new parameters.
 *
 * Partial last batches: the graphs' batch dimension is symbolic (`N`), so the same session runs
 * any batch size (onnxruntime re-plans its memory pattern per input shape, once per size).
 *
 * Dropout masks are drawn in JS from a seeded `Rng` (layer by layer in spec order, row-major,
 * keep when `nextFloat() >= rate`: the convention of tfjsForward's `drawDropoutMask`) and fed as
 * inputs; `getRngState`/`setRngState` make a resumed run draw the same masks.
 *
 * `run` blocks the JS thread for the whole step (onnxruntime-node is synchronous inside, DESIGN
 * §2): loaders must run in worker threads.
 */
import * as os from 'node:os';
import * as ort from 'onnxruntime-node';
import { ModelSpec, ParamInfo } from '@alexnet-stream/model-alexnet';
import { encodeModel } from '@alexnet-stream/onnx-export';
import { Rng, RngState } from '@alexnet-stream/stream-io';
import { BatchMetrics, DEFAULT_OPTIMIZER, EngineBatch, NamedTensors, OptimizerConfig, TrainingEngine } from '../../engine';
import { DEFAULT_LOWERING, LoweringOptions } from '../../graph/rules';
import { buildGraph, BuiltGraph, MaskInput, newName, velocityName } from '../../graph/training-graph';
import { nchwcBlockSize } from './nchwc';

export interface OrtEngineOptions {
  optimizer?: Partial<OptimizerConfig>;
  /** The usual batch size; only used to validate that batches are not larger (memory). Default: no limit. */
  batchSize?: number;
  /** Seed of the dropout mask stream. Default 0. */
  seed?: number;
  /** Devices in preference order: `cpu`, `cuda:0`, `cuda:1`, … Default `['cpu']`. */
  devices?: string[];
  /** onnxruntime execution providers as is (overrides `devices`). */
  executionProviders?: ort.InferenceSession.ExecutionProviderConfig[];
  /** Threads of onnxruntime's intra-op pool (the cores this worker owns). Default: all cores. */
  intraOpThreads?: number;
  /**
   * Whether idle intra-op threads spin between ops (onnxruntime's own default: yes). Default
   * here: false, because the loader's worker threads share these cores (DESIGN §6): measured on
   * 2 busy cores, spinning cost ~20% more CPU per image for the same wall time. True may win a
   * few percent where the engine owns its cores alone.
   */
  allowSpinning?: boolean;
  /** onnxruntime's profiler: writes `<prefix>_<date>.json` when the engine is disposed. */
  profilePrefix?: string;
  /** One line on stderr about the sessions created. */
  verbose?: boolean;
  /** Lowering variants (graph/rules.ts): same results, different speed; for benchmarks. */
  lowering?: Partial<LoweringOptions>;
}

/** `cpu` → 'cpu'; `cuda:N` → { name: 'cuda', deviceId: N }. */
export function executionProvidersFor(devices: string[]): ort.InferenceSession.ExecutionProviderConfig[] {
  if (!Array.isArray(devices) || devices.length === 0) throw new Error(`Expected a non-empty list of devices (cpu, cuda:0, …) for devices but received ${JSON.stringify(devices)}`);
  return devices.map((d) => {
    if (d === 'cpu') return 'cpu';
    const m = /^cuda(?::(\d+))?$/.exec(d);
    if (m) return { name: 'cuda', deviceId: m[1] === undefined ? 0 : Number(m[1]) };
    throw new Error(`Expected cpu or cuda:<index> for device but received ${JSON.stringify(d)}`);
  });
}

const providerName = (e: ort.InferenceSession.ExecutionProviderConfig) => (typeof e === 'string' ? e : e.name);

function usesCuda(eps: readonly ort.InferenceSession.ExecutionProviderConfig[]): boolean {
  return eps.some((e) => providerName(e) === 'cuda');
}

async function createSession(graph: BuiltGraph, options: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(encodeModel(graph.model), options);
  } catch (err) {
    const message = (err as Error).message;
    if (usesCuda(options.executionProviders ?? []) && /cuda|shared librar/i.test(message)) {
      throw new Error(
        `onnxruntime: the CUDA execution provider could not be loaded (${message.split('\n')[0]}). The installed onnxruntime-node ` +
          'ships CPU binaries only unless its install script fetched the CUDA 12 ones: reinstall it where the download host is reachable with ' +
          '`ONNXRUNTIME_NODE_INSTALL_CUDA=v12 npm rebuild onnxruntime-node` (CUDA 12 and cuDNN 9 must be installed), or train on --devices cpu.',
      );
    }
    throw new Error(`onnxruntime: could not load the ${graph.kind} graph: ${message}`);
  }
}

const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

interface ParamBuffers {
  data: Float32Array;
  tensor: ort.Tensor;
}

/** Two sets of buffers; `current` holds the live values, `spare` receives the next step's. */
class DoubleBuffer {
  current: Record<string, ParamBuffers> = {};
  spare: Record<string, ParamBuffers> = {};
  constructor(params: ParamInfo[], init: (p: ParamInfo) => Float32Array) {
    for (const p of params) {
      const a = init(p);
      // fill(0) touches every page now: a fresh Float32Array is lazily mapped zero pages, and the
      // first step writing into it would pay ~60k page faults for fc6 alone (and RSS would creep).
      const b = new Float32Array(a.length).fill(0);
      this.current[p.name] = { data: a, tensor: new ort.Tensor('float32', a, p.shape) };
      this.spare[p.name] = { data: b, tensor: new ort.Tensor('float32', b, p.shape) };
    }
  }
  swap(): void {
    [this.current, this.spare] = [this.spare, this.current];
  }
}

export class OrtEngine implements TrainingEngine {
  readonly name = 'onnxruntime';
  private rng: Rng;
  private readonly weights: DoubleBuffer;
  private readonly velocities: DoubleBuffer | undefined;
  /** Plain SGD keeps the velocities it was given, unchanged (as sgdUpdateReference). */
  private keptVelocities: NamedTensors | undefined;
  private readonly lrTensor = new ort.Tensor('float32', new Float32Array(1), []);
  /** Dropout mask buffers by batch size (a handful of sizes: full and last partial). */
  private readonly maskBuffers = new Map<number, { mask: MaskInput; tensor: ort.Tensor }[]>();
  private readonly imageSize: number;

  constructor(
    readonly spec: ModelSpec,
    private readonly trainGraph: BuiltGraph,
    private readonly trainSession: ort.InferenceSession,
    private readonly evalSession: ort.InferenceSession,
    weights: NamedTensors,
    readonly optimizer: OptimizerConfig,
    seed: number,
    private readonly maxBatch: number | undefined,
  ) {
    const params = trainGraph.params;
    checkNamed('weights', params, weights);
    this.weights = new DoubleBuffer(params, (p) => Float32Array.from(weights[p.name]));
    this.velocities = trainGraph.hasVelocities ? new DoubleBuffer(params, (p) => new Float32Array(sizeOf(p.shape)).fill(0)) : undefined;
    this.rng = new Rng(seed);
    this.imageSize = spec.inputChannels * spec.inputSize * spec.inputSize;
  }

  private batchFeeds(batch: EngineBatch): Record<string, ort.Tensor> {
    const { size, data, labels } = batch;
    if (!Number.isInteger(size) || size < 1) throw new Error(`batch: size must be a positive integer, got ${size}`);
    if (this.maxBatch !== undefined && size > this.maxBatch) throw new Error(`batch: ${size} images, more than the engine's batchSize ${this.maxBatch}`);
    if (data.length !== size * this.imageSize) {
      throw new Error(`batch: data has ${data.length} values, expected ${size}x${this.spec.inputChannels}x${this.spec.inputSize}x${this.spec.inputSize} = ${size * this.imageSize}`);
    }
    if (labels.length !== size) throw new Error(`batch: ${labels.length} labels for ${size} images`);
    const k = this.spec.numClasses;
    for (let i = 0; i < size; i++) {
      if (!(labels[i] >= 0 && labels[i] < k)) throw new Error(`batch: label ${labels[i]} of image ${i} is outside [0, ${k})`);
    }
    const s = this.spec.inputSize;
    return {
      data: new ort.Tensor('float32', data, [size, this.spec.inputChannels, s, s]),
      labels: new ort.Tensor('int32', labels, [size]),
    };
  }

  /** Draws this step's masks (spec order, row-major, keep when nextFloat() >= rate) into reused buffers. */
  private drawMasks(size: number): Record<string, ort.Tensor> {
    let buffers = this.maskBuffers.get(size);
    if (!buffers) {
      buffers = this.trainGraph.masks.map((mask) => ({ mask, tensor: new ort.Tensor('float32', new Float32Array(size * sizeOf(mask.shape)), [size, ...mask.shape]) }));
      this.maskBuffers.set(size, buffers);
    }
    const feeds: Record<string, ort.Tensor> = {};
    for (const { mask, tensor } of buffers) {
      const values = tensor.data as Float32Array;
      const keep = 1 / (1 - mask.rate);
      const rng = this.rng;
      for (let i = 0; i < values.length; i++) values[i] = rng.nextFloat() >= mask.rate ? keep : 0;
      feeds[mask.input] = tensor;
    }
    return feeds;
  }

  async step(batch: EngineBatch, lr: number): Promise<BatchMetrics> {
    if (!Number.isFinite(lr)) throw new Error(`step: learning rate must be a finite number, got ${lr}`);
    const feeds: Record<string, ort.Tensor> = { ...this.batchFeeds(batch), ...this.drawMasks(batch.size) };
    (this.lrTensor.data as Float32Array)[0] = lr;
    feeds.lr = this.lrTensor;
    const fetches: Record<string, ort.Tensor | null> = { loss: null, top1_errors: null, top5_errors: null };
    for (const p of this.trainGraph.params) {
      feeds[p.name] = this.weights.current[p.name].tensor;
      fetches[newName(p.name)] = this.weights.spare[p.name].tensor;
      if (this.velocities) {
        feeds[velocityName(p.name)] = this.velocities.current[p.name].tensor;
        fetches[newName(velocityName(p.name))] = this.velocities.spare[p.name].tensor;
      }
    }
    const out = await this.trainSession.run(feeds, fetches);
    this.weights.swap();
    this.velocities?.swap();
    return metricsOf(out, batch.size);
  }

  async evaluate(batch: EngineBatch): Promise<BatchMetrics> {
    const feeds: Record<string, ort.Tensor> = this.batchFeeds(batch);
    for (const p of this.trainGraph.params) feeds[p.name] = this.weights.current[p.name].tensor;
    const out = await this.evalSession.run(feeds, ['loss', 'top1_errors', 'top5_errors']);
    return metricsOf(out, batch.size);
  }

  /** Logits of a batch without dropout (evaluation graph), e.g. for tests and prediction. */
  async logits(batch: EngineBatch): Promise<Float32Array> {
    const feeds: Record<string, ort.Tensor> = this.batchFeeds(batch);
    for (const p of this.trainGraph.params) feeds[p.name] = this.weights.current[p.name].tensor;
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
      return Object.fromEntries(this.trainGraph.params.map((p) => [p.name, this.keptVelocities ? Float32Array.from(this.keptVelocities[p.name]) : new Float32Array(sizeOf(p.shape))]));
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
      throw new Error(`setRngState: expected { s: [4 uint32], spareNormal } (from getRngState) but received ${JSON.stringify(state)}`);
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

function metricsOf(out: ort.InferenceSession.ReturnType, size: number): BatchMetrics {
  return {
    loss: (out.loss.data as Float32Array)[0],
    top1Errors: Math.round((out.top1_errors.data as Float32Array)[0]),
    top5Errors: Math.round((out.top5_errors.data as Float32Array)[0]),
    size,
  };
}

function checkNamed(what: string, params: ParamInfo[], values: NamedTensors): void {
  if (!values || typeof values !== 'object') throw new Error(`${what}: expected an object of Float32Arrays by parameter name`);
  for (const p of params) {
    const v = values[p.name];
    if (!(v instanceof Float32Array)) throw new Error(`${what}: missing parameter ${p.name} (Float32Array of shape [${p.shape.join(', ')}])`);
    if (v.length !== sizeOf(p.shape)) throw new Error(`${what}: ${p.name} has ${v.length} values, expected ${sizeOf(p.shape)} (shape [${p.shape.join(', ')}])`);
  }
}

function copyOut(buffers: DoubleBuffer): NamedTensors {
  return Object.fromEntries(Object.entries(buffers.current).map(([name, b]) => [name, Float32Array.from(b.data)]));
}

function copyIn(what: string, params: ParamInfo[], buffers: DoubleBuffer, values: NamedTensors): void {
  checkNamed(what, params, values);
  for (const p of params) buffers.current[p.name].data.set(values[p.name]);
}

/** Session options tuned for one training worker on CPU (or the given execution providers). */
export function sessionOptionsFor(options: OrtEngineOptions): ort.InferenceSession.SessionOptions {
  const threads = options.intraOpThreads ?? os.availableParallelism?.() ?? os.cpus().length;
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`Expected a positive integer for intraOpThreads but received ${options.intraOpThreads}`);
  return {
    executionProviders: options.executionProviders ?? executionProvidersFor(options.devices ?? ['cpu']),
    graphOptimizationLevel: 'all',
    executionMode: 'sequential', // one chain of big ops: inter-op parallelism only adds contention
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    enableCpuMemArena: true,
    enableMemPattern: true,
    enableProfiling: options.profilePrefix !== undefined,
    profileFilePrefix: options.profilePrefix,
    logSeverityLevel: 3,
    ...(options.allowSpinning !== true ? { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } } : {}),
  };
}

/** An onnxruntime engine for `spec`, starting from `weights` (velocities zero). */
export async function createOrtEngine(spec: ModelSpec, weights: NamedTensors, options: OrtEngineOptions = {}): Promise<OrtEngine> {
  const optimizer: OptimizerConfig = { ...DEFAULT_OPTIMIZER, ...options.optimizer };
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`Expected a non-negative integer for seed but received ${options.seed}`);
  if (options.batchSize !== undefined && (!Number.isInteger(options.batchSize) || options.batchSize < 1)) {
    throw new Error(`Expected a positive integer for batchSize but received ${options.batchSize}`);
  }
  const sessionOptions = sessionOptionsFor(options);
  // NCHWc kernels are onnxruntime's CPU kernels: with a GPU provider the graph stays plain ONNX.
  const cpuOnly = (sessionOptions.executionProviders ?? []).every((e) => providerName(e) === 'cpu');
  const lowering: LoweringOptions = { ...DEFAULT_LOWERING, nchwcBlock: cpuOnly ? await nchwcBlockSize() : 0, ...options.lowering };
  const trainGraph = buildGraph(spec, 'train', optimizer, lowering);
  const evalGraph = buildGraph(spec, 'eval', undefined, lowering);
  const t0 = Date.now();
  const trainSession = await createSession(trainGraph, sessionOptions);
  const evalSession = await createSession(evalGraph, { ...sessionOptions, enableProfiling: false });
  if (options.verbose) {
    process.stderr.write(`onnxruntime: training + evaluation graphs for ${spec.preset} ${spec.inputSize}x${spec.inputSize} loaded in ${Date.now() - t0} ms (${sessionOptions.intraOpNumThreads} threads)\n`);
  }
  return new OrtEngine(spec, trainGraph, trainSession, evalSession, weights, optimizer, seed, options.batchSize);
}
