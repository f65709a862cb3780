/**
 * AlexNet as data (DESIGN §7): a spec is a plain, JSON-serialisable object listing every layer
 * with every attribute. Lowering to ONNX (onnx-export), to a training graph (trainer) or to
 * tfjs are pure functions of it; nothing here knows about an engine.
 *
 * Conventions: tensors are NCHW; conv weights OIHW `[out, in/group, kh, kw]` (one tensor even
 * for grouped layers); fc weights `[out, in]` (PyTorch/ONNX Gemm transB=1 layout);
 * LRN attributes in ONNX semantics: `x / (bias + alpha/size * Σ x²)^beta`.
 */
import { InputError } from '@alexnet-stream/core';

/**
 * How a parameter tensor is initialised. `fan-in-uniform` is PyTorch's default for conv/linear
 * (U(±1/sqrt(fan_in))); `fan-in-normal` is N(0, (gain/sqrt(fan_in))²): with gain sqrt(2) He et
 * al.'s rule (PyTorch's kaiming_normal_ for ReLU), which keeps activations at a constant scale
 * through ReLU layers; with gain 1 the same for a layer no ReLU follows.
 */
export type InitRule =
  | { dist: 'normal'; std: number; mean?: number }
  | { dist: 'constant'; value: number }
  | { dist: 'fan-in-uniform' }
  | { dist: 'fan-in-normal'; gain: number };

export interface ConvLayer {
  kind: 'conv';
  name: string;
  outChannels: number;
  kernel: number; // square kernels only (AlexNet has no others)
  stride: number;
  pad: number;
  group: number;
  weightInit: InitRule;
  biasInit: InitRule;
}
export interface ReluLayer {
  kind: 'relu';
  name: string;
}
export interface MaxPoolLayer {
  kind: 'maxpool';
  name: string;
  kernel: number;
  stride: number;
  pad: number;
}
export interface LrnLayer {
  kind: 'lrn';
  name: string;
  size: number;
  alpha: number;
  beta: number;
  bias: number;
}
export interface FlattenLayer {
  kind: 'flatten';
  name: string;
}
export interface DropoutLayer {
  kind: 'dropout';
  name: string;
  rate: number;
}
export interface FcLayer {
  kind: 'fc';
  name: string;
  outFeatures: number;
  weightInit: InitRule;
  biasInit: InitRule;
}

export type LayerSpec = ConvLayer | ReluLayer | MaxPoolLayer | LrnLayer | FlattenLayer | DropoutLayer | FcLayer;
export type ParamLayer = ConvLayer | FcLayer;

export const PRESETS = ['theano-alexnet', 'bvlc-alexnet', 'caffenet', 'torchvision-alexnet'] as const;
export type PresetName = (typeof PRESETS)[number];

export interface ModelSpec {
  /** Format version of this object, for checkpoints written by older code. */
  specVersion: 1;
  preset: PresetName;
  inputChannels: number;
  /** Height = width of the (cropped) network input. */
  inputSize: number;
  numClasses: number;
  /** The network up to and including the last fc (logits); softmax/loss are added by lowering. */
  layers: LayerSpec[];
}

export interface ParamInfo {
  /** `conv1.weight`, `conv1.bias`, … */
  name: string;
  layer: string;
  role: 'weight' | 'bias';
  shape: number[];
  init: InitRule;
}

export type Shape = number[]; // without the batch dimension: [C, H, W] or [features]

export function isParamLayer(layer: LayerSpec): layer is ParamLayer {
  return layer.kind === 'conv' || layer.kind === 'fc';
}

/** Spatial output size of a conv/pool window (floor mode, as Caffe/Theano/ONNX default). */
export function windowOutputSize(input: number, kernel: number, stride: number, pad: number): number {
  return Math.floor((input + 2 * pad - kernel) / stride) + 1;
}

export interface LayerShapes {
  layer: LayerSpec;
  input: Shape;
  output: Shape;
}

/** A spec whose layers do not fit together (a shape that becomes empty, groups that do not divide): exit 2. */
export class ModelSpecError extends InputError {
  constructor(message: string) {
    super(message, { code: 'ERR_MODEL_SPEC' });
  }
}

/**
 * Output shape of every layer for the spec's input size. Throws with the layer's name when a
 * layer cannot apply (spatial size < kernel, channels not divisible by group, …).
 */
export function inferShapes(spec: ModelSpec): LayerShapes[] {
  let shape: Shape = [spec.inputChannels, spec.inputSize, spec.inputSize];
  const out: LayerShapes[] = [];
  for (const layer of spec.layers) {
    const input = shape;
    switch (layer.kind) {
      case 'conv': {
        const [c, h, w] = expectCHW(input, layer.name);
        if (c % layer.group !== 0 || layer.outChannels % layer.group !== 0) {
          throw new ModelSpecError(`${layer.name}: channels ${c} -> ${layer.outChannels} not divisible by group ${layer.group}`);
        }
        shape = [layer.outChannels, windowOutputSize(h, layer.kernel, layer.stride, layer.pad), windowOutputSize(w, layer.kernel, layer.stride, layer.pad)];
        break;
      }
      case 'maxpool': {
        const [c, h, w] = expectCHW(input, layer.name);
        shape = [c, windowOutputSize(h, layer.kernel, layer.stride, layer.pad), windowOutputSize(w, layer.kernel, layer.stride, layer.pad)];
        break;
      }
      case 'flatten':
        shape = [input.reduce((a, b) => a * b, 1)];
        break;
      case 'fc':
        if (input.length !== 1) throw new ModelSpecError(`${layer.name}: fc needs a flat input, got [${input.join(', ')}] (add a flatten layer)`);
        shape = [layer.outFeatures];
        break;
      case 'relu':
      case 'lrn':
      case 'dropout':
        break;
    }
    if (shape.some((d) => !(d >= 1))) {
      throw new ModelSpecError(
        `${layer.name}: output shape [${shape.join(', ')}] is empty for input [${input.join(', ')}] (input size ${spec.inputSize} too small?)`,
      );
    }
    out.push({ layer, input, output: shape });
  }
  return out;
}

function expectCHW(shape: Shape, name: string): [number, number, number] {
  if (shape.length !== 3) throw new ModelSpecError(`${name}: needs a CxHxW input, got [${shape.join(', ')}]`);
  return shape as [number, number, number];
}

/** Every parameter tensor in a fixed order (layer order, weight before bias). */
export function parameterList(spec: ModelSpec): ParamInfo[] {
  const params: ParamInfo[] = [];
  for (const { layer, input } of inferShapes(spec)) {
    if (layer.kind === 'conv') {
      params.push({
        name: `${layer.name}.weight`,
        layer: layer.name,
        role: 'weight',
        shape: [layer.outChannels, input[0] / layer.group, layer.kernel, layer.kernel],
        init: layer.weightInit,
      });
      params.push({ name: `${layer.name}.bias`, layer: layer.name, role: 'bias', shape: [layer.outChannels], init: layer.biasInit });
    } else if (layer.kind === 'fc') {
      params.push({ name: `${layer.name}.weight`, layer: layer.name, role: 'weight', shape: [layer.outFeatures, input[0]], init: layer.weightInit });
      params.push({ name: `${layer.name}.bias`, layer: layer.name, role: 'bias', shape: [layer.outFeatures], init: layer.biasInit });
    }
  }
  return params;
}

export function parameterCount(spec: ModelSpec): number {
  return parameterList(spec).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
}

/**
 * Multiply-accumulates of one image's forward pass through each conv and fc layer (the work of
 * a network; pooling, LRN and ReLU are memory-bound and left out). A training step does about
 * three times this per image: forward, input gradients (none for the first layer), weight
 * gradients.
 */
export function forwardMacs(spec: ModelSpec): { layer: string; macs: number }[] {
  const out: { layer: string; macs: number }[] = [];
  for (const { layer, input, output } of inferShapes(spec)) {
    if (layer.kind === 'conv')
      out.push({ layer: layer.name, macs: output[0] * output[1] * output[2] * (input[0] / layer.group) * layer.kernel * layer.kernel });
    if (layer.kind === 'fc') out.push({ layer: layer.name, macs: input.reduce((a, b) => a * b, 1) * layer.outFeatures });
  }
  return out;
}

/** Multiply-accumulates of one image's training step: forward + dX (all but the first layer) + dW. */
export function trainingMacs(spec: ModelSpec): number {
  const layers = forwardMacs(spec);
  const forward = layers.reduce((s, l) => s + l.macs, 0);
  return 3 * forward - (layers[0]?.macs ?? 0);
}
