/**
 * The AlexNet family as specs. `theano-alexnet` is the seed exactly (DESIGN §7); the others
 * exist so that their published weights import (`bvlc-alexnet`, `caffenet` from Caffe /
 * the ONNX model zoo, `torchvision-alexnet` from PyTorch exports).
 */
import { check } from '@alexnet-stream/core';
import { specProblem } from './spec-check';
import { type InitRule, type LayerSpec, type ModelSpec, ModelSpecError, type PresetName, PRESETS, inferShapes } from './spec';

export interface PresetOptions {
  numClasses?: number;
  /** Network input (crop) size; default 227 (224 for torchvision-alexnet). */
  inputSize?: number;
  /** Dropout rate of fc6/fc7; 0 removes the dropout layers. Default 0.5. */
  dropout?: number;
  /** Include the LRN layers (default true where the preset has them). */
  lrn?: boolean;
  /** Weight initialisation: the preset's own rules (default), `kaiming` or `kaiming-all` (see `kaimingInit`). */
  init?: InitScheme;
}

export const INIT_SCHEMES = ['preset', 'kaiming', 'kaiming-all'] as const;
export type InitScheme = (typeof INIT_SCHEMES)[number];

/**
 * `init: kaiming`, for training from scratch in few epochs. The seed's small fixed stds
 * (0.01, 0.005) shrink the signal by ~0.3x per layer, so a fresh network's output is nearly
 * the same for every image and training first sits at chance for several epochs (on the demo
 * data: 3-7 epochs, ~60 to reach 90%). Here every conv/fc weight after the first is He-normal
 * (gain sqrt(2): scale-preserving through the ReLU that follows; gain 1 for the classifier,
 * which no ReLU follows). The first layer keeps the preset's rule, chosen for its input:
 * raw-scale mean-subtracted pixels (±128, not unit variance), on which He's rule would give
 * pre-activations ~60x too large, and whose gradients scale with that input too (the same
 * learning rate would then move conv1 ~60² times further, relatively, than the other layers).
 * Biases keep the preset's rules.
 *
 * `init: kaiming-all` is He-normal in the first layer too: for inputs of unit scale (the
 * trainer's `input_scale`, e.g. 1/std per channel, as torchvision's Normalize gives them), on
 * which He's rule keeps conv1's output at unit scale like every other layer's.
 */
function kaimingInit(layers: LayerSpec[], firstLayerToo: boolean): LayerSpec[] {
  const paramLayers = layers.filter((l) => l.kind === 'conv' || l.kind === 'fc');
  const first = paramLayers[0],
    last = paramLayers[paramLayers.length - 1];
  return layers.map((l) => {
    if ((l.kind !== 'conv' && l.kind !== 'fc') || (l === first && !firstLayerToo)) return l;
    return { ...l, weightInit: { dist: 'fan-in-normal', gain: l === last ? 1 : Math.SQRT2 } };
  });
}

const normal = (std: number): InitRule => ({ dist: 'normal', std });
const constant = (value: number): InitRule => ({ dist: 'constant', value });
const fanIn: InitRule = { dist: 'fan-in-uniform' };

function conv(
  name: string,
  outChannels: number,
  kernel: number,
  stride: number,
  pad: number,
  group: number,
  weightInit: InitRule,
  biasInit: InitRule,
): LayerSpec {
  return { kind: 'conv', name, outChannels, kernel, stride, pad, group, weightInit, biasInit };
}
const relu = (name: string): LayerSpec => ({ kind: 'relu', name });
const pool = (name: string): LayerSpec => ({ kind: 'maxpool', name, kernel: 3, stride: 2, pad: 0 });
const fc = (name: string, outFeatures: number, weightInit: InitRule, biasInit: InitRule): LayerSpec => ({
  kind: 'fc',
  name,
  outFeatures,
  weightInit,
  biasInit,
});
const dropout = (name: string, rate: number): LayerSpec => ({ kind: 'dropout', name, rate });

/**
 * Seed (pylearn2 CrossChannelNormalization): x / (2 + 1e-4 Σ x²)^0.75, α not divided by n.
 * ONNX divides α by size, so α_onnx = 5 · 1e-4.
 */
const theanoLrn = (name: string): LayerSpec => ({ kind: 'lrn', name, size: 5, alpha: 5e-4, beta: 0.75, bias: 2 });
/** Caffe LRN: x / (1 + 1e-4/5 Σ x²)^0.75: the same convention as ONNX. */
const caffeLrn = (name: string): LayerSpec => ({ kind: 'lrn', name, size: 5, alpha: 1e-4, beta: 0.75, bias: 1 });

function layersFor(preset: PresetName, numClasses: number, rate: number): LayerSpec[] {
  switch (preset) {
    case 'theano-alexnet':
      // conv -> ReLU -> pool -> LRN (seed order)
      return [
        conv('conv1', 96, 11, 4, 0, 1, normal(0.01), constant(0)),
        relu('relu1'),
        pool('pool1'),
        theanoLrn('norm1'),
        conv('conv2', 256, 5, 1, 2, 2, normal(0.01), constant(0.1)),
        relu('relu2'),
        pool('pool2'),
        theanoLrn('norm2'),
        conv('conv3', 384, 3, 1, 1, 1, normal(0.01), constant(0)),
        relu('relu3'),
        conv('conv4', 384, 3, 1, 1, 2, normal(0.01), constant(0.1)),
        relu('relu4'),
        conv('conv5', 256, 3, 1, 1, 2, normal(0.01), constant(0)),
        relu('relu5'),
        pool('pool5'),
        { kind: 'flatten', name: 'flatten' },
        fc('fc6', 4096, normal(0.005), constant(0.1)),
        relu('relu6'),
        dropout('drop6', rate),
        fc('fc7', 4096, normal(0.005), constant(0.1)),
        relu('relu7'),
        dropout('drop7', rate),
        fc('fc8', numClasses, normal(0.01), constant(0)),
      ];
    case 'bvlc-alexnet':
      // conv -> ReLU -> LRN -> pool (Caffe's bvlc_alexnet train_val.prototxt, its fillers)
      return [
        conv('conv1', 96, 11, 4, 0, 1, normal(0.01), constant(0)),
        relu('relu1'),
        caffeLrn('norm1'),
        pool('pool1'),
        conv('conv2', 256, 5, 1, 2, 2, normal(0.01), constant(0.1)),
        relu('relu2'),
        caffeLrn('norm2'),
        pool('pool2'),
        conv('conv3', 384, 3, 1, 1, 1, normal(0.01), constant(0)),
        relu('relu3'),
        conv('conv4', 384, 3, 1, 1, 2, normal(0.01), constant(0.1)),
        relu('relu4'),
        conv('conv5', 256, 3, 1, 1, 2, normal(0.01), constant(0.1)),
        relu('relu5'),
        pool('pool5'),
        { kind: 'flatten', name: 'flatten' },
        fc('fc6', 4096, normal(0.005), constant(0.1)),
        relu('relu6'),
        dropout('drop6', rate),
        fc('fc7', 4096, normal(0.005), constant(0.1)),
        relu('relu7'),
        dropout('drop7', rate),
        fc('fc8', numClasses, normal(0.01), constant(0)),
      ];
    case 'caffenet':
      // CaffeNet: pool before norm (as the seed), Caffe LRN constants, its fillers (biases 1)
      return [
        conv('conv1', 96, 11, 4, 0, 1, normal(0.01), constant(0)),
        relu('relu1'),
        pool('pool1'),
        caffeLrn('norm1'),
        conv('conv2', 256, 5, 1, 2, 2, normal(0.01), constant(1)),
        relu('relu2'),
        pool('pool2'),
        caffeLrn('norm2'),
        conv('conv3', 384, 3, 1, 1, 1, normal(0.01), constant(0)),
        relu('relu3'),
        conv('conv4', 384, 3, 1, 1, 2, normal(0.01), constant(1)),
        relu('relu4'),
        conv('conv5', 256, 3, 1, 1, 2, normal(0.01), constant(1)),
        relu('relu5'),
        pool('pool5'),
        { kind: 'flatten', name: 'flatten' },
        fc('fc6', 4096, normal(0.005), constant(1)),
        relu('relu6'),
        dropout('drop6', rate),
        fc('fc7', 4096, normal(0.005), constant(1)),
        relu('relu7'),
        dropout('drop7', rate),
        fc('fc8', numClasses, normal(0.01), constant(0)),
      ];
    case 'torchvision-alexnet':
      // torchvision.models.alexnet: no LRN, no groups, dropout *before* fc6/fc7. At 224 input
      // its AdaptiveAvgPool2d((6, 6)) is the identity, so it is not a layer here.
      return [
        conv('conv1', 64, 11, 4, 2, 1, fanIn, fanIn),
        relu('relu1'),
        pool('pool1'),
        conv('conv2', 192, 5, 1, 2, 1, fanIn, fanIn),
        relu('relu2'),
        pool('pool2'),
        conv('conv3', 384, 3, 1, 1, 1, fanIn, fanIn),
        relu('relu3'),
        conv('conv4', 256, 3, 1, 1, 1, fanIn, fanIn),
        relu('relu4'),
        conv('conv5', 256, 3, 1, 1, 1, fanIn, fanIn),
        relu('relu5'),
        pool('pool5'),
        { kind: 'flatten', name: 'flatten' },
        dropout('drop6', rate),
        fc('fc6', 4096, fanIn, fanIn),
        relu('relu6'),
        dropout('drop7', rate),
        fc('fc7', 4096, fanIn, fanIn),
        relu('relu7'),
        fc('fc8', numClasses, fanIn, fanIn),
      ];
  }
}

export function isPresetName(name: string): name is PresetName {
  return (PRESETS as readonly string[]).includes(name);
}

/**
 * A spec for a preset. Options are validated here (the boundary), with messages that name
 * the option, what was expected and what was given.
 */
export function alexnetSpec(preset: PresetName = 'theano-alexnet', options: PresetOptions = {}): ModelSpec {
  check.oneOf('preset', preset, PRESETS);
  const numClasses = check.integer('numClasses', options.numClasses ?? 1000, { min: 2 });
  const inputSize = check.integer('inputSize', options.inputSize ?? (preset === 'torchvision-alexnet' ? 224 : 227), { min: 1 });
  const rate = check.number('dropout', options.dropout ?? 0.5, { min: 0, max: 1, maxExclusive: true });
  let layers = layersFor(preset, numClasses, rate);
  if (rate === 0) layers = layers.filter((l) => l.kind !== 'dropout');
  if (options.lrn === false) layers = layers.filter((l) => l.kind !== 'lrn');
  const init = options.init ?? 'preset';
  check.oneOf('init', init, INIT_SCHEMES);
  if (init === 'kaiming' || init === 'kaiming-all') layers = kaimingInit(layers, init === 'kaiming-all');
  const spec: ModelSpec = { specVersion: 1, preset, inputChannels: 3, inputSize, numClasses, layers };
  inferShapes(spec); // throws, naming the layer, when the input size is too small
  // The limits every spec read back must meet (spec-check.ts): a class count or input size no
  // checkpoint could hold (e.g. --num-classes 1000000000: 4e12 fc8 weights) is refused here,
  // by every caller, instead of failing as "Invalid typed array length" when weights are made.
  const problem = specProblem(spec);
  if (problem) throw new ModelSpecError(problem);
  return spec;
}

/**
 * `spec` with its widths divided: every conv's channels by `convDivisor`, every fc's features by
 * `fcDivisor` except the classifier's (the last layer keeps the class count). Order, kernels,
 * groups and LRN constants stay, so a narrowed preset exercises the same structure at a
 * fraction of the cost (tests, quick experiments). Throws, naming the layer, when a width does
 * not divide or groups no longer fit.
 */
export function narrowSpec(spec: ModelSpec, convDivisor: number, fcDivisor: number): ModelSpec {
  const lastFc = [...spec.layers].reverse().find((l) => l.kind === 'fc');
  const divide = (name: string, width: number, divisor: number, parameter: string) => {
    check.that(parameter, Number.isInteger(divisor) && divisor >= 1 && width % divisor === 0, `a divisor of ${name}'s width ${width}`, divisor);
    return width / divisor;
  };
  const layers = spec.layers.map((l): LayerSpec => {
    if (l.kind === 'conv') return { ...l, outChannels: divide(l.name, l.outChannels, convDivisor, 'convDivisor') };
    if (l.kind === 'fc' && l !== lastFc) return { ...l, outFeatures: divide(l.name, l.outFeatures, fcDivisor, 'fcDivisor') };
    return l;
  });
  const out = { ...spec, layers };
  inferShapes(out);
  return out;
}
