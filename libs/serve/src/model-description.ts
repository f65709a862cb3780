/**
 * What the server knows about a loaded model: its tensor signature (from the onnxruntime
 * session: names, datatypes, shapes) and how `:classify` turns an image into its input (from
 * our export metadata through onnx-export's `modelInfo`, or from the user's --mean/--std/--size
 * for any other ONNX image classifier with one NCHW float input).
 *
 * Built in an inference worker (it parses the ONNX file), sent to the main thread by
 * structured clone: plain data only.
 */
import { decodeModel, MAX_ONNX_FILE_BYTES, META, type ModelProto, modelInfo, modelMetadata } from '@alexnet-stream/onnx-export';
import { describeReadError, formatBytes, readRegularFileAsync } from '@alexnet-stream/core';
import { readClassNames, readMeanNpy, type ResizeMode } from '@alexnet-stream/stream-io';
import { ModelLoadError } from './errors';
import type { ModelConfig } from './options';
import { optionName, parseChannelValues } from './options';
import type { Ort } from '@alexnet-stream/onnx-export';

/** KServe v2 datatypes this server takes and gives. */
export type V2Datatype = 'FP32' | 'UINT8';

export interface TensorSignature {
  name: string;
  datatype: V2Datatype;
  /** -1 for the batch dimension (and any other dynamic one). */
  shape: number[];
}

/** How an image becomes one input row. */
export interface Preprocessing {
  /** 'nchw-float': center crop of the resized image, minus mean, over std; 'nhwc-uint8': the resized pixels as they are. */
  layout: 'nchw-float' | 'nhwc-uint8';
  /** Side the image is resized to (decodeImage's size). */
  imageSize: number;
  resize: ResizeMode;
  /** Center crop side (the model's input side) for 'nchw-float'. */
  crop: number;
  /** Mean image, float32 3 x imageSize x imageSize (channel means spread out, as `predict` does). */
  meanImage?: Float32Array;
  /** Per-channel divisors after the mean; undefined: none. */
  std?: number[];
}

export interface ModelDescription {
  name: string;
  path: string;
  /** 'alexnet-stream' when the file carries our export metadata. */
  origin: 'alexnet-stream' | 'foreign';
  input: TensorSignature;
  outputs: TensorSignature[];
  /** Values per image in the input (the product of the non-batch dims). */
  inputLength: number;
  numClasses: number;
  classNames?: string[];
  /** The output `:classify` reads: 'prob' when the model has it, else the first (softmax applied). */
  classifyOutput: string;
  classifyOutputIsProb: boolean;
  /** Undefined when `:classify` cannot run (a foreign model without --mean). */
  preprocessing?: Preprocessing;
  /** Why `:classify` cannot run, when it cannot. */
  noClassifyReason?: string;
  sizeBytes: number;
  configHash?: string;
}

const DATATYPES: Record<string, V2Datatype | undefined> = { float32: 'FP32', uint8: 'UINT8' };

function signature(meta: Ort.InferenceSession.ValueMetadata, what: string, path: string): TensorSignature {
  if (!meta.isTensor) throw new ModelLoadError(`${path}: ${what} ${meta.name} is not a tensor`);
  const datatype = DATATYPES[meta.type];
  if (!datatype) throw new ModelLoadError(`${path}: ${what} ${meta.name} is ${meta.type}; this server takes float32 or uint8 tensors`);
  return { name: meta.name, datatype, shape: meta.shape.map((d) => (typeof d === 'number' && d > 0 ? d : -1)) };
}

function spreadMean(channels: number[], size: number): Float32Array {
  const plane = size * size;
  const data = new Float32Array(channels.length * plane);
  channels.forEach((m, c) => data.fill(m, c * plane, (c + 1) * plane));
  return data;
}

/**
 * Describe a model from its file bytes and its session. Throws ModelLoadError naming the file
 * and what is wrong (the caller keeps serving the previous version).
 */
export async function describeModel(
  config: ModelConfig,
  model: ModelProto,
  sizeBytes: number,
  session: Pick<Ort.InferenceSession, 'inputMetadata' | 'outputMetadata'>,
): Promise<ModelDescription> {
  const nameOf = (key: string): string => optionName(config.optionNames, key);
  const { path } = config;
  if (session.inputMetadata.length !== 1) {
    throw new ModelLoadError(`${path}: the model has ${session.inputMetadata.length} inputs; this server serves models with one image input`);
  }
  const input = signature(session.inputMetadata[0], 'input', path);
  const outputs = session.outputMetadata.map((m) => signature(m, 'output', path));
  if (input.shape.length !== 4)
    throw new ModelLoadError(`${path}: input ${input.name} has shape [${input.shape}]; an image batch [N, C, H, W] (or [N, H, W, C]) is needed`);
  const usable = outputs.filter((o) => o.datatype === 'FP32' && o.shape.length === 2 && o.shape[1] > 0);
  if (usable.length === 0) throw new ModelLoadError(`${path}: no float32 output of shape [N, classes]`);
  const prob = usable.find((o) => o.name === 'prob');
  const classifyOutput = prob ?? usable[0];
  const numClasses = classifyOutput.shape[1];

  const metadata = modelMetadata(model);
  const ours = metadata[META.spec] !== undefined;
  let classNames: string[] | undefined;
  let meanChannels: number[] | undefined;
  let imageSize: number | undefined;
  let configHash: string | undefined;
  let layout: Preprocessing['layout'] = 'nchw-float';
  if (ours) {
    let info;
    try {
      info = modelInfo(model, path);
    } catch (err) {
      throw new ModelLoadError((err as Error).message);
    }
    classNames = info.classNames;
    meanChannels = info.meanChannels;
    imageSize = info.imageSize;
    configHash = info.configHash;
    if (info.input === 'image') layout = 'nhwc-uint8';
    if (info.spec.numClasses !== numClasses)
      throw new ModelLoadError(`${path}: the metadata says ${info.spec.numClasses} classes, output ${classifyOutput.name} has ${numClasses}`);
  }
  if (config.labels) {
    try {
      classNames = await readClassNames(config.labels);
    } catch (err) {
      throw new ModelLoadError(`${nameOf('labels')} ${config.labels}: ${(err as Error).message}`, { cause: err });
    }
    if (classNames.length !== numClasses) {
      throw new ModelLoadError(`${nameOf('labels')} ${config.labels} lists ${classNames.length} classes, model ${config.name} has ${numClasses}`);
    }
  }
  if (classNames && classNames.length !== numClasses)
    throw new ModelLoadError(`${path}: the metadata lists ${classNames.length} class names for ${numClasses} classes`);

  const dims = input.shape.slice(1);
  if (dims.some((d) => d < 1)) throw new ModelLoadError(`${path}: input ${input.name} has shape [${input.shape}]; only the batch dimension may be dynamic`);
  const inputLength = dims.reduce((a, b) => a * b, 1);
  const base = {
    name: config.name,
    path,
    origin: ours ? ('alexnet-stream' as const) : ('foreign' as const),
    input,
    outputs,
    inputLength,
    numClasses,
    classNames,
    classifyOutput: classifyOutput.name,
    classifyOutputIsProb: classifyOutput.name === 'prob',
    sizeBytes,
    configHash,
  };

  // Preprocessing for :classify.
  if (layout === 'nhwc-uint8') {
    if (input.datatype !== 'UINT8' || dims[2] !== 3 || dims[0] !== dims[1])
      throw new ModelLoadError(`${path}: an 'image' model needs a uint8 [N, S, S, 3] input, this one is ${input.datatype} [${input.shape}]`);
    if (config.mean !== undefined || config.std !== undefined) {
      throw new ModelLoadError(
        `${nameOf('mean')}/${nameOf('std')} do not apply to model ${config.name}: it was exported --with-preprocessing and subtracts its own mean image`,
      );
    }
    return { ...base, preprocessing: { layout, imageSize: dims[0], resize: config.resize ?? 'squash', crop: dims[0] } };
  }
  if (input.datatype !== 'FP32' || dims[0] !== 3 || dims[1] !== dims[2]) {
    return { ...base, noClassifyReason: `model ${config.name} takes ${input.datatype} [${input.shape}]; :classify needs a float32 [N, 3, S, S] input` };
  }
  const crop = dims[1];
  const size = config.size ?? imageSize ?? 256;
  if (size < crop) throw new ModelLoadError(`${nameOf('size')} ${size} is smaller than model ${config.name}'s input side ${crop}`);
  let meanImage: Float32Array | undefined;
  if (config.mean !== undefined) {
    const values = parseChannelValues(config.mean);
    if (values) {
      meanImage = spreadMean(values, size);
    } else {
      let mean;
      try {
        mean = await readMeanNpy(config.mean);
      } catch (err) {
        throw new ModelLoadError(`${nameOf('mean')} ${config.mean}: ${(err as Error).message}`, { cause: err });
      }
      if (mean.channels !== 3 || mean.height !== size || mean.width !== size) {
        throw new ModelLoadError(
          `${nameOf('mean')} ${config.mean} is ${mean.channels}x${mean.height}x${mean.width}; model ${config.name} needs 3x${size}x${size} (the image size before the crop)`,
        );
      }
      meanImage = mean.data;
    }
  } else if (meanChannels) {
    if (meanChannels.length !== 3 || meanChannels.some((v) => !Number.isFinite(v)))
      throw new ModelLoadError(`${path}: the metadata's mean channels are not 3 numbers`);
    meanImage = spreadMean(meanChannels, size);
  }
  if (!meanImage) {
    return {
      ...base,
      noClassifyReason: `model ${config.name} has no mean in its metadata: serve it with ${nameOf('mean')} r,g,b (and ${nameOf('std')}, ${nameOf('size')}) for :classify`,
    };
  }
  const std = config.std !== undefined ? parseChannelValues(config.std) : undefined;
  return { ...base, preprocessing: { layout, imageSize: size, resize: config.resize ?? 'squash', crop, meanImage, std } };
}

/** Parse the ONNX bytes; a truncated or foreign file is a ModelLoadError naming it. */
export function parseModel(bytes: Uint8Array, path: string): ModelProto {
  try {
    return decodeModel(bytes, path);
  } catch (err) {
    throw new ModelLoadError((err as Error).message);
  }
}

/** Read a model file: a regular file of at most 2 GiB (a FIFO or /dev/zero is refused); errors name it. */
export async function readModelBytes(path: string): Promise<Buffer> {
  try {
    return await readRegularFileAsync(path, { maxBytes: MAX_ONNX_FILE_BYTES, limitName: `the ${formatBytes(MAX_ONNX_FILE_BYTES)} an ONNX model may take` });
  } catch (err) {
    throw new ModelLoadError(`${path}: cannot read the model (${describeReadError(err)})`, { cause: err });
  }
}
