/**
 * Checkpoints (DESIGN §4): `weights_dir/epoch-0007/` holding
 *
 *   weights.safetensors    every parameter of the spec, F32, named as `parameterList` names them
 *   momentum.safetensors   the optimizer's velocities, same names (when the trainer has them)
 *   state.json             `{ format, spec, ...state }`: epoch, iteration, lr, val_record so far,
 *                          config, rng states... whatever the trainer passes, plus the spec
 *
 * Both safetensors files carry the spec as JSON in their `__metadata__` too, so a lone
 * `weights.safetensors` is self-describing (`--weights file.safetensors` works).
 *
 * Atomicity: everything is written (and fsynced) into a hidden temp dir beside the target,
 * which is then renamed into place. A killed writer leaves at most a `.epoch-0007.tmp-*` dir,
 * which readers ignore; an `epoch-NNNN` dir is always whole, and earlier ones are untouched.
 *
 * Reading and writing are synchronous: they run at epoch boundaries, where the trainer's thread
 * has nothing else to do, and callers may `await` them all the same.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fsyncDir, InputError, tempPathFor, writeFileSynced } from '@alexnet-stream/stream-io';
import { inferShapes, ModelSpec, parameterList } from './spec';
import { decodeSafetensors, encodeSafetensors, float16ToFloat32, SafeTensor } from './safetensors';
import type { Weights } from './init';

export const WEIGHTS_FILE = 'weights.safetensors';
export const MOMENTUM_FILE = 'momentum.safetensors';
export const STATE_FILE = 'state.json';
/** Written into state.json and the safetensors metadata; bump when the layout changes. */
export const CHECKPOINT_FORMAT = 'alexnet-stream-checkpoint/1';

export interface Checkpoint {
  spec: ModelSpec;
  weights: Weights;
  momentum?: Weights;
  /** Everything the trainer wants back on resume (JSON-serialisable). */
  state: Record<string, unknown>;
}

export interface LoadedCheckpoint extends Checkpoint {
  /** The weights file that was read. */
  weightsPath: string;
}

export interface CheckpointEntry {
  epoch: number;
  /** Path of the `epoch-NNNN` directory. */
  path: string;
}

/** `epoch-0007`: zero-padded so that directory listings sort by epoch. */
export function checkpointDirName(epoch: number): string {
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new RangeError(`Expected a non-negative integer for epoch but received ${epoch}`);
  return `epoch-${String(epoch).padStart(4, '0')}`;
}

const EPOCH_DIR = /^epoch-(\d+)$/;

/** Complete checkpoints under `weightsDir`, ascending by epoch (temp dirs of killed writers are ignored). */
export function listCheckpoints(weightsDir: string): CheckpointEntry[] {
  if (!existsSync(weightsDir)) return [];
  const out: CheckpointEntry[] = [];
  for (const name of readdirSync(weightsDir)) {
    const m = EPOCH_DIR.exec(name);
    if (!m) continue;
    const path = join(weightsDir, name);
    if (statSync(path).isDirectory() && existsSync(join(path, WEIGHTS_FILE))) out.push({ epoch: Number(m[1]), path });
  }
  return out.sort((a, b) => a.epoch - b.epoch);
}

/** The highest-epoch checkpoint under `weightsDir`, or undefined when there is none. */
export function latestCheckpoint(weightsDir: string): CheckpointEntry | undefined {
  const all = listCheckpoints(weightsDir);
  return all[all.length - 1];
}

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
  for (const p of params) {
    const t = weights[p.name];
    const count = p.shape.reduce((a, b) => a * b, 1);
    if (t === undefined) {
      missing.push(`${p.name} ${shapeText(p.shape)}`);
    } else if (t instanceof Float32Array) {
      if (t.length !== count) problems.push(`${p.name} has ${t.length} values, the model needs ${shapeText(p.shape)} = ${count}`);
    } else if (t.dtype !== 'F32') {
      problems.push(`${p.name} is ${t.dtype}, the model needs F32`);
    } else if (shapeText(t.shape) !== shapeText(p.shape)) {
      problems.push(`${p.name} has shape ${shapeText(t.shape)}, the model needs ${shapeText(p.shape)}`);
    } else if (!(t.data instanceof Float32Array) || t.data.length !== count) {
      problems.push(`${p.name} has ${t.data.length} values for shape ${shapeText(p.shape)}`);
    }
  }
  const known = new Set(params.map((p) => p.name));
  const unexpected = Object.keys(weights).filter((name) => !known.has(name));
  if (missing.length) problems.unshift(`missing ${missing.join(', ')}`);
  if (unexpected.length) {
    problems.push(`unexpected ${unexpected.map((n) => { const t = weights[n]; return t instanceof Float32Array ? n : `${n} ${shapeText(t.shape)}`; }).join(', ')}`);
  }
  if (problems.length) {
    throw new InputError(`${source}: weights do not match the model (${describeSpec(spec)}): ${problems.join('; ')}`);
  }
}

/** Metadata stored in every safetensors file we write. */
function metadataFor(spec: ModelSpec, content: 'weights' | 'momentum'): Record<string, string> {
  return { format: CHECKPOINT_FORMAT, content, spec: JSON.stringify(spec) };
}

/** Weights (in parameterList order) as a self-describing safetensors file. */
export function encodeWeights(spec: ModelSpec, weights: Weights, content: 'weights' | 'momentum' = 'weights'): Buffer {
  validateWeights(spec, weights, content);
  const tensors: Record<string, SafeTensor> = {};
  for (const p of parameterList(spec)) tensors[p.name] = { dtype: 'F32', shape: p.shape, data: weights[p.name] };
  return encodeSafetensors(tensors, metadataFor(spec, content));
}

/**
 * Write a checkpoint directory atomically and return its path. An existing `dir` is replaced
 * (moved aside, new one renamed in, old one removed). Throws an InputError when the weights or
 * momentum do not match the spec; a RangeError when `state` uses the reserved keys.
 */
export function saveCheckpoint(dir: string, ckpt: Checkpoint): string {
  const target = resolve(dir);
  for (const key of ['format', 'spec']) {
    if (key in ckpt.state) throw new RangeError(`saveCheckpoint: state.${key} is reserved (the checkpoint writes it)`);
  }
  validateWeights(ckpt.spec, ckpt.weights, `${target} (weights to save)`);
  if (ckpt.momentum) validateWeights(ckpt.spec, ckpt.momentum, `${target} (momentum to save)`);
  const stateText = JSON.stringify({ format: CHECKPOINT_FORMAT, spec: ckpt.spec, ...ckpt.state }, null, 2) + '\n';

  mkdirSync(dirname(target), { recursive: true });
  const tmp = tempPathFor(target, 'tmp');
  try {
    mkdirSync(tmp);
    writeFileSynced(join(tmp, WEIGHTS_FILE), encodeWeights(ckpt.spec, ckpt.weights, 'weights'));
    if (ckpt.momentum) writeFileSynced(join(tmp, MOMENTUM_FILE), encodeWeights(ckpt.spec, ckpt.momentum, 'momentum'));
    // state.json last: its presence in the temp dir means the rest is there too.
    writeFileSynced(join(tmp, STATE_FILE), stateText);
    fsyncDir(tmp);
    if (existsSync(target)) {
      const old = tempPathFor(target, 'old');
      renameSync(target, old);
      renameSync(tmp, target);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, target);
    }
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  fsyncDir(dirname(target));
  return target;
}

/** Is `value` shaped like a ModelSpec we can use? Throws an InputError naming `source` if not. */
export function parseSpec(value: unknown, source: string): ModelSpec {
  const spec = value as ModelSpec;
  if (typeof value !== 'object' || value === null || spec.specVersion !== 1 || !Array.isArray(spec.layers) || typeof spec.preset !== 'string') {
    throw new InputError(`${source}: no alexnet-stream model spec (specVersion 1) in it`);
  }
  try {
    inferShapes(spec);
  } catch (err) {
    throw new InputError(`${source}: its model spec is inconsistent: ${(err as Error).message}`);
  }
  return spec;
}

function readSafetensorsFile(path: string) {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new InputError(`${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return decodeSafetensors(bytes, path);
}

function specFromMetadata(metadata: Record<string, string>, path: string): ModelSpec | undefined {
  if (metadata.spec === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(metadata.spec);
  } catch {
    throw new InputError(`${path}: __metadata__.spec is not JSON`);
  }
  return parseSpec(parsed, `${path} (__metadata__.spec)`);
}

/** Tensors as Float32Arrays in parameterList order, after validation (F16 files are widened). */
function toWeights(spec: ModelSpec, tensors: Record<string, SafeTensor>, path: string): Weights {
  const widened: Record<string, SafeTensor> = {};
  for (const [name, t] of Object.entries(tensors)) {
    widened[name] = t.dtype === 'F16' ? { dtype: 'F32', shape: t.shape, data: float16ToFloat32(t.data as Uint16Array) } : t;
  }
  validateWeights(spec, widened, path);
  const weights: Weights = {};
  for (const p of parameterList(spec)) weights[p.name] = widened[p.name].data as Float32Array;
  return weights;
}

const sameSpec = (a: ModelSpec, b: ModelSpec) => JSON.stringify(a) === JSON.stringify(b);

/**
 * Read a checkpoint: an `epoch-NNNN` directory, or a lone `.safetensors` weights file (its spec
 * from `__metadata__`, else `expectedSpec`). With `expectedSpec`, the weights are validated
 * against it (the layer list may differ in weightless details, e.g. dropout rate); the returned
 * `spec` is the checkpoint's own when it has one. Any problem is an InputError naming the file.
 */
export function loadCheckpoint(dirOrFile: string, expectedSpec?: ModelSpec): LoadedCheckpoint {
  const path = resolve(dirOrFile);
  if (!existsSync(path)) {
    throw new InputError(`${dirOrFile}: no such checkpoint (expected an epoch directory holding ${WEIGHTS_FILE}, or a .safetensors file)`);
  }
  const isDir = statSync(path).isDirectory();
  const weightsPath = isDir ? join(path, WEIGHTS_FILE) : path;
  if (isDir && !existsSync(weightsPath)) {
    throw new InputError(`${path}: not a checkpoint directory: no ${WEIGHTS_FILE} in it (has ${readdirSync(path).join(', ') || 'nothing'})`);
  }

  let state: Record<string, unknown> = {};
  let stateSpec: ModelSpec | undefined;
  const statePath = join(path, STATE_FILE);
  if (isDir && existsSync(statePath)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(statePath, 'utf8'));
    } catch (err) {
      throw new InputError(`${statePath}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new InputError(`${statePath}: not a JSON object`);
    const { format, spec, ...rest } = parsed as Record<string, unknown>;
    if (format !== undefined && format !== CHECKPOINT_FORMAT) {
      throw new InputError(`${statePath}: checkpoint format ${JSON.stringify(format)}, this version reads ${CHECKPOINT_FORMAT}`);
    }
    if (spec !== undefined) stateSpec = parseSpec(spec, statePath);
    state = rest;
  }

  const file = readSafetensorsFile(weightsPath);
  const metaSpec = specFromMetadata(file.metadata, weightsPath);
  if (stateSpec && metaSpec && !sameSpec(stateSpec, metaSpec)) {
    throw new InputError(`${path}: ${STATE_FILE} describes ${describeSpec(stateSpec)} but ${WEIGHTS_FILE} was written for ${describeSpec(metaSpec)}: files from different checkpoints?`);
  }
  const ownSpec = stateSpec ?? metaSpec;
  const checkSpec = expectedSpec ?? ownSpec;
  if (!checkSpec) {
    throw new InputError(`${weightsPath}: no model spec in its __metadata__ (not written by alexnet-stream?): name the model, e.g. with --preset`);
  }
  const weights = toWeights(checkSpec, file.tensors, weightsPath);

  let momentum: Weights | undefined;
  const momentumPath = join(path, MOMENTUM_FILE);
  if (isDir && existsSync(momentumPath)) {
    momentum = toWeights(checkSpec, readSafetensorsFile(momentumPath).tensors, momentumPath);
  }
  return { spec: ownSpec ?? checkSpec, weights, ...(momentum ? { momentum } : {}), state, weightsPath };
}
