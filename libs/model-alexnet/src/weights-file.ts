/**
 * One safetensors file of a checkpoint (weights.safetensors, momentum.safetensors): what it
 * must hold (`validateWeights`: the spec's parameters, their shapes, finite values), how it is
 * written (`encodeWeights`: self-describing, the spec and the input scale in `__metadata__`) and
 * how it is read back (`readWeightsFile`, bounded by what the model can take; `toWeights`,
 * F16 widened). The checkpoint directory around these files is checkpoint.ts's.
 */
import { firstNonFinite, float16ToFloat32, getOwn, InputError, type NamedTensors, readUserFileSync, setOwn } from '@alexnet-stream/core';
import { type ModelSpec, parameterCount, parameterList } from './spec';
import { specProblem } from './spec-check';
import { decodeSafetensors, encodeSafetensors, MAX_HEADER_BYTES, type SafeTensor, type Safetensors } from './safetensors';
import { checkInputScale } from './input-scale';

/** Written into state.json and the safetensors metadata; bump when the layout changes. */
export const CHECKPOINT_FORMAT = 'alexnet-stream-checkpoint/1';
/** A weights file whose model is not known before reading it: 2 GiB (AlexNet for 1000 classes is 233 MiB). */
export const MAX_WEIGHTS_FILE_BYTES = 2 ** 31;

/** "theano-alexnet, 1000 classes, input 227": how messages name a model. */
export function describeSpec(spec: ModelSpec): string {
  return `${spec.preset}, ${spec.numClasses} classes, input ${spec.inputSize}`;
}

const shapeText = (shape: number[]) => `[${shape.join(', ')}]`;

/**
 * Check that `weights` holds exactly the spec's parameters, with their shapes, as float32.
 * Plain Float32Arrays are checked by length; SafeTensors by dtype and exact shape. Every
 * problem goes into one InputError that names `source` (a file or directory).
 */
export function validateWeights(spec: ModelSpec, weights: Record<string, Float32Array | SafeTensor>, source: string): void {
  const params = parameterList(spec);
  const problems: string[] = [];
  const missing: string[] = [];
  /** Parameters whose shape and dtype are right: their values are checked next. */
  const checked = new Set(params.map((p) => p.name));
  for (const p of params) {
    const t = getOwn(weights, p.name);
    const count = p.shape.reduce((a, b) => a * b, 1);
    if (t === undefined) {
      missing.push(`${p.name} ${shapeText(p.shape)}`);
    } else if (t instanceof Float32Array) {
      if (t.length === count) continue;
      problems.push(`${p.name} has ${t.length} values, the model needs ${shapeText(p.shape)} = ${count}`);
    } else if (t.dtype !== 'F32') {
      problems.push(`${p.name} is ${t.dtype}, the model needs F32`);
    } else if (shapeText(t.shape) !== shapeText(p.shape)) {
      problems.push(`${p.name} has shape ${shapeText(t.shape)}, the model needs ${shapeText(p.shape)}`);
    } else if (!(t.data instanceof Float32Array) || t.data.length !== count) {
      problems.push(`${p.name} has ${t.data.length} values for shape ${shapeText(p.shape)}`);
    } else {
      continue;
    }
    checked.delete(p.name);
  }
  const known = new Set(params.map((p) => p.name));
  const unexpected = Object.keys(weights).filter((name) => !known.has(name));
  if (missing.length) problems.unshift(`missing ${missing.join(', ')}`);
  if (unexpected.length) {
    problems.push(
      `unexpected ${unexpected
        .map((n) => {
          const t = weights[n];
          return t instanceof Float32Array ? n : `${n} ${shapeText(t.shape)}`;
        })
        .join(', ')}`,
    );
  }
  if (problems.length) {
    throw new InputError(`${source}: weights do not match the model (${describeSpec(spec)}): ${problems.join('; ')}`, { code: 'ERR_CHECKPOINT' });
  }
  // Values too: a NaN or infinite weight makes every prediction NaN ("NaN%"), and a trainer
  // resumed from it starts at a NaN loss. The trainer never saves one (it stops first).
  for (const name of checked) {
    const t = getOwn(weights, name)!;
    const data = t instanceof Float32Array ? t : (t.data as Float32Array);
    const at = firstNonFinite(data);
    if (at >= 0) {
      const why = 'weights are finite numbers (the file is damaged, or was saved after training diverged)';
      throw new InputError(`${source}: ${name}[${at}] is ${data[at]}: ${why}`, { code: 'ERR_CHECKPOINT' });
    }
  }
}

/** The key of the input scale in state.json and in the safetensors `__metadata__` (JSON there). */
export const INPUT_SCALE_KEY = 'input_scale';

/** Metadata stored in every safetensors file we write. */
function metadataFor(spec: ModelSpec, content: 'weights' | 'momentum', inputScale?: number[]): Record<string, string> {
  return { format: CHECKPOINT_FORMAT, content, spec: JSON.stringify(spec), ...(inputScale ? { [INPUT_SCALE_KEY]: JSON.stringify(inputScale) } : {}) };
}

/** Weights (in parameterList order) as a self-describing safetensors file. */
export function encodeWeights(spec: ModelSpec, weights: NamedTensors, content: 'weights' | 'momentum' = 'weights', inputScale?: number[]): Buffer {
  validateWeights(spec, weights, content);
  if (inputScale) checkInputScale(inputScale, spec, content);
  const tensors: Record<string, SafeTensor> = {};
  for (const p of parameterList(spec)) tensors[p.name] = { dtype: 'F32', shape: p.shape, data: weights[p.name] };
  return encodeSafetensors(tensors, metadataFor(spec, content, inputScale));
}

/** Is `value` a ModelSpec we can use (spec-check.ts)? Throws an InputError naming `source` and the field if not. */
export function parseSpec(value: unknown, source: string): ModelSpec {
  if (typeof value !== 'object' || value === null || (value as { specVersion?: unknown }).specVersion !== 1) {
    throw new InputError(`${source}: no alexnet-stream model spec (specVersion 1) in it`, { code: 'ERR_CHECKPOINT' });
  }
  const problem = specProblem(value);
  if (problem) throw new InputError(`${source}: its model spec is not usable: ${problem}`, { code: 'ERR_CHECKPOINT' });
  return value as ModelSpec;
}

/**
 * The largest safetensors file that can hold `spec`'s parameters (F32, the widest dtype we read,
 * after the largest header the format allows), or the generic bound when the model is not known
 * yet: a file is read only if it is a regular file of at most that size, so `/dev/zero`, a FIFO
 * or a file claiming more than the model needs never takes memory.
 */
function weightsFileBound(spec: ModelSpec | undefined): number {
  return spec ? 8 + MAX_HEADER_BYTES + 4 * parameterCount(spec) : MAX_WEIGHTS_FILE_BYTES;
}

/** One weights file, read as a regular file of bounded size (`weightsFileBound`) and decoded. */
export function readWeightsFile(path: string, spec: ModelSpec | undefined): Safetensors {
  return decodeSafetensors(readUserFileSync(path, 'weights file', weightsFileBound(spec)), path);
}

/** The spec a weights file's `__metadata__` holds (checked), or undefined when it holds none. */
export function specFromMetadata(metadata: Record<string, string>, path: string): ModelSpec | undefined {
  const text = getOwn(metadata, 'spec');
  if (text === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new InputError(`${path}: __metadata__.spec is not JSON`, { code: 'ERR_CHECKPOINT', cause: err });
  }
  return parseSpec(parsed, `${path} (__metadata__.spec)`);
}

/** Tensors as Float32Arrays in parameterList order, after validation (F16 files are widened). */
export function toWeights(spec: ModelSpec, tensors: Record<string, SafeTensor>, path: string): NamedTensors {
  const widened: Record<string, SafeTensor> = {};
  for (const [name, t] of Object.entries(tensors)) {
    setOwn(widened, name, t.dtype === 'F16' ? { dtype: 'F32', shape: t.shape, data: float16ToFloat32(t.data as Uint16Array) } : t);
  }
  validateWeights(spec, widened, path);
  const weights: NamedTensors = {};
  for (const p of parameterList(spec)) weights[p.name] = widened[p.name].data as Float32Array;
  return weights;
}
