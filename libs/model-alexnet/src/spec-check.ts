/**
 * A model spec read from a file (a checkpoint's state.json, safetensors or ONNX metadata, a
 * spec_file) is input, not code: it can be edited, damaged or hostile. `checkSpec` checks
 * every field of every layer against what the lowerings accept, the class count against the
 * last layer, and the sizes against limits that bound the memory a spec can make us allocate
 * (a spec must never claim its way into a multi-GB allocation or an "Invalid typed array
 * length"). The first problem is reported naming the source and the field.
 */
import { inferShapes, type LayerSpec, type ModelSpec, PRESETS } from './spec';

/**
 * Limits: generous for any AlexNet-like model (inputs of 227, the largest preset 61M
 * parameters, its largest activation 290k values per image), small enough that a spec cannot
 * ask for more than ~4 GB of weights, a tensor JS cannot allocate, or input buffers beyond
 * 12 MB per image (1024x1024x3 float32: a batch of 32 is 400 MB).
 */
export const SPEC_LIMITS = {
  inputChannels: 64,
  inputSize: 1024,
  numClasses: 1_000_000,
  layers: 256,
  channels: 65536,
  kernel: 64,
  parameters: 1_000_000_000,
  valuesPerImage: 100_000_000,
} as const;

const LAYER_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

type Check = (value: unknown) => string | undefined;

const integer =
  (min: number, max: number): Check =>
  (v) =>
    typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max ? undefined : `an integer from ${min} to ${max}`;
const finite =
  (min = -Infinity, max = Infinity): Check =>
  (v) =>
    typeof v === 'number' && Number.isFinite(v) && v >= min && v <= max
      ? undefined
      : `a finite number${min > -Infinity ? ` >= ${min}` : ''}${max < Infinity ? ` <= ${max}` : ''}`;
const below =
  (max: number): Check =>
  (v) =>
    typeof v === 'number' && v >= 0 && v < max ? undefined : `a number >= 0 and < ${max}`;

function describe(v: unknown): string {
  const text = JSON.stringify(v);
  if (text === undefined) return String(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function field(obj: Record<string, unknown>, key: string, check: Check, where: string): void {
  const v = Object.hasOwn(obj, key) ? obj[key] : undefined;
  const expected = check(v);
  if (expected !== undefined) throw new SpecError(`${where}.${key} is ${v === undefined ? 'missing' : describe(v)}, expected ${expected}`);
}

class SpecError extends Error {}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function checkInit(obj: Record<string, unknown>, key: string, where: string): void {
  const rule = Object.hasOwn(obj, key) ? obj[key] : undefined;
  if (!isObject(rule)) throw new SpecError(`${where}.${key} is ${describe(rule)}, expected an init rule ({ "dist": ... })`);
  const at = `${where}.${key}`;
  switch (rule.dist) {
    case 'normal':
      field(rule, 'std', finite(0), at);
      if (Object.hasOwn(rule, 'mean')) field(rule, 'mean', finite(), at);
      return;
    case 'constant':
      field(rule, 'value', finite(), at);
      return;
    case 'fan-in-uniform':
      return;
    case 'fan-in-normal':
      field(rule, 'gain', finite(0), at);
      return;
    default:
      throw new SpecError(`${at}.dist is ${describe(rule.dist)}, expected normal, constant, fan-in-uniform or fan-in-normal`);
  }
}

function checkLayer(layer: unknown, i: number): void {
  const where = `layers[${i}]`;
  if (!isObject(layer)) throw new SpecError(`${where} is ${describe(layer)}, expected a layer object`);
  const name = Object.hasOwn(layer, 'name') ? layer.name : undefined;
  if (typeof name !== 'string' || !LAYER_NAME.test(name)) throw new SpecError(`${where}.name is ${describe(name)}, expected 1-64 letters, digits, _ . -`);
  const at = `${where} (${name})`;
  const k = SPEC_LIMITS.kernel;
  switch (layer.kind) {
    case 'conv':
      field(layer, 'outChannels', integer(1, SPEC_LIMITS.channels), at);
      field(layer, 'kernel', integer(1, k), at);
      field(layer, 'stride', integer(1, k), at);
      field(layer, 'pad', integer(0, k), at);
      field(layer, 'group', integer(1, SPEC_LIMITS.channels), at);
      checkInit(layer, 'weightInit', at);
      checkInit(layer, 'biasInit', at);
      return;
    case 'maxpool':
      field(layer, 'kernel', integer(1, k), at);
      field(layer, 'stride', integer(1, k), at);
      field(layer, 'pad', integer(0, (layer.kernel as number) - 1), at);
      return;
    case 'lrn':
      field(layer, 'size', integer(1, k), at);
      field(layer, 'alpha', finite(), at);
      field(layer, 'beta', finite(), at);
      field(layer, 'bias', finite(), at);
      return;
    case 'dropout':
      field(layer, 'rate', below(1), at);
      return;
    case 'fc':
      field(layer, 'outFeatures', integer(1, SPEC_LIMITS.numClasses), at);
      checkInit(layer, 'weightInit', at);
      checkInit(layer, 'biasInit', at);
      return;
    case 'relu':
    case 'flatten':
      return;
    default:
      throw new SpecError(`${at}.kind is ${describe(layer.kind)}, expected conv, relu, maxpool, lrn, flatten, dropout or fc`);
  }
}

/**
 * What is wrong with `value` as a ModelSpec, in words (the first problem, naming the field), or
 * undefined when it is a spec we can use. Callers wrap it in their own error naming the file:
 * `parseSpec` (an InputError), onnx-export's model loading (an OnnxFormatError).
 */
export function specProblem(value: unknown): string | undefined {
  try {
    if (!isObject(value)) throw new SpecError('not a JSON object');
    if (value.specVersion !== 1) throw new SpecError(`specVersion is ${describe(value.specVersion)}, expected 1`);
    if (typeof value.preset !== 'string' || !(PRESETS as readonly string[]).includes(value.preset)) {
      throw new SpecError(`preset is ${describe(value.preset)}, expected one of ${PRESETS.join(', ')}`);
    }
    field(value, 'inputChannels', integer(1, SPEC_LIMITS.inputChannels), 'spec');
    field(value, 'inputSize', integer(1, SPEC_LIMITS.inputSize), 'spec');
    field(value, 'numClasses', integer(1, SPEC_LIMITS.numClasses), 'spec');
    const layers = value.layers;
    if (!Array.isArray(layers) || layers.length === 0 || layers.length > SPEC_LIMITS.layers) {
      throw new SpecError(`layers is ${describe(layers)}, expected a list of 1 to ${SPEC_LIMITS.layers} layers`);
    }
    layers.forEach(checkLayer);
    const names = new Set<string>();
    for (const l of layers as LayerSpec[]) {
      if (names.has(l.name)) throw new SpecError(`two layers are named ${JSON.stringify(l.name)}`);
      names.add(l.name);
    }
    const spec = value as unknown as ModelSpec;
    let shapes;
    try {
      shapes = inferShapes(spec);
    } catch (err) {
      throw new SpecError((err as Error).message);
    }
    let parameters = 0;
    for (const { layer, input, output } of shapes) {
      const values = output.reduce((a, b) => a * b, 1);
      if (values > SPEC_LIMITS.valuesPerImage)
        throw new SpecError(`${layer.name}: output [${output.join(', ')}] exceeds ${SPEC_LIMITS.valuesPerImage} values per image`);
      if (layer.kind === 'conv') {
        if (input[0] % layer.group !== 0) throw new SpecError(`${layer.name}: ${input[0]} input channels not divisible by group ${layer.group}`);
        parameters += layer.outChannels * (input[0] / layer.group) * layer.kernel * layer.kernel + layer.outChannels;
      } else if (layer.kind === 'fc') {
        parameters += layer.outFeatures * input[0] + layer.outFeatures;
      }
    }
    if (parameters > SPEC_LIMITS.parameters) throw new SpecError(`${parameters} parameters, more than the ${SPEC_LIMITS.parameters} a model may have`);
    const last = shapes[shapes.length - 1];
    if (last.layer.kind !== 'fc' || last.output[0] !== spec.numClasses) {
      throw new SpecError(
        `numClasses is ${spec.numClasses} but the last layer (${last.layer.name}) gives [${last.output.join(', ')}]; the last layer must be an fc with numClasses outputs`,
      );
    }
    return undefined;
  } catch (err) {
    if (err instanceof SpecError) return err.message;
    throw err;
  }
}
