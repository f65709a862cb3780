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
import { checkOptional, getOwn } from '@alexnet-stream/core';
import { specProblem, type ModelSpec } from '@alexnet-stream/model-alexnet';
import { modelMetadata, readOnnxBytes } from './files';
import { META } from './lower';
import { decodeModel, encodeModel, type ModelProto, type onnx, OnnxFormatError } from './proto';
import { loadOnnxRuntime, type Ort } from './onnxruntime';
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

export function sessionOptions(options: InferenceOptions = {}): Ort.InferenceSession.SessionOptions {
  return {
    graphOptimizationLevel: options.graphOptimizationLevel ?? 'all',
    intraOpNumThreads:
      checkOptional.integer('intraOpNumThreads', options.intraOpNumThreads, { min: 1, max: 1024 }) ??
      Math.max(1, os.availableParallelism?.() ?? os.cpus().length),
    interOpNumThreads: 1,
    executionMode: options.executionMode ?? 'sequential',
    ...(options.allowSpinning === false ? { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } } : {}),
  };
}

/**
 * The side of the squashed images a model may ask for (metadata image_size): at least its crop,
 * at most this, so that a model cannot make predict allocate more than 12 MB per image.
 */
export const MAX_IMAGE_SIZE = 2048;

function metaJson(metadata: Record<string, string>, key: string, name: string): unknown {
  const text = getOwn(metadata, key);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new OnnxFormatError(`${name}: metadata ${key} is not valid JSON`);
  }
}

const dimsOf = (info: onnx.IValueInfoProto | undefined): (number | string)[] | undefined =>
  info?.type?.tensorType?.shape?.dim?.map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue ?? 0)));

/**
 * The graph must be what its metadata describes: input `data` (or `image`) and outputs `logits`
 * and `prob` of the spec's sizes. A model whose metadata was edited (or whose graph was) is
 * refused here, naming what differs, instead of giving wrong or undefined answers.
 */
function checkGraphAgainst(model: ModelProto, info: Omit<ModelInfo, 'metadata'>, name: string): void {
  const graph = model.graph!;
  const { spec } = info;
  const inputName = info.input;
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name));
  const inputs = (graph.input ?? []).filter((i) => !initializers.has(i.name));
  const input = inputs.find((i) => i.name === inputName);
  const expectedIn = info.input === 'image' ? [info.imageSize!, info.imageSize!, spec.inputChannels] : [spec.inputChannels, spec.inputSize, spec.inputSize];
  const inDims = dimsOf(input);
  if (!input || !inDims || inDims.length !== 4 || inDims.slice(1).some((d, i) => d !== expectedIn[i])) {
    throw new OnnxFormatError(
      `${name}: the graph's input does not match its metadata: metadata says "${inputName}" [N, ${expectedIn.join(', ')}], ` +
        `the graph has ${inputs.map((i) => `"${i.name}" [${(dimsOf(i) ?? []).join(', ')}]`).join(', ') || 'no input'}`,
    );
  }
  for (const out of ['logits', 'prob']) {
    const o = (graph.output ?? []).find((v) => v.name === out);
    const dims = dimsOf(o);
    if (!o || !dims || dims.length !== 2 || dims[1] !== spec.numClasses) {
      throw new OnnxFormatError(
        `${name}: the graph's output "${out}" does not match its metadata (${spec.numClasses} classes): it is ${o ? `[${(dims ?? []).join(', ')}]` : 'missing'}`,
      );
    }
  }
}

/**
 * Read our metadata back and check every field of it (metadata is input: it can be edited): the
 * spec (model-alexnet's spec-check), class names (one string per class), per-channel means (a
 * finite number per channel), the input kind, the image size (bounded: it sizes buffers), and
 * the graph's input and outputs against them. A model without our metadata, or with any field
 * wrong, is refused with an OnnxFormatError naming the file and the field.
 */
export function modelInfo(model: ModelProto, name: string): ModelInfo {
  const metadata = modelMetadata(model);
  const specValue = metaJson(metadata, META.spec, name);
  if (specValue === undefined) {
    throw new OnnxFormatError(
      `${name}: no alexnet-stream model spec in the metadata (export it with \`alexnet-stream export\`, or import it with \`alexnet-stream import --from onnx\` first)`,
    );
  }
  const problem = specProblem(specValue);
  if (problem) throw new OnnxFormatError(`${name}: metadata ${META.spec}: ${problem}`);
  const spec = specValue as ModelSpec;
  const bad = (key: string, why: string): never => {
    throw new OnnxFormatError(`${name}: metadata ${key}: ${why}`);
  };

  const classNames = metaJson(metadata, META.classNames, name);
  if (classNames !== undefined) {
    if (!Array.isArray(classNames) || !classNames.every((c) => typeof c === 'string')) bad(META.classNames, 'not a list of strings');
    if ((classNames as string[]).length !== spec.numClasses)
      bad(META.classNames, `${(classNames as string[]).length} names for a model of ${spec.numClasses} classes`);
  }
  const meanChannels = metaJson(metadata, META.meanChannels, name);
  if (meanChannels !== undefined) {
    if (!Array.isArray(meanChannels) || !meanChannels.every((m) => typeof m === 'number' && Number.isFinite(m)))
      bad(META.meanChannels, 'not a list of finite numbers');
    if ((meanChannels as number[]).length !== spec.inputChannels)
      bad(META.meanChannels, `${(meanChannels as number[]).length} means for a model of ${spec.inputChannels} input channels`);
  }
  const inputKind = getOwn(metadata, META.input) ?? 'data';
  if (inputKind !== 'data' && inputKind !== 'image') bad(META.input, `${JSON.stringify(inputKind)}, expected "data" or "image"`);
  const input = inputKind as 'data' | 'image';
  const imageSizeText = getOwn(metadata, META.imageSize);
  let imageSize: number | undefined;
  if (imageSizeText !== undefined) {
    imageSize = /^\d{1,9}$/.test(imageSizeText) ? Number(imageSizeText) : NaN;
    if (!(imageSize >= spec.inputSize && imageSize <= MAX_IMAGE_SIZE)) {
      bad(META.imageSize, `${JSON.stringify(imageSizeText)}, expected an integer from the input size ${spec.inputSize} to ${MAX_IMAGE_SIZE}`);
    }
  } else if (input === 'image') {
    imageSize = 256;
  }
  const inputSizeText = getOwn(metadata, META.inputSize);
  if (inputSizeText !== undefined && inputSizeText !== String(spec.inputSize))
    bad(META.inputSize, `${JSON.stringify(inputSizeText)}, but the spec's input size is ${spec.inputSize}`);
  const info = {
    spec,
    ...(classNames !== undefined ? { classNames: classNames as string[] } : {}),
    ...(meanChannels !== undefined ? { meanChannels: meanChannels as number[] } : {}),
    input,
    imageSize,
    configHash: getOwn(metadata, META.configHash),
  };
  checkGraphAgainst(model, info, name);
  return { ...info, metadata };
}

export class InferenceModel {
  private readonly outputs = new Map<number, { logits: Ort.Tensor; prob: Ort.Tensor }>();
  private readonly inputDims: number[];
  private readonly elemsPerImage: number;

  private constructor(
    readonly session: Ort.InferenceSession,
    readonly info: ModelInfo,
    readonly name: string,
  ) {
    const { spec } = info;
    if (info.input === 'image') {
      const s = info.imageSize!;
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
    let session: Ort.InferenceSession;
    try {
      session = await createSessionOn(bytes, devices, sessionOptions(options));
    } catch (err) {
      if (err instanceof DeviceError) throw err;
      throw new OnnxFormatError(`${name}: onnxruntime cannot load the model (${(err as Error).message})`, { cause: err });
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
    const ort = loadOnnxRuntime();
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
