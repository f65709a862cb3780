/**
 * Checkpoints (DESIGN §4): `weights_dir/epoch-0007/` holding
 *
 *   weights.safetensors    every parameter of the spec, F32, named as `parameterList` names them
 *   momentum.safetensors   the optimizer's velocities, same names (when the trainer has them)
 *   mean.npy               the mean image (only `import --mean` writes one here)
 *   state.json             `{ format, spec, input_scale?, ...state }`: epoch, iteration, lr,
 *                          val_record so far, config, rng states... whatever the trainer passes,
 *                          plus the spec and the input scale
 *
 * Both safetensors files carry the spec as JSON in their `__metadata__` too (and the input scale,
 * `input_scale`, when the model was trained with one: input-scale.ts), so a lone
 * `weights.safetensors` is self-describing (`--weights file.safetensors` works). What each of
 * these files holds, and how one is written and read back, is weights-file.ts's.
 *
 * Atomicity (atomic-dir.ts): a checkpoint directory appears, or replaces an existing one, as
 * one unit, and a kill at any instant leaves every checkpoint written before whole and
 * findable. state.json is the marker, written last. Whatever a killed writer leaves is finished
 * or rolled back by the next process that lists, loads or writes checkpoints there (and found
 * read-only where it cannot be). Replacing is allowed only for a directory this project wrote
 * (`checkReplaceableCheckpoint`): nothing else is ever deleted.
 *
 * Reading and writing are synchronous: they run at epoch boundaries, where the trainer's thread
 * has nothing else to do, and callers may `await` them all the same.
 */
import { closeSync, existsSync, lstatSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import {
  AlexnetStreamError,
  check,
  describeWriteError,
  getOwn,
  InputError,
  lazySchema,
  type NamedTensors,
  OutputError,
  parseWithSchema,
  readUserFileSync,
  sameJson,
} from '@alexnet-stream/core';
import type { ModelSpec } from './spec';
import { type DirectoryFile, type DirectoryWriteOptions, findDirectory, leftoverTargets, recoverDirectory, writeDirectoryAtomic } from './atomic-dir';
import { checkInputScale } from './input-scale';
import {
  CHECKPOINT_FORMAT,
  describeSpec,
  encodeWeights,
  INPUT_SCALE_KEY,
  parseSpec,
  readWeightsFile,
  specFromMetadata,
  toWeights,
  validateWeights,
} from './weights-file';

export { CHECKPOINT_FORMAT, describeSpec, encodeWeights, INPUT_SCALE_KEY, MAX_WEIGHTS_FILE_BYTES, parseSpec, validateWeights } from './weights-file';

export const WEIGHTS_FILE = 'weights.safetensors';
export const MOMENTUM_FILE = 'momentum.safetensors';
export const STATE_FILE = 'state.json';
/** A mean image stored with the checkpoint (`import --mean`). */
export const MEAN_FILE = 'mean.npy';
/** Every file a checkpoint directory of ours may hold: a directory with anything else is not replaced. */
export const CHECKPOINT_FILES: readonly string[] = [WEIGHTS_FILE, MOMENTUM_FILE, MEAN_FILE, STATE_FILE];
/** A state.json is a few kB (the spec, the config, a val_record of one entry per epoch); far more is not one. */
export const MAX_STATE_FILE_BYTES = 64 << 20;

/**
 * What a checkpoint's state.json holds besides the trainer's state (`Checkpoint.state`, whose
 * own schema is the trainer's): the format tag, the model spec (checked field by field by
 * spec-check.ts through `parseSpec`, not here) and the input scale (its channel count is checked
 * against the spec by `checkInputScale`). Loose: every other field is the trainer's.
 */
const checkpointStateSchema = lazySchema((z) => {
  const SCALE = 'a list of numbers > 0, one per input channel (or null)';
  const factor = z.number({ error: SCALE }).gt(0, { error: SCALE });
  return z.looseObject(
    {
      format: z.literal(CHECKPOINT_FORMAT, { error: `${JSON.stringify(CHECKPOINT_FORMAT)} (the format this version reads)` }).optional(),
      spec: z.unknown(),
      [INPUT_SCALE_KEY]: z.array(factor, { error: SCALE }).min(1, { error: SCALE }).nullable().optional(),
    },
    { error: "a checkpoint's state (a JSON object)" },
  );
});

export interface Checkpoint {
  spec: ModelSpec;
  weights: NamedTensors;
  momentum?: NamedTensors;
  /**
   * The per-channel factor the network's input was multiplied by in training, after the mean
   * subtraction (input-scale.ts); absent: none (the seed's raw `pixels − mean`). The weights are
   * kept as trained: export, validate and predict fold it in (`foldInputScale`).
   */
  inputScale?: number[];
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
  check.integer('epoch', epoch, { min: 0 });
  return `epoch-${String(epoch).padStart(4, '0')}`;
}

const EPOCH_DIR = /^epoch-(\d+)$/;

/**
 * Finish or roll back what killed writers left in `weightsDir` (atomic-dir.ts), as far as this
 * process may: a read-only directory is left as it is (listing and loading still find the
 * committed versions there).
 */
export function recoverCheckpoints(weightsDir: string): void {
  for (const name of leftoverTargets(weightsDir)) {
    if (!EPOCH_DIR.test(name)) continue;
    try {
      recoverDirectory(join(weightsDir, name), STATE_FILE);
    } catch {
      // read-only or raced by another process: findDirectory still finds the committed version
    }
  }
}

/**
 * Complete checkpoints under `weightsDir`, ascending by epoch. Leftovers of killed writers are
 * recovered first (see `recoverCheckpoints`); a committed checkpoint that could not be moved
 * back into place is listed where it lies.
 */
export function listCheckpoints(weightsDir: string): CheckpointEntry[] {
  if (!existsSync(weightsDir)) return [];
  recoverCheckpoints(weightsDir);
  const names = new Set<string>([...readdirSync(weightsDir).filter((n) => EPOCH_DIR.test(n)), ...leftoverTargets(weightsDir).filter((n) => EPOCH_DIR.test(n))]);
  const out: CheckpointEntry[] = [];
  for (const name of names) {
    const path = findDirectory(join(weightsDir, name), STATE_FILE);
    if (path && statSync(path).isDirectory() && existsSync(join(path, WEIGHTS_FILE))) out.push({ epoch: Number(EPOCH_DIR.exec(name)![1]), path });
  }
  return out.sort((a, b) => a.epoch - b.epoch);
}

/** The highest-epoch checkpoint under `weightsDir`, or undefined when there is none. */
export function latestCheckpoint(weightsDir: string): CheckpointEntry | undefined {
  const all = listCheckpoints(weightsDir);
  return all[all.length - 1];
}

export interface SaveCheckpointOptions extends DirectoryWriteOptions {
  /** A mean image (.npy bytes) stored as `mean.npy` in the same atomic step. */
  meanNpy?: Uint8Array;
}

/** The first bytes of a safetensors file's JSON header, for recognising a file without reading its tensors. */
function safetensorsFormat(path: string): unknown {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const head = Buffer.alloc(8);
    if (readSync(fd, head, 0, 8, 0) !== 8) return undefined;
    const length = Number(head.readBigUInt64LE(0));
    if (!(length > 0 && length <= 1 << 20)) return undefined;
    const header = Buffer.alloc(length);
    readSync(fd, header, 0, length, 8);
    const parsed = JSON.parse(header.toString('utf8')) as { __metadata__?: { format?: unknown } };
    return parsed.__metadata__?.format;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * May `path` be replaced by a checkpoint? Yes when nothing is there, or when it is a directory
 * this project wrote: only checkpoint files in it (CHECKPOINT_FILES), and a state.json or
 * weights.safetensors that says so (an empty directory is fine too: nothing is lost). Anything
 * else (a symlink, a file, a weights_dir with its logs, a folder of notes) is an InputError
 * naming what is there, so that `--force` and a trainer never delete what they did not write.
 */
export function checkReplaceableCheckpoint(path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return; // nothing there
  }
  const refuse = (why: string): never => {
    throw new InputError(`${path}: ${why}; only a checkpoint directory written by alexnet-stream is replaced: move it away or choose another path`, {
      code: 'ERR_CHECKPOINT',
    });
  };
  if (st.isSymbolicLink()) refuse('a symbolic link');
  if (!st.isDirectory()) refuse('not a directory');
  const names = readdirSync(path);
  const foreign = names.filter((n) => !CHECKPOINT_FILES.includes(n));
  if (foreign.length) {
    refuse(
      `holds ${foreign.length === 1 ? 'a file' : 'files'} a checkpoint does not (${foreign.slice(0, 5).join(', ')}${foreign.length > 5 ? `, … ${foreign.length - 5} more` : ''})`,
    );
  }
  if (names.length === 0) return;
  let format: unknown;
  if (names.includes(STATE_FILE)) {
    try {
      format = (JSON.parse(readUserFileSync(join(path, STATE_FILE), 'checkpoint state', MAX_STATE_FILE_BYTES).toString('utf8')) as { format?: unknown }).format;
    } catch {
      format = undefined;
    }
  } else if (names.includes(WEIGHTS_FILE)) {
    format = safetensorsFormat(join(path, WEIGHTS_FILE));
  }
  if (format !== CHECKPOINT_FORMAT)
    refuse(`not recognised as a checkpoint (its ${names.includes(STATE_FILE) ? STATE_FILE : WEIGHTS_FILE} does not say format ${CHECKPOINT_FORMAT})`);
}

/**
 * Write a checkpoint directory atomically and return its path. An existing `dir` is replaced in
 * one step (atomic-dir.ts), and only if it is a checkpoint of ours (`checkReplaceableCheckpoint`).
 * Throws an InputError when the weights or momentum do not match the spec or the target may not
 * be replaced; a RangeError when `state` uses the reserved keys; IO errors (disk full) after
 * removing its temp dir, with every earlier checkpoint untouched.
 */
export function saveCheckpoint(dir: string, ckpt: Checkpoint, options: SaveCheckpointOptions = {}): string {
  const target = resolve(dir);
  for (const key of ['format', 'spec', INPUT_SCALE_KEY]) {
    if (Object.hasOwn(ckpt.state, key)) throw new RangeError(`saveCheckpoint: state.${key} is reserved (the checkpoint writes it)`);
  }
  validateWeights(ckpt.spec, ckpt.weights, `${target} (weights to save)`);
  if (ckpt.momentum) validateWeights(ckpt.spec, ckpt.momentum, `${target} (momentum to save)`);
  const inputScale = ckpt.inputScale ? checkInputScale(ckpt.inputScale, ckpt.spec, `${target} (input scale to save)`) : undefined;
  const stateText = `${JSON.stringify({ format: CHECKPOINT_FORMAT, spec: ckpt.spec, ...(inputScale ? { [INPUT_SCALE_KEY]: inputScale } : {}), ...ckpt.state }, null, 2)}\n`;
  // A killed earlier write of this directory is finished (or undone) first, so that what is
  // replaced below is the committed version.
  recoverDirectory(target, STATE_FILE);
  checkReplaceableCheckpoint(target);
  const files: DirectoryFile[] = [{ name: WEIGHTS_FILE, data: encodeWeights(ckpt.spec, ckpt.weights, 'weights', inputScale) }];
  if (ckpt.momentum) files.push({ name: MOMENTUM_FILE, data: encodeWeights(ckpt.spec, ckpt.momentum, 'momentum', inputScale) });
  if (options.meanNpy) files.push({ name: MEAN_FILE, data: options.meanNpy });
  // state.json last: the marker whose presence means the rest is whole.
  files.push({ name: STATE_FILE, data: stateText });
  try {
    return writeDirectoryAtomic(target, files, options);
  } catch (err) {
    // A full disk, a read-only or vanished folder: one line naming the checkpoint, exit 2 (a raw
    // "ENOSPC: no space left on device, write" was exit 1). writeDirectoryAtomic has put back
    // what was there before.
    if (typeof (err as NodeJS.ErrnoException)?.code !== 'string' || err instanceof AlexnetStreamError) throw err;
    throw new OutputError(
      `${target}: cannot write the checkpoint: ${describeWriteError(err)}; ${existsSync(target) ? 'the checkpoint there is unchanged' : 'nothing was written'}`,
      { cause: err },
    );
  }
}

/** Equal specs, whatever order their keys were written in (a hand-edited state.json). */
const sameSpec = (a: ModelSpec, b: ModelSpec) => sameJson(a, b);

/**
 * `path`, or where its committed version lies when a killed writer left it elsewhere: recovered
 * into place if this process may, else the hidden directory that holds it (read-only).
 */
function locateCheckpoint(path: string): string {
  if (existsSync(path)) return path;
  // `epoch-0007/weights.safetensors` of a directory that is not in place: locate the directory.
  const parent = dirname(path);
  if (basename(path) === WEIGHTS_FILE && !existsSync(parent)) return join(locateCheckpoint(parent), WEIGHTS_FILE);
  try {
    recoverDirectory(path, STATE_FILE);
  } catch {
    // read-only: look where it lies
  }
  return findDirectory(path, STATE_FILE) ?? path;
}

/**
 * Read a checkpoint: an `epoch-NNNN` directory, or a lone `.safetensors` weights file (its spec
 * from `__metadata__`, else `expectedSpec`). With `expectedSpec`, the weights are validated
 * against it (the layer list may differ in weightless details, e.g. dropout rate); the returned
 * `spec` is the checkpoint's own when it has one. Any problem is an InputError naming the file.
 */
export function loadCheckpoint(dirOrFile: string, expectedSpec?: ModelSpec): LoadedCheckpoint {
  const path = locateCheckpoint(resolve(dirOrFile));
  if (!existsSync(path)) {
    throw new InputError(`${dirOrFile}: no such checkpoint (expected an epoch directory holding ${WEIGHTS_FILE}, or a .safetensors file)`, {
      code: 'ERR_CHECKPOINT',
    });
  }
  const isDir = statSync(path).isDirectory();
  const weightsPath = isDir ? join(path, WEIGHTS_FILE) : path;
  if (isDir && !existsSync(weightsPath)) {
    throw new InputError(`${path}: not a checkpoint directory: no ${WEIGHTS_FILE} in it (has ${readdirSync(path).join(', ') || 'nothing'})`, {
      code: 'ERR_CHECKPOINT',
    });
  }

  let state: Record<string, unknown> = {};
  let stateSpec: ModelSpec | undefined;
  let stateScale: unknown;
  const statePath = join(path, STATE_FILE);
  if (isDir && existsSync(statePath)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readUserFileSync(statePath, 'checkpoint state', MAX_STATE_FILE_BYTES).toString('utf8'));
    } catch (err) {
      if (err instanceof InputError) throw err;
      throw new InputError(`${statePath}: not valid JSON (${(err as Error).message})`, { code: 'ERR_CHECKPOINT', cause: err });
    }
    const {
      format: _format,
      spec,
      [INPUT_SCALE_KEY]: scale,
      ...rest
    } = parseWithSchema(checkpointStateSchema(), parsed, {
      where: statePath,
      errorClass: InputError,
      code: 'ERR_CHECKPOINT',
    });
    stateScale = scale;
    if (spec !== undefined) stateSpec = parseSpec(spec, statePath);
    state = rest;
  }

  const file = readWeightsFile(weightsPath, expectedSpec ?? stateSpec);
  const metaSpec = specFromMetadata(file.metadata, weightsPath);
  if (stateSpec && metaSpec && !sameSpec(stateSpec, metaSpec)) {
    throw new InputError(
      `${path}: ${STATE_FILE} describes ${describeSpec(stateSpec)} but ${WEIGHTS_FILE} was written for ${describeSpec(metaSpec)}: files from different checkpoints?`,
      { code: 'ERR_CHECKPOINT' },
    );
  }
  const ownSpec = stateSpec ?? metaSpec;
  const checkSpec = expectedSpec ?? ownSpec;
  if (!checkSpec) {
    throw new InputError(
      (name) => `${weightsPath}: no model spec in its __metadata__ (not written by alexnet-stream?): name the model, e.g. with ${name('expectedSpec')}`,
      { code: 'ERR_CHECKPOINT' },
    );
  }
  const weights = toWeights(checkSpec, file.tensors, weightsPath);
  const inputScale = inputScaleOf(stateScale, getOwn(file.metadata, INPUT_SCALE_KEY), checkSpec, statePath, weightsPath);

  let momentum: NamedTensors | undefined;
  const momentumPath = join(path, MOMENTUM_FILE);
  if (isDir && existsSync(momentumPath)) {
    momentum = toWeights(checkSpec, readWeightsFile(momentumPath, checkSpec).tensors, momentumPath);
  }
  return { spec: ownSpec ?? checkSpec, weights, ...(momentum ? { momentum } : {}), ...(inputScale ? { inputScale } : {}), state, weightsPath };
}

/**
 * The input scale a checkpoint declares: state.json's `input_scale` and the weights file's
 * `__metadata__.input_scale` (JSON text), checked; when both are there they must agree (a
 * weights file from another run would otherwise be evaluated at the wrong input scale).
 */
function inputScaleOf(fromState: unknown, metaText: string | undefined, spec: ModelSpec, statePath: string, weightsPath: string): number[] | undefined {
  const inState = fromState === undefined || fromState === null ? undefined : checkInputScale(fromState, spec, `${statePath} (${INPUT_SCALE_KEY})`);
  let inMeta: number[] | undefined;
  if (metaText !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(metaText);
    } catch (err) {
      throw new InputError(`${weightsPath}: __metadata__.${INPUT_SCALE_KEY} is not JSON`, { code: 'ERR_CHECKPOINT', cause: err });
    }
    inMeta = checkInputScale(parsed, spec, `${weightsPath} (__metadata__.${INPUT_SCALE_KEY})`);
  }
  if (inState && inMeta && inState.some((v, i) => v !== inMeta![i])) {
    throw new InputError(
      `${statePath} says input_scale [${inState.join(', ')}] but ${weightsPath} was written with [${inMeta.join(', ')}]: files from different checkpoints?`,
      { code: 'ERR_CHECKPOINT' },
    );
  }
  if (!inState && inMeta && existsSync(statePath)) {
    // state.json without the key but weights with it: state.json from elsewhere (or edited).
    throw new InputError(`${statePath} has no input_scale but ${weightsPath} was written with [${inMeta.join(', ')}]: files from different checkpoints?`, {
      code: 'ERR_CHECKPOINT',
    });
  }
  return inState ?? inMeta;
}
