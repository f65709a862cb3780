/**
 * Lowering a model spec (DESIGN §7) to an ONNX *inference* graph: a pure function of the spec
 * and its weights. One function, `emitNetwork`, emits the layers from any input value, so the
 * plain graph (`data`: float32 NCHW, already mean-subtracted and cropped) and the graph with
 * preprocessing (`image`: uint8 NHWC as a decoder produces it) share the exact same body.
 *
 * Layer → ONNX:
 *   conv    → Conv(kernel_shape, strides, pads, group), weight OIHW + bias as initializers
 *   relu    → Relu
 *   maxpool → MaxPool(kernel_shape, strides, pads), floor mode (as Caffe/Theano/the spec)
 *   lrn     → LRN(size, alpha, beta, bias): the spec's attributes are already ONNX semantics
 *   flatten → Flatten(axis=1): NCHW reshape, channel-major as §7 requires
 *   fc      → Gemm(transB=1): weights are [out, in]
 *   dropout → nothing (identity at inference)
 * then `logits` (the last fc) and `prob` = Softmax(axis=1).
 */
import { createHash } from 'node:crypto';
import { canonicalJson, InputError, type NamedTensors } from '@alexnet-stream/core';
import { inferShapes, type ModelSpec, parameterList } from '@alexnet-stream/model-alexnet';
import { float, GraphBuilder, int, ints } from './graph-builder';
import type { ModelProto } from './proto';

/** Metadata keys written into `metadata_props` and read back by `InferenceModel`. */
export const META = {
  preset: 'alexnet_stream.preset',
  spec: 'alexnet_stream.model_spec',
  classNames: 'alexnet_stream.class_names',
  meanChannels: 'alexnet_stream.mean_channels',
  inputSize: 'alexnet_stream.input_size',
  configHash: 'alexnet_stream.config_hash',
  /** `data` (float32 NCHW, preprocessed) or `image` (uint8 NHWC, raw pixels). */
  input: 'alexnet_stream.input',
  imageSize: 'alexnet_stream.image_size',
  /**
   * The per-channel input scale the model was trained with (the trainer's `input_scale`), JSON.
   * For the record only: export has already folded it into the first layer's weights, so the
   * input is `pixels − mean` like every other model's. Never apply it again.
   */
  foldedInputScale: 'alexnet_stream.folded_input_scale',
} as const;

/** Weights (or lowering options) that do not fit the model spec: exit 2. */
export class WeightsError extends InputError {
  constructor(message: string) {
    super(message, { code: 'ERR_WEIGHTS_MISMATCH' });
  }
}

export interface LowerOptions {
  /** Class names by label; stored in the metadata (and hashed). */
  classNames?: string[];
  /** Per-channel means of the mean image (what `predict` subtracts when no mean file is given). */
  meanChannels?: number[];
  /**
   * Side of the squashed images the model was trained on, before the crop (the data dir's image
   * size, 256 for the seed): `predict` decodes to this size, so that a center crop of inputSize
   * sees the same scale as in training.
   */
  imageSize?: number;
  /** Extra metadata_props. */
  metadata?: Record<string, string>;
  opset?: number;
}

export interface PreprocessingOptions extends LowerOptions {
  /** The mean image, float32 CxHxW with H = W = imageSize (`mean.npy`). */
  meanImage: Float32Array;
  /** Side of the squashed images the graph takes (256). */
  imageSize: number;
}

/** sha256 of the canonical spec JSON and the class names: identifies a model configuration. */
export function configHash(spec: ModelSpec, classNames?: string[]): string {
  return createHash('sha256')
    .update(canonicalJson({ spec, classNames: classNames ?? null }))
    .digest('hex');
}

/**
 * Throw a `WeightsError` naming the first parameter that is missing or has the wrong number
 * of values for `spec` (checkpoints carry flat Float32Arrays; the shape is the spec's).
 */
export function checkWeights(spec: ModelSpec, weights: NamedTensors, source = 'weights'): void {
  for (const p of parameterList(spec)) {
    const w = weights[p.name];
    const expected = p.shape.reduce((a, b) => a * b, 1);
    if (!w) throw new WeightsError(`${source}: tensor ${p.name} is missing (the ${spec.preset} spec needs shape [${p.shape.join(', ')}])`);
    if (!(w instanceof Float32Array)) throw new WeightsError(`${source}: tensor ${p.name} is not float32`);
    if (w.length !== expected) {
      throw new WeightsError(`${source}: tensor ${p.name} has ${w.length} values, the ${spec.preset} spec needs shape [${p.shape.join(', ')}] = ${expected}`);
    }
  }
}

/**
 * Emit the network body of `spec` reading the float32 NCHW value `input`; returns the logits
 * value. Parameters become initializers named as the parameters (`conv1.weight`, …).
 */
export function emitNetwork(g: GraphBuilder, spec: ModelSpec, weights: NamedTensors, input: string): string {
  const shapes = new Map(parameterList(spec).map((p) => [p.name, p.shape]));
  const param = (name: string): string => g.initializer(name, weights[name], shapes.get(name)!);
  let x = input;
  for (const { layer } of inferShapes(spec)) {
    switch (layer.kind) {
      case 'conv': {
        const { kernel: k, stride: s, pad: p } = layer;
        x = g.op(
          'Conv',
          [x, param(`${layer.name}.weight`), param(`${layer.name}.bias`)],
          {
            kernel_shape: ints([k, k]),
            strides: ints([s, s]),
            pads: ints([p, p, p, p]),
            group: int(layer.group),
          },
          layer.name,
        );
        break;
      }
      case 'relu':
        x = g.op('Relu', [x], {}, layer.name);
        break;
      case 'maxpool': {
        const { kernel: k, stride: s, pad: p } = layer;
        x = g.op('MaxPool', [x], { kernel_shape: ints([k, k]), strides: ints([s, s]), pads: ints([p, p, p, p]) }, layer.name);
        break;
      }
      case 'lrn':
        x = g.op('LRN', [x], { size: int(layer.size), alpha: float(layer.alpha), beta: float(layer.beta), bias: float(layer.bias) }, layer.name);
        break;
      case 'flatten':
        x = g.op('Flatten', [x], { axis: int(1) }, layer.name);
        break;
      case 'dropout':
        break; // identity at inference
      case 'fc':
        x = g.op('Gemm', [x, param(`${layer.name}.weight`), param(`${layer.name}.bias`)], { transB: int(1) }, layer.name);
        break;
    }
  }
  return x;
}

function metadataFor(spec: ModelSpec, options: LowerOptions, input: 'data' | 'image', imageSize?: number): Record<string, string> {
  if (options.classNames && options.classNames.length !== spec.numClasses) {
    throw new WeightsError(`${options.classNames.length} class names given for a model of ${spec.numClasses} classes`);
  }
  const meta: Record<string, string> = {
    [META.preset]: spec.preset,
    [META.spec]: JSON.stringify(spec),
    [META.inputSize]: String(spec.inputSize),
    [META.configHash]: configHash(spec, options.classNames),
    [META.input]: input,
  };
  if (options.classNames) meta[META.classNames] = JSON.stringify(options.classNames);
  if (options.meanChannels) meta[META.meanChannels] = JSON.stringify(options.meanChannels);
  if (imageSize !== undefined) meta[META.imageSize] = String(imageSize);
  return { ...meta, ...(options.metadata ?? {}) };
}

function finish(g: GraphBuilder, spec: ModelSpec, logits: string, metadata: Record<string, string>, opset?: number): ModelProto {
  g.output(logits, 'float32', ['N', spec.numClasses], 'logits');
  g.output(g.op('Softmax', ['logits'], { axis: int(1) }, 'prob'), 'float32', ['N', spec.numClasses]);
  return g.model({ opset, metadata, docString: `AlexNet (${spec.preset}) inference graph, ${spec.numClasses} classes` });
}

/** Input `data` float32 [N, C, S, S] (mean-subtracted crop); outputs `logits`, `prob`. */
export function lowerInference(spec: ModelSpec, weights: NamedTensors, options: LowerOptions = {}): ModelProto {
  checkWeights(spec, weights);
  const g = new GraphBuilder(`alexnet_${spec.preset.replace(/-/g, '_')}`);
  const data = g.input('data', 'float32', ['N', spec.inputChannels, spec.inputSize, spec.inputSize]);
  return finish(g, spec, emitNetwork(g, spec, weights, data), metadataFor(spec, options, 'data', options.imageSize), options.opset);
}

/** The per-channel means of a CxHxW mean image (float64 sums). */
export function channelMeans(meanImage: Float32Array, channels: number): number[] {
  const plane = meanImage.length / channels;
  const out: number[] = [];
  for (let c = 0; c < channels; c++) {
    let sum = 0;
    for (let i = c * plane; i < (c + 1) * plane; i++) sum += meanImage[i];
    out.push(sum / plane);
  }
  return out;
}

/**
 * Input `image` uint8 [N, S0, S0, C] (NHWC, S0 = imageSize) → Cast → Transpose to NCHW →
 * Sub the mean image → center Slice (offset (S0 − S) >> 1, 14 for 256 → 227) → the network.
 * Subtracting before cropping equals cropping before subtracting, value for value.
 */
export function lowerWithPreprocessing(spec: ModelSpec, weights: NamedTensors, options: PreprocessingOptions): ModelProto {
  checkWeights(spec, weights);
  const { imageSize, meanImage } = options;
  const c = spec.inputChannels;
  if (!Number.isInteger(imageSize) || imageSize < spec.inputSize) {
    throw new WeightsError(`image size ${imageSize} is smaller than the network input ${spec.inputSize}`);
  }
  if (meanImage.length !== c * imageSize * imageSize) {
    throw new WeightsError(`the mean image has ${meanImage.length} values, ${c}x${imageSize}x${imageSize} needed`);
  }
  const g = new GraphBuilder(`alexnet_${spec.preset.replace(/-/g, '_')}_preprocessing`);
  const image = g.input('image', 'uint8', ['N', imageSize, imageSize, c]);
  const asFloat = g.op('Cast', [image], { to: int(1 /* FLOAT */) }, 'image_float');
  const nchw = g.op('Transpose', [asFloat], { perm: ints([0, 3, 1, 2]) }, 'image_nchw');
  const mean = g.initializer('mean_image', meanImage, [1, c, imageSize, imageSize]);
  const centered = g.op('Sub', [nchw, mean], {}, 'image_centered');
  const offset = (imageSize - spec.inputSize) >> 1;
  const data = g.op(
    'Slice',
    [centered, g.int64s([offset, offset]), g.int64s([offset + spec.inputSize, offset + spec.inputSize]), g.int64s([2, 3])],
    {},
    'data',
  );
  const meta = metadataFor(spec, { ...options, meanChannels: options.meanChannels ?? channelMeans(meanImage, c) }, 'image', imageSize);
  return finish(g, spec, emitNetwork(g, spec, weights, data), meta, options.opset);
}
