/**
 * `InferenceModel`: an exported AlexNet in onnxruntime-node, with its metadata (spec, class
 * names, per-channel means) read from the same bytes the session is created from.
 *
 * `run(batch, n)` feeds the first n images of a caller's buffer (no copy: an `ort.Tensor`
 * wraps the caller's Float32Array) and fills output tensors preallocated once per batch size
 * (onnxruntime writes pre-allocated `fetches` in place), so a steady-state call allocates
 * only the small tensor wrappers. The returned arrays are reused by the next call with the
 * same n: copy what you keep.
 *
 * Session options: graph optimization 'all' (Conv+Relu fusion, constant folding), intra-op
 * threads = cores by default, sequential execution (AlexNet is a chain: nothing to run in
 * parallel between ops, and parallel mode only adds scheduling overhead).
 */
import * as os from 'node:os';
import * as ort from 'onnxruntime-node';
import type { ModelSpec } from '@alexnet-stream/model-alexnet';
import { modelMetadata, readOnnxBytes } from './files';
import { META } from './lower';
import { decodeModel, encodeModel, ModelProto, OnnxFormatError } from './proto';
import { checkDevices, createSessionOn, DeviceError } from './devices';

export interface InferenceOptions {
  /** onnxruntime intra-op threads; default: the number of CPU cores. */
  intraOpNumThreads?: number;
  /** Default 'all'. */
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Default 'sequential'. */
  executionMode?: 'sequential' | 'parallel';
  /**
   * Let onnxruntime's intra-op threads spin between parallel sections (its default, true).
   * False frees the cores as soon as a run ends: what `predict` wants, so that image decoding
   * on libuv's threads gets the CPU between runs instead of competing with spinning threads.
   */
  allowSpinning?: boolean;
  /**
   * Devices in preference order (`cpu`, `webgpu`, `cuda:0`; devices.ts). Default `['cpu']`. A
   * device that cannot work here fails `load` with a one-line DeviceError (exit code 2).
   */
  devices?: string[];
}

export interface InferenceOutput {
  /** [n, numClasses] row-major. */
  logits: Float32Array;
  prob: Float32Array;
}

export interface ModelInfo {
  spec: ModelSpec;
  classNames?: string[];
  meanChannels?: number[];
  /** 'data' (float32 NCHW, preprocessed) or 'image' (uint8 NHWC with preprocessing inside). */
  input: 'data' | 'image';
  /** For 'image' models: the side of the squashed uint8 images. */
  imageSize?: number;
  configHash?: string;
  metadata: Record<string, string>;
}

export function sessionOptions(options: InferenceOptions = {}): ort.InferenceSession.SessionOptions {
  return {
    graphOptimizationLevel: options.graphOptimizationLevel ?? 'all',
    intraOpNumThreads: options.intraOpNumThreads ?? Math.max(1, os.availableParallelism?.() ?? os.cpus().length),
    interOpNumThreads: 1,
    executionMode: options.executionMode ?? 'sequential',
    ...(options.allowSpinning === false ? { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } } : {}),
  };
}

function parseJson<T>(text: string | undefined, what: string, name: string): T | undefined {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new OnnxFormatError(`${name}: metadata ${what} is not valid JSON`);
  }
}

/** Read our metadata back; a model without it (not exported by us) is refused naming the file. */
export function modelInfo(model: ModelProto, name: string): ModelInfo {
  const metadata = modelMetadata(model);
  const spec = parseJson<ModelSpec>(metadata[META.spec], 'model spec', name);
  if (!spec || !Array.isArray(spec.layers)) {
    throw new OnnxFormatError(`${name}: no alexnet-stream model spec in the metadata (export it with \`alexnet-stream export\`, or import it with \`alexnet-stream import --from onnx\` first)`);
  }
  const input = metadata[META.input] === 'image' ? 'image' : 'data';
  return {
    spec,
    classNames: parseJson<string[]>(metadata[META.classNames], 'class names', name),
    meanChannels: parseJson<number[]>(metadata[META.meanChannels], 'mean channels', name),
    input,
    imageSize: metadata[META.imageSize] ? Number(metadata[META.imageSize]) : undefined,
    configHash: metadata[META.configHash],
    metadata,
  };
}

export class InferenceModel {
  private readonly outputs = new Map<number, { logits: ort.Tensor; prob: ort.Tensor }>();
  private readonly inputDims: number[];
  private readonly elemsPerImage: number;

  private constructor(readonly session: ort.InferenceSession, readonly info: ModelInfo, readonly name: string) {
    const { spec } = info;
    if (info.input === 'image') {
      const s = info.imageSize ?? 256;
      this.inputDims = [s, s, spec.inputChannels];
    } else {
      this.inputDims = [spec.inputChannels, spec.inputSize, spec.inputSize];
    }
    this.elemsPerImage = this.inputDims.reduce((a, b) => a * b, 1);
  }

  /** Load an .onnx file exported by us. */
  static async load(path: string, options: InferenceOptions = {}): Promise<InferenceModel> {
    const bytes = readOnnxBytes(path);
    return InferenceModel.fromBytes(bytes, path, options);
  }

  /** From a model in memory (validate lowers a checkpoint without writing a file). */
  static async fromModel(model: ModelProto, name: string, options: InferenceOptions = {}): Promise<InferenceModel> {
    return InferenceModel.fromBytes(encodeModel(model), name, options);
  }

  static async fromBytes(bytes: Uint8Array, name: string, options: InferenceOptions = {}): Promise<InferenceModel> {
    const info = modelInfo(decodeModel(bytes, name), name);
    const devices = options.devices ?? ['cpu'];
    checkDevices(devices);
    let session: ort.InferenceSession;
    try {
      session = await createSessionOn(bytes, devices, sessionOptions(options));
    } catch (err) {
      if (err instanceof DeviceError) throw err;
      throw new OnnxFormatError(`${name}: onnxruntime cannot load the model (${(err as Error).message})`);
    }
    return new InferenceModel(session, info, name);
  }

  /** Values per image in the input buffer (C·S·S for 'data', S0·S0·C for 'image'). */
  get inputLength(): number {
    return this.elemsPerImage;
  }

  get numClasses(): number {
    return this.info.spec.numClasses;
  }

  /**
   * Run the first n images of `batch` (float32 NCHW for 'data' models, uint8 NHWC for 'image'
   * models). The returned arrays are owned by the model and overwritten by the next call.
   */
  async run(batch: Float32Array | Uint8Array, n: number): Promise<InferenceOutput> {
    const length = n * this.elemsPerImage;
    if (batch.length < length) throw new RangeError(`InferenceModel.run: batch holds ${batch.length} values, ${n} images need ${length}`);
    const isImage = this.info.input === 'image';
    if (isImage !== batch instanceof Uint8Array) {
      throw new TypeError(`InferenceModel.run: ${this.name} takes ${isImage ? 'uint8 NHWC images' : 'float32 NCHW data'}`);
    }
    const view = batch.length === length ? batch : batch.subarray(0, length);
    const input = isImage
      ? new ort.Tensor('uint8', view as Uint8Array, [n, ...this.inputDims])
      : new ort.Tensor('float32', view as Float32Array, [n, ...this.inputDims]);
    let fetches = this.outputs.get(n);
    if (!fetches) {
      const k = this.numClasses;
      fetches = {
        logits: new ort.Tensor('float32', new Float32Array(n * k), [n, k]),
        prob: new ort.Tensor('float32', new Float32Array(n * k), [n, k]),
      };
      // Keep a few sizes (the batch size and a last partial batch); drop the rest.
      if (this.outputs.size >= 4) this.outputs.clear();
      this.outputs.set(n, fetches);
    }
    await this.session.run({ [isImage ? 'image' : 'data']: input }, fetches);
    return { logits: fetches.logits.data as Float32Array, prob: fetches.prob.data as Float32Array };
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

/** Indices of the k largest values of row `row` of a [*, width] matrix, largest first. */
export function topK(values: Float32Array, row: number, width: number, k: number): number[] {
  const base = row * width;
  const best: number[] = [];
  for (let j = 0; j < width; j++) {
    const v = values[base + j];
    if (best.length === k && v <= values[base + best[k - 1]]) continue;
    let i = best.length < k ? best.length : k - 1;
    if (best.length < k) best.push(j);
    while (i > 0 && values[base + best[i - 1]] < v) {
      best[i] = best[i - 1];
      i--;
    }
    best[i] = j;
  }
  return best;
}
