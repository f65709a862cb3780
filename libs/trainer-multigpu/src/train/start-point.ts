/**
 * Where a run starts: a fresh seeded init, pretrained weights (`init`, fine-tuning), or a
 * checkpoint (`resume`), with the loop state, momentum and dropout stream it holds. A resume is
 * refused when it could not continue the same run (another spec, no momentum, a position inside
 * an epoch whose data order changed, another input scale); a change that only makes it differ is
 * a notice. The run's input scale (input_scale) is fixed here: computed or taken from the config
 * for a new run, the checkpoint's for a resumed one.
 */
import { join } from 'node:path';
import { InputError, type MessageRender, type NamedTensors, sameJson, UsageError } from '@alexnet-stream/core';
import {
  checkpointDirName,
  type CheckpointEntry,
  describeSpec,
  initParameters,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  type ModelSpec,
  MOMENTUM_FILE,
  parameterList,
  rescaleInputScale,
} from '@alexnet-stream/model-alexnet';
import { readMeanNpy } from '@alexnet-stream/stream-io';
import type { TrainConfig } from './config';
import { computeInputStd, resolveInputScale } from './input-scale';
import type { DataInfo } from './run-data';
import { type DataFingerprint, parseSavedState, type SavedState } from './saved-state';
import { initialState, type TrainState, type ValidationResult } from './trainer';

export { type DataFingerprint, type SavedState, type SavedTrainState, parseSavedState } from './saved-state';

/** The directory a state is saved in: `epoch-N` for a finished epoch N, and for a position inside epoch N. */
export function checkpointEpoch(state: Pick<TrainState, 'epochsCompleted' | 'iterationInEpoch'>): number {
  return state.iterationInEpoch > 0 ? state.epochsCompleted + 1 : state.epochsCompleted;
}

/**
 * Weights from a pretrained checkpoint for `spec`; layers whose shape differs only in the class
 * count (fc8) are re-initialised. Weights trained at another input scale than this run's
 * `inputScale` are rescaled to compute the same function on this run's input (input-scale.ts).
 */
export function initFromPretrained(spec: ModelSpec, path: string, seed: number, notice: (m: MessageRender) => void, inputScale?: number[]): NamedTensors {
  const loaded = loadCheckpoint(path);
  const fresh = initParameters(spec, seed);
  const params = parameterList(spec);
  const lastLayer = params[params.length - 1].layer;
  const reinit: string[] = [];
  const problems: string[] = [];
  for (const p of params) {
    const have = loaded.weights[p.name];
    if (have && have.length === fresh[p.name].length) fresh[p.name] = have;
    else if (p.layer === lastLayer) reinit.push(p.name);
    else problems.push(`${p.name}: ${have ? `${have.length} values` : 'missing'}, the model needs ${fresh[p.name].length}`);
  }
  if (problems.length) {
    throw new InputError(`${path}: the pretrained weights (${describeSpec(loaded.spec)}) do not fit the model (${describeSpec(spec)}): ${problems.join('; ')}`);
  }
  if (reinit.length) {
    notice(
      (name) =>
        `${name('init')}: ${lastLayer} re-initialised for ${spec.numClasses} classes (the pretrained model has ${loaded.spec.numClasses}); every other layer is pretrained`,
    );
  }
  const from = loaded.inputScale,
    to = inputScale;
  if ((from ?? []).join() !== (to ?? []).join()) {
    notice(
      (name) =>
        `${name('init')}: ${path} was trained with input_scale ${scaleText(from)}, this run uses ${scaleText(to)}: its first layer's weights are rescaled to match`,
    );
    return rescaleInputScale(spec, fresh, from, to);
  }
  return fresh;
}

const scaleText = (v: readonly number[] | undefined): string => (v ? `[${v.join(', ')}]` : 'none');

/**
 * The loop's state from a checkpoint's state.json, parsed by `parseSavedState` (each field's
 * type and range). Beyond those: the position must be the one the checkpoint's name says
 * (`epoch-0002` holds epoch 2, or a run stopped inside it), and the iteration count and the last
 * lr change must fit it: an edited `epochsCompleted` of 1e12 made a resume of epoch 2 end at
 * once "done" with exit 0, a val_record of 5 was silently dropped.
 */
export function restoreState(saved: SavedState, path: string, checkpointName: number): TrainState {
  const bad = (message: string) => new InputError(message, { code: 'ERR_CHECKPOINT' });
  const { epochsCompleted, iterationInEpoch, iteration, lr, lastLrChangeEpoch } = saved;
  if (checkpointEpoch({ epochsCompleted, iterationInEpoch }) !== checkpointName) {
    throw bad(
      `${path}: the state is at epoch ${epochsCompleted}${iterationInEpoch ? ` + ${iterationInEpoch} iterations` : ''}, ` +
        `but the checkpoint is ${checkpointDirName(checkpointName)}: its files come from another checkpoint, or were edited`,
    );
  }
  if (iteration < epochsCompleted + iterationInEpoch) {
    throw bad(`${path}: "iteration" ${iteration} is less than the ${epochsCompleted} epochs and ${iterationInEpoch} iterations it completed`);
  }
  if (lastLrChangeEpoch > epochsCompleted) {
    throw bad(`${path}: "lastLrChangeEpoch" ${lastLrChangeEpoch} is after the ${epochsCompleted} epochs completed`);
  }
  // Entries written before `images` and `lr` were recorded lack them (the report shows them as unknown).
  const valRecord = (saved.val_record ?? []) as ValidationResult[];
  return { epochsCompleted, iterationInEpoch, iteration, lr, lastLrChangeEpoch, valRecord };
}

/**
 * The input scale of a resumed run: the checkpoint's, never recomputed (the run stays exact
 * whatever happened to the data since). A config that says otherwise describes another run.
 */
function resumedInputScale(setting: TrainConfig['input_scale'], saved: number[] | undefined, channels: number, path: string): number[] | undefined {
  if (setting === null) {
    if (saved) {
      throw new UsageError(
        (name) =>
          `${name('resume')}: ${path} was trained with input_scale ${scaleText(saved)} but the config has none: resume with input_scale: auto (the checkpoint's factors are used)`,
      );
    }
    return undefined;
  }
  if (!saved) {
    throw new UsageError(
      (name) =>
        `${name('resume')}: ${path} was trained without input_scale but the config sets ${setting === 'auto' ? 'auto' : scaleText(setting)}: ` +
        `resume with input_scale: null, or start a new run from its weights with ${name('init')}`,
    );
  }
  if (setting !== 'auto') {
    const want = setting.length === 1 ? new Array<number>(channels).fill(setting[0]) : setting;
    if (want.length !== saved.length || want.some((v, i) => v !== saved[i])) {
      throw new UsageError(
        (name) =>
          `${name('resume')}: ${path} was trained with input_scale ${scaleText(saved)} but the config says ${scaleText(want)}: ` +
          `resume with the run's factors (or input_scale: auto), or start a new run with ${name('init')}`,
      );
    }
  }
  return saved;
}

/** What a run starts from. */
export interface StartPoint {
  weights: NamedTensors;
  state: TrainState;
  momentum?: NamedTensors;
  /** The engine's dropout stream as the checkpoint saved it (absent: start afresh). */
  dropoutRng?: unknown;
  /** The checkpoint resumed from. */
  resumedFrom?: string;
  /** The per-channel input factor of this run (input_scale), fixed at its start and saved in every checkpoint. */
  inputScale?: number[];
}

export interface StartOptions {
  /** true: the latest checkpoint, a number: that epoch's; false: a new run. */
  resume: boolean | number;
  init?: string;
  learningRate?: number;
  rank: number;
  notice(message: string | MessageRender): void;
}

/** A new run (refused over existing checkpoints) or a resumed one (`resume`). */
export async function startPoint(
  config: TrainConfig,
  spec: ModelSpec,
  fingerprint: DataFingerprint,
  data: DataInfo,
  options: StartOptions,
): Promise<StartPoint> {
  return options.resume === false ? freshStart(config, spec, data, options) : resumeFrom(config, spec, fingerprint, options);
}

async function freshStart(config: TrainConfig, spec: ModelSpec, data: DataInfo, options: StartOptions): Promise<StartPoint> {
  const weightsDir = config.weights_dir;
  const existing = listCheckpoints(weightsDir);
  if (existing.length && options.rank === 0) {
    const epochs = existing.map((c) => `epoch ${c.epoch}`).join(', ');
    throw new UsageError(
      (name) =>
        `${weightsDir} already holds checkpoints (${epochs}): ${name('resume')} to continue that run, or use another ${name('weights_dir')} for a new one`,
      { code: 'ERR_CHECKPOINTS_EXIST' },
    );
  }
  const inputScale = await freshInputScale(config, spec, data, options.notice);
  const weights = options.init ? initFromPretrained(spec, options.init, config.seed, options.notice, inputScale) : initParameters(spec, config.seed);
  const state = initialState(config);
  if (options.learningRate !== undefined) state.lr = Math.fround(options.learningRate);
  return { weights, state, ...(inputScale ? { inputScale } : {}) };
}

/** A new run's input scale: the configured factors, or for `auto` 1/std of data_dir's training pixels (minus the mean). */
async function freshInputScale(config: TrainConfig, spec: ModelSpec, data: DataInfo, notice: StartOptions['notice']): Promise<number[] | undefined> {
  const resolved = await resolveInputScale(config.input_scale, spec.inputChannels, async () => {
    if (!data.train || !config.data_dir) {
      throw new UsageError("input_scale: auto computes the scale from data_dir's training set, and there is none: give input_scale as numbers");
    }
    const mean = await readMeanNpy(config.mean_file ?? join(config.data_dir, 'mean.npy'));
    return computeInputStd({ dir: config.data_dir, set: data.train, mean, verify: config.verify_shards });
  });
  if (resolved.std) {
    const std = resolved.std.map((v) => v.toFixed(2)).join(', ');
    notice(
      `input_scale: auto: std of the mean-subtracted training pixels ${std} per channel -> input scale ${resolved.scale!.map((v) => v.toPrecision(4)).join(', ')}`,
    );
  }
  return resolved.scale;
}

/** The checkpoint to resume: the latest, or that of epoch `resume`; refused naming what there is. */
function checkpointToResume(weightsDir: string, resume: true | number): CheckpointEntry {
  const entry = typeof resume === 'number' ? listCheckpoints(weightsDir).find((c) => c.epoch === resume) : latestCheckpoint(weightsDir);
  if (entry) return entry;
  const have = listCheckpoints(weightsDir).map((c) => c.epoch);
  throw new UsageError(
    (name) =>
      `${name('resume')}: no checkpoint${typeof resume === 'number' ? ` of epoch ${resume}` : ''} in ${weightsDir}` +
      (have.length ? ` (it has epochs ${have.join(', ')})` : ` (it has none; train without ${name('resume')} first)`),
    { code: 'ERR_NO_CHECKPOINT' },
  );
}

function resumeFrom(config: TrainConfig, spec: ModelSpec, fingerprint: DataFingerprint, options: StartOptions): StartPoint {
  const { notice } = options;
  const entry = checkpointToResume(config.weights_dir, options.resume as true | number);
  const path = entry.path;
  const loaded = loadCheckpoint(path);
  if (!sameJson(loaded.spec, spec)) {
    throw new UsageError(
      (name) =>
        `${name('resume')}: ${path} holds ${describeSpec(loaded.spec)} but the config describes ${describeSpec(spec)}; resume with the config the run was started with`,
    );
  }
  // Momentum is part of the optimizer's state, as in torch.optim: resuming without it would
  // silently restart it at zero and make a different run. Refuse, and say what works.
  if (config.use_momentum && !loaded.momentum) {
    throw new UsageError(
      (name) =>
        `${name('resume')}: ${path} has no ${MOMENTUM_FILE} (a run without momentum, an import, or a removed file): resuming with use_momentum: true would restart ` +
        `the momentum at zero and change the run. Restore the file, resume with use_momentum: false, or start a new run from these weights with ${name('init')} ${path} ` +
        '(momentum from zero, learning rate and schedule from the config)',
    );
  }
  const inputScale = resumedInputScale(config.input_scale, loaded.inputScale, spec.inputChannels, path);
  const statePath = join(path, 'state.json');
  const saved = parseSavedState(loaded.state, statePath);
  const state = restoreState(saved, statePath, entry.epoch);
  const dropoutRng = saved.rng?.dropout;
  if (dropoutRng === undefined && spec.layers.some((l) => l.kind === 'dropout' && l.rate > 0)) {
    notice(
      (name) => `${name('resume')}: ${path} holds no dropout RNG state: dropout masks start afresh, so the run is no longer exactly the uninterrupted one`,
    );
  }
  checkDataUnchanged(path, saved, fingerprint, state, notice);
  const savedEpochs = saved.config?.n_epochs;
  if ((config.lr_policy === 'cosine' || config.lr_policy === 'poly') && savedEpochs !== undefined && savedEpochs !== config.n_epochs) {
    notice(
      (name) =>
        `${name('resume')}: n_epochs ${savedEpochs} -> ${config.n_epochs}: lr_policy ${config.lr_policy} now decays over ${config.n_epochs} epochs, ` +
        `from where the schedule stands at iteration ${state.iteration}`,
    );
  }
  applyLearningRate(config, saved, state, options);
  const lr = Number(state.lr.toPrecision(6));
  notice(
    `resuming from ${path}: epoch ${state.epochsCompleted}${state.iterationInEpoch ? ` + ${state.iterationInEpoch} iterations` : ''}, iteration ${state.iteration}, lr ${lr}`,
  );
  return { weights: loaded.weights, momentum: loaded.momentum, state, dropoutRng, resumedFrom: path, ...(inputScale ? { inputScale } : {}) };
}

/** Settings that decide the data order: a change is refused inside an epoch (the position means nothing then), else a notice. */
function checkDataUnchanged(path: string, saved: SavedState, fingerprint: DataFingerprint, state: TrainState, notice: StartOptions['notice']): void {
  const before = saved.data;
  const changed = before ? (['trainImages', 'batchSize', 'worldSize', 'shuffle', 'seed'] as const).filter((k) => before[k] !== fingerprint[k]) : [];
  if (before && changed.length && state.iterationInEpoch > 0) {
    const changes = changed.map((k) => `${before[k]} -> ${fingerprint[k]}`).join(', ');
    const epoch = state.epochsCompleted + 1;
    throw new UsageError(
      (name) =>
        `${name('resume')}: ${path} stopped inside epoch ${epoch}, and ${changed.join(', ')} changed since (${changes}): ` +
        `the position in the epoch means nothing with other data order; resume from an epoch boundary (${name('resume')} <epoch>) or keep those settings`,
    );
  }
  if (changed.length) {
    notice(
      (name) => `${name('resume')}: ${changed.join(', ')} changed since the checkpoint; training continues, but not exactly as the original run would have`,
    );
  }
}

/**
 * An explicit learning rate replaces the checkpoint's (the schedule goes on from it): one given
 * for this run, or a config learning_rate that differs from the one the run was configured with.
 */
function applyLearningRate(config: TrainConfig, saved: SavedState, state: TrainState, options: StartOptions): void {
  const configuredLr = saved.config?.learning_rate;
  const configChanged = configuredLr !== undefined && config.learning_rate !== configuredLr;
  const newLr = options.learningRate ?? (configChanged ? config.learning_rate : undefined);
  if (newLr === undefined || Math.fround(newLr) === state.lr) return;
  const why = options.learningRate !== undefined ? 'given for this run' : `the config's learning_rate; the run was configured with ${configuredLr}`;
  const old = Number(state.lr.toPrecision(6));
  const from = state.iteration + 1;
  options.notice((name) => `${name('resume')}: learning rate ${newLr} (${why}) replaces the checkpoint's ${old} from iteration ${from} on`);
  state.lr = Math.fround(newLr);
  state.lastLrChangeEpoch = state.epochsCompleted;
}
