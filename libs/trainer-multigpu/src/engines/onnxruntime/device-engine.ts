/**
 * The onnxruntime engine on a GPU through onnxruntime-node's WebGPU provider, with the weights
 * and velocities kept on the GPU between steps.
 *
 * What onnxruntime-node 1.30 allows (measured on lavapipe and on the provider's source):
 * - `preferredOutputLocation: 'gpu-buffer'` per output: the new weights and velocities stay in
 *   GPU buffers after a run (a Tensor with `location: 'gpu-buffer'`), and such a tensor fed to
 *   the next run is used in place. So a step uploads only the batch, labels, lr and dropout
 *   masks, and downloads only the three metrics. (For AlexNet the state is 488 MB; moving it
 *   both ways each step would cost more than a GPU step itself: DESIGN §2, docs/gpus.md.)
 * - `Tensor.getData()` on such a tensor aborts the process in 1.30 ("terminate called after
 *   throwing an instance of 'char const*'"), so the state comes back to JS through a second
 *   session, an Identity per tensor with CPU outputs (`download`): only when someone asks
 *   (`getWeights` for a checkpoint or a multi-worker average, `getVelocities` for a checkpoint).
 * - The provider has no `Loop` kernel (a Loop would run on the CPU and copy the state per
 *   iteration), so there is no step group: one step per run, `stepsPerRun` 1. With the state
 *   on the device a run's own overhead is what is left to amortize, and it is small.
 * - `setWeights` / `setVelocities` hand the next run host tensors: that run uploads them.
 *
 * The graph is PORTABLE_LOWERING's (graph/rules.ts): MaxPool's backward without its Indices
 * output, no SpaceToDepth, LogSoftmax or int64, no NCHWc; every node but the batch-size read
 * runs on the device. Dropout masks are drawn in JS exactly as OrtEngine draws them (the same
 * seed gives the same masks, step by step, layer by layer, row-major), so a run can move
 * between `cpu` and `webgpu` through a checkpoint and draw on.
 */
import { check, InputError, InvalidParameterError, type NamedTensors, Rng, type RngState } from '@alexnet-stream/core';
import { encodeModel, GraphBuilder, loadOnnxRuntime, type Ort } from '@alexnet-stream/onnx-export';
import type { ModelSpec, ParamInfo } from '@alexnet-stream/model-alexnet';
import { type BatchGroup, type BatchMetrics, checkLoss, DEFAULT_LOSS, type EngineBatch, type OptimizerConfig, type TrainingEngine } from '../../engine';
import { type LoweringOptions, PORTABLE_LOWERING } from '../../graph/rules';
import { buildGraph, type BuiltGraph, newName, velocityName } from '../../graph/training-graph';
import { checkNamed, createSession, metricsOf, type OrtEngineOptions } from './engine';

const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const METRICS = ['loss', 'top1_errors', 'top5_errors'] as const;

/** A graph that copies each state tensor to an output (`<name>.host`): run with CPU outputs, it downloads. */
function downloadGraph(state: { name: string; shape: number[] }[]): Uint8Array {
  const b = new GraphBuilder('state-download');
  for (const s of state) {
    b.input(s.name, 'float32', s.shape);
    b.output(b.op('Identity', [s.name]), 'float32', s.shape, `${s.name}.host`);
  }
  return encodeModel(b.model({ docString: 'copies the training state from the device to host memory' }));
}

export class OrtDeviceEngine implements TrainingEngine {
  readonly name = 'onnxruntime';
  /** One step per run: the WebGPU provider has no Loop kernel (the state stays on the GPU instead). */
  readonly stepsPerRun = 1;
  private rng: Rng;
  /** Current state: host tensors after construction or set*, device tensors after a step. */
  private weights: Record<string, Ort.Tensor>;
  private velocities: Record<string, Ort.Tensor> | undefined;
  /** Plain SGD keeps the velocities it was given, unchanged (as OrtEngine). */
  private keptVelocities: NamedTensors | undefined;
  private readonly imageSize: number;
  private readonly lr = new Float32Array(1);
  private masks: Float32Array[];

  constructor(
    readonly spec: ModelSpec,
    private readonly ort: typeof Ort,
    private readonly trainGraph: BuiltGraph,
    private readonly trainSession: Ort.InferenceSession,
    private readonly evalSession: Ort.InferenceSession,
    private readonly download: SyncSession,
    weights: NamedTensors,
    readonly optimizer: OptimizerConfig,
    seed: number,
    private readonly maxBatch: number | undefined,
  ) {
    const params = trainGraph.params;
    checkNamed('weights', params, weights);
    this.weights = this.hostTensors(params, (p) => Float32Array.from(weights[p.name]));
    this.velocities = trainGraph.hasVelocities ? this.hostTensors(params, (p) => new Float32Array(sizeOf(p.shape))) : undefined;
    this.rng = new Rng(seed);
    this.imageSize = spec.inputChannels * spec.inputSize * spec.inputSize;
    this.masks = trainGraph.masks.map(() => new Float32Array(0));
  }

  /** Whether the weights are in GPU buffers (after a step) rather than host memory (after construction or setWeights). */
  get stateOnDevice(): boolean {
    return Object.values(this.weights).every((t) => t.location === 'gpu-buffer');
  }

  private hostTensors(params: ParamInfo[], init: (p: ParamInfo) => Float32Array): Record<string, Ort.Tensor> {
    return Object.fromEntries(params.map((p) => [p.name, new this.ort.Tensor('float32', init(p), p.shape)]));
  }

  private checkBatch({ data, labels, size }: EngineBatch): void {
    if (!Number.isInteger(size) || size < 1) throw new InputError(`batch: size must be a positive integer, got ${size}`, { code: 'ERR_BATCH_SHAPE' });
    if (this.maxBatch !== undefined && size > this.maxBatch) {
      throw new InputError(`batch: ${size} images, more than the engine's batchSize ${this.maxBatch}`, { code: 'ERR_BATCH_SHAPE' });
    }
    const s = this.spec.inputSize,
      c = this.spec.inputChannels;
    if (data.length !== size * this.imageSize) {
      throw new InputError(`batch: data has ${data.length} values, expected ${size}x${c}x${s}x${s} = ${size * this.imageSize}`, { code: 'ERR_BATCH_SHAPE' });
    }
    if (labels.length !== size) throw new InputError(`batch: ${labels.length} labels for ${size} images`, { code: 'ERR_BATCH_SHAPE' });
    const k = this.spec.numClasses;
    for (let i = 0; i < labels.length; i++)
      if (!(labels[i] >= 0 && labels[i] < k)) throw new InputError(`batch: label ${labels[i]} of image ${i} is outside [0, ${k})`, { code: 'ERR_BATCH_SHAPE' });
  }

  private batchFeeds(batch: EngineBatch): Record<string, Ort.Tensor> {
    this.checkBatch(batch);
    const s = this.spec.inputSize;
    return {
      data: new this.ort.Tensor('float32', batch.data, [batch.size, this.spec.inputChannels, s, s]),
      labels: new this.ort.Tensor('int32', batch.labels, [batch.size]),
    };
  }

  /** One step's masks, drawn as OrtEngine draws them (each mask in spec order, row-major, keep when nextFloat() >= rate). */
  private drawMasks(size: number): Record<string, Ort.Tensor> {
    const feeds: Record<string, Ort.Tensor> = {};
    this.trainGraph.masks.forEach((m, i) => {
      const length = size * sizeOf(m.shape);
      if (this.masks[i].length !== length) this.masks[i] = new Float32Array(length);
      const values = this.masks[i];
      const keep = 1 / (1 - m.rate);
      for (let j = 0; j < length; j++) values[j] = this.rng.nextFloat() >= m.rate ? keep : 0;
      feeds[m.input] = new this.ort.Tensor('float32', values, [size, ...m.shape]);
    });
    return feeds;
  }

  async step(batch: EngineBatch, lr: number): Promise<BatchMetrics> {
    check.number('lr', lr);
    const feeds = this.batchFeeds(batch);
    this.lr[0] = lr;
    feeds.lr = new this.ort.Tensor('float32', this.lr, []);
    Object.assign(feeds, this.drawMasks(batch.size));
    const params = this.trainGraph.params;
    const fetches: string[] = [...METRICS];
    for (const p of params) {
      feeds[p.name] = this.weights[p.name];
      fetches.push(newName(p.name));
      if (this.velocities) {
        feeds[velocityName(p.name)] = this.velocities[p.name];
        fetches.push(newName(velocityName(p.name)));
      }
    }
    const out = await this.trainSession.run(feeds, fetches);
    const old = [this.weights, this.velocities];
    this.weights = Object.fromEntries(params.map((p) => [p.name, out[newName(p.name)] as Ort.Tensor]));
    if (this.velocities) this.velocities = Object.fromEntries(params.map((p) => [p.name, out[newName(velocityName(p.name))] as Ort.Tensor]));
    for (const set of old) releaseDevice(set);
    return metricsOf(out, batch.size);
  }

  async stepGroup(group: BatchGroup, lr: number | readonly number[]): Promise<BatchMetrics[]> {
    check.integer('count', group.count, { min: 1, max: 1 });
    if (typeof lr !== 'number') check.that('lr', lr.length === 1, 'one learning rate for the 1 step', lr.length);
    return [await this.step(group, typeof lr === 'number' ? lr : lr[0])];
  }

  private evalFeeds(batch: EngineBatch): Record<string, Ort.Tensor> {
    const feeds = this.batchFeeds(batch);
    for (const p of this.trainGraph.params) feeds[p.name] = this.weights[p.name];
    return feeds;
  }

  async evaluate(batch: EngineBatch): Promise<BatchMetrics> {
    return metricsOf(await this.evalSession.run(this.evalFeeds(batch), [...METRICS]), batch.size);
  }

  /** Logits of a batch without dropout (evaluation graph). */
  async logits(batch: EngineBatch): Promise<Float32Array> {
    const out = await this.evalSession.run(this.evalFeeds(batch), ['logits']);
    return Float32Array.from(out.logits.data as Float32Array);
  }

  /**
   * Host copies of one state set (weights, or velocities under `stateName`): host tensors are
   * copied, device tensors come back through the download graph, only those asked for.
   */
  private fetch(set: Record<string, Ort.Tensor>, stateName: (p: string) => string): NamedTensors {
    const params = this.trainGraph.params;
    const onDevice = params.filter((p) => set[p.name].location !== 'cpu');
    const result: NamedTensors = {};
    for (const p of params) if (set[p.name].location === 'cpu') result[p.name] = Float32Array.from(set[p.name].data as Float32Array);
    if (onDevice.length > 0) {
      // The download graph takes every state tensor as an input; only the fetched outputs are computed.
      const feeds: Record<string, Ort.Tensor> = {};
      for (const p of params) {
        feeds[p.name] = this.weights[p.name];
        feeds[velocityName(p.name)] = this.velocities?.[p.name] ?? this.weights[p.name];
      }
      const out = this.download.run(
        feeds,
        onDevice.map((p) => `${stateName(p.name)}.host`),
      );
      for (const p of onDevice) result[p.name] = out[`${stateName(p.name)}.host`].data as Float32Array;
    }
    return Object.fromEntries(params.map((p) => [p.name, result[p.name]]));
  }

  getWeights(): NamedTensors {
    return this.fetch(this.weights, (p) => p);
  }

  getVelocities(): NamedTensors {
    if (!this.velocities) {
      return Object.fromEntries(
        this.trainGraph.params.map((p) => [p.name, this.keptVelocities ? Float32Array.from(this.keptVelocities[p.name]) : new Float32Array(sizeOf(p.shape))]),
      );
    }
    return this.fetch(this.velocities, velocityName);
  }

  setWeights(weights: NamedTensors): void {
    checkNamed('weights', this.trainGraph.params, weights);
    const old = this.weights;
    this.weights = this.hostTensors(this.trainGraph.params, (p) => Float32Array.from(weights[p.name]));
    releaseDevice(old);
  }

  setVelocities(velocities: NamedTensors): void {
    checkNamed('velocities', this.trainGraph.params, velocities);
    if (!this.velocities) {
      this.keptVelocities = Object.fromEntries(this.trainGraph.params.map((p) => [p.name, Float32Array.from(velocities[p.name])]));
      return;
    }
    const old = this.velocities;
    this.velocities = this.hostTensors(this.trainGraph.params, (p) => Float32Array.from(velocities[p.name]));
    releaseDevice(old);
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

  endProfiling(): void {
    this.trainSession.endProfiling();
  }

  async dispose(): Promise<void> {
    releaseDevice(this.weights);
    if (this.velocities) releaseDevice(this.velocities);
    await this.trainSession.release();
    await this.evalSession.release();
    this.download.release();
  }
}

/** Frees the GPU buffers of a replaced state (host tensors are left to the garbage collector). */
function releaseDevice(set: Record<string, Ort.Tensor> | undefined): void {
  if (!set) return;
  for (const t of Object.values(set)) if (t.location === 'gpu-buffer') t.dispose();
}

/**
 * A session whose `run` returns synchronously: onnxruntime-node's native binding, whose run is
 * synchronous (the public `InferenceSession.run` only wraps it in a promise, DESIGN §2). The
 * engine's state getters are synchronous (TrainingEngine), and a device download is a run.
 * This reaches into onnxruntime-node's `dist/binding` (1.30; the package has no exports map);
 * device-engine.test.ts fails if that changes.
 */
export class SyncSession {
  private readonly session: {
    loadModel(b: ArrayBuffer, o: number, l: number, opts: object): void;
    run(f: object, fe: object, o: object): Record<string, Ort.Tensor>;
    dispose(): void;
  };
  constructor(model: Uint8Array, options: Ort.InferenceSession.SessionOptions) {
    loadOnnxRuntime();
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { binding, initOrt } = require('onnxruntime-node/dist/binding');
    initOrt();
    this.session = new binding.InferenceSession();
    this.session.loadModel(model.buffer as ArrayBuffer, model.byteOffset, model.byteLength, options);
  }

  run(feeds: Record<string, Ort.Tensor>, outputs: string[]): Record<string, Ort.Tensor> {
    return this.session.run(feeds, Object.fromEntries(outputs.map((o) => [o, null])), {});
  }

  release(): void {
    this.session.dispose();
  }
}

/** Builds the graphs and sessions of a device engine (createOrtEngine calls this for `webgpu`). */
export async function createOrtDeviceEngine(
  spec: ModelSpec,
  weights: NamedTensors,
  options: OrtEngineOptions & { optimizer: OptimizerConfig; seed: number },
  sessionOptions: Ort.InferenceSession.SessionOptions,
): Promise<OrtDeviceEngine> {
  const ort = loadOnnxRuntime();
  if (options.verbose && options.stepsPerRun !== undefined && options.stepsPerRun !== 1) {
    process.stderr.write(
      `onnxruntime: webgpu runs one step per run (the WebGPU provider has no Loop kernel; the state stays on the GPU between runs instead): steps_per_run ${options.stepsPerRun} is ignored\n`,
    );
  }
  const lowering: LoweringOptions = { ...PORTABLE_LOWERING, ...options.lowering };
  const trainGraph = buildGraph(spec, 'train', options.optimizer, lowering, checkLoss({ ...DEFAULT_LOSS, ...options.loss }));
  const evalGraph = buildGraph(spec, 'eval', undefined, lowering);
  const state = trainGraph.params.flatMap((p) => [
    { name: p.name, shape: p.shape },
    { name: velocityName(p.name), shape: p.shape },
  ]);
  const stateOutputs = trainGraph.params.flatMap((p) => [newName(p.name), ...(trainGraph.hasVelocities ? [newName(velocityName(p.name))] : [])]);
  const t0 = Date.now();
  const trainSession = await createSession(trainGraph, {
    ...sessionOptions,
    preferredOutputLocation: {
      ...Object.fromEntries(stateOutputs.map((n) => [n, 'gpu-buffer' as const])),
      ...Object.fromEntries(METRICS.map((m) => [m, 'cpu' as const])),
    },
  });
  const evalSession = await createSession(evalGraph, { ...sessionOptions, enableProfiling: false });
  const download = new SyncSession(downloadGraph(state), { ...sessionOptions, enableProfiling: false });
  if (options.verbose) {
    process.stderr.write(
      `onnxruntime: training + evaluation graphs for ${spec.preset} ${spec.inputSize}x${spec.inputSize} on webgpu loaded in ${Date.now() - t0} ms (state kept on the GPU)\n`,
    );
  }
  return new OrtDeviceEngine(spec, ort, trainGraph, trainSession, evalSession, download, weights, options.optimizer, options.seed, options.batchSize);
}
