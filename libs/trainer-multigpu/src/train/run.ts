/**
 * `runTraining(config, options)`: everything between a validated config and the training loop.
 * Checks the data against the config before anything is trained (run-data.ts), finds the
 * starting point (start-point.ts: a fresh seeded init, `init` fine-tuning, or `resume` from a
 * checkpoint), creates the engine and the loader, writes checkpoints and the files beside them,
 * and cleans up whatever happens. One trainer writes a weights_dir at a time (`TRAIN_LOCK_FILE`).
 */
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  acquireLock,
  AlexnetStreamError,
  check,
  checkOptional,
  describeWriteError,
  InputError,
  makeDirectorySync,
  type MessageRender,
  type NamedTensors,
  OutputError,
  type ParameterNamer,
  UsageError,
} from '@alexnet-stream/core';
import { checkpointDirName, inputScaleProblem, type ModelSpec, saveCheckpoint, type SaveCheckpointOptions } from '@alexnet-stream/model-alexnet';
import type { TrainingEngine } from '../engine';
import { createEngine, type CreateEngineOptions, type EngineKind } from '../engines';
import type { TrainConfig } from './config';
import { appendTrainLog, truncateTrainLog, writeValRecord } from './files';
import { type BatchLoader, createLoader, StdinBatchStream } from './loader';
import { checkData, checkInputSize, type DataInfo, loaderSetupFor, optimizerFromConfig, specFromConfig } from './run-data';
import { scheduleNeedsEpochLength } from './lr-policy';
import { checkpointEpoch, type DataFingerprint, type SavedTrainState, type StartPoint, startPoint } from './start-point';
import { runTrainingLoop, type TrainEvent, type TrainSource, type TrainState, type TrainSummary, type ValSource } from './trainer';
import { SingleProcessGroup, type WorkerGroup } from './worker-group';

export { checkData, optimizerFromConfig, specFromConfig } from './run-data';
export { checkpointEpoch, initFromPretrained, type SavedTrainState } from './start-point';

export interface RunTrainingOptions {
  /** Stop when the global iteration count reaches this (a checkpoint of that state is written). */
  maxIters?: number;
  /** Resume: true = the latest checkpoint, a number = that epoch's; default: config.resume_train / load_epoch. */
  resume?: boolean | number;
  /** Start from these pretrained weights (checkpoint dir or .safetensors); fc8 of another class count is re-initialised. */
  init?: string;
  /**
   * A learning rate given explicitly for this run (the CLI's --lr / --set learning_rate). A fresh
   * run starts at it; a resumed run replaces the checkpoint's lr with it from its first step on
   * (with a notice), as does a config learning_rate that differs from the one the checkpoint's
   * run was configured with. Without either, --resume continues at the checkpoint's lr (the
   * schedule's, as the seed does).
   */
  learningRate?: number;
  /** Called before each step of a checkpoint write (tests stop a writer there: atomic-dir.ts). */
  onCheckpointStep?: SaveCheckpointOptions['beforeStep'];
  /** Train on float32 batch records from this decoded record stream instead of data_dir's train set. */
  stdinRecords?: Readable;
  /** The worker group (default: a single process). The caller closes a group it passes. */
  group?: WorkerGroup;
  onEvent?(event: TrainEvent): void;
  /** Notices (one line each, for stderr). */
  onNotice?(message: string): void;
  /** How notices name this API's parameters and config keys (the CLI: its flags); default: as they are named here. */
  nameParameter?: ParameterNamer;
  /** Replace the engine factory (tests). */
  createEngine?(name: EngineKind, spec: ModelSpec, weights: NamedTensors, options: CreateEngineOptions): Promise<TrainingEngine>;
  /** Called after every step (tests). */
  afterStep?: Parameters<typeof runTrainingLoop>[0]['afterStep'];
}

export interface RunTrainingResult extends TrainSummary {
  spec: ModelSpec;
  weightsDir: string;
}

/** The lock file in weights_dir that the writing trainer (rank 0) holds for its whole run. */
export const TRAIN_LOCK_FILE = 'train.lock';

/**
 * Train. One trainer writes a weights_dir at a time: a second one (started by mistake, or a
 * resume of a run still going) would interleave its checkpoints with the first's, truncate the
 * first's train_log.jsonl to its own start and rewrite its val_record.json. Rank 0, the only
 * writer, holds `<weights_dir>/train.lock` (core's lock: broken at once when its process is
 * gone, e.g. after a kill -9) for the whole run; other ranks write nothing there.
 */
export async function runTraining(config: TrainConfig, options: RunTrainingOptions = {}): Promise<RunTrainingResult> {
  const usingStdin = options.stdinRecords !== undefined;
  const resume = options.resume ?? (config.resume_train ? (config.load_epoch ?? true) : false);
  checkRunOptions(options, resume);
  checkSchedule(config, usingStdin);

  // The data, checked against the config before anything else (before weights_dir is made).
  const data = await checkData(config, !usingStdin);
  const spec = await specFromConfig(config, data.numClasses);
  checkInputSize(config, data, spec);
  if (config.input_scale !== null) {
    const problem = inputScaleProblem(spec);
    if (problem) throw new UsageError(`input_scale: ${problem}; train this model without input_scale`);
  }
  if ((options.group?.rank ?? 0) !== 0) return trainLocked(config, options, resume, data, spec);
  const lock = await lockWeightsDir(config.weights_dir);
  try {
    return await trainLocked(config, options, resume, data, spec);
  } finally {
    await lock.release();
  }
}

/** Take `<weights_dir>/train.lock` (making weights_dir first): a second trainer of the same weights_dir is refused. */
async function lockWeightsDir(weightsDir: string): Promise<{ release(): Promise<void> }> {
  makeDirectorySync(weightsDir, 'weights_dir');
  const path = join(weightsDir, TRAIN_LOCK_FILE);
  return acquireLock(path, {
    purpose: `training into ${weightsDir}`,
    advice: (name) => `another train is writing this ${name('weights_dir')}; wait for it to finish, stop it, or use another ${name('weights_dir')}`,
  }).catch((err: unknown) => {
    if (err instanceof AlexnetStreamError) throw err;
    throw new OutputError(`${weightsDir}: cannot take the lock ${TRAIN_LOCK_FILE}: ${describeWriteError(err)}`, { cause: err });
  });
}

/** The run, under the weights_dir lock (rank 0) or beside rank 0's (the other ranks). */
async function trainLocked(
  config: TrainConfig,
  options: RunTrainingOptions,
  resume: boolean | number,
  data: DataInfo,
  spec: ModelSpec,
): Promise<RunTrainingResult> {
  const nameParameter = options.nameParameter ?? ((p: string) => p);
  const notice = (m: string | MessageRender) => options.onNotice?.(typeof m === 'string' ? m : m(nameParameter));
  const group = options.group ?? new SingleProcessGroup();
  const usingStdin = options.stdinRecords !== undefined;
  if (!data.val) notice(`no "${config.val_prefix}" shard set in ${config.data_dir ?? '(no data_dir)'}: epochs are not validated`);
  const fingerprint = fingerprintOf(config, data, group);
  const start = await startPoint(config, spec, fingerprint, data, { resume, init: options.init, learningRate: options.learningRate, rank: group.rank, notice });

  const engine = await (options.createEngine ?? createEngine)(config.engine, spec, start.weights, engineOptions(config));
  let loader: BatchLoader | undefined;
  try {
    restoreEngineState(engine, start);
    const setup = loaderSetupFor(config, data, spec, group, start.inputScale);
    loader = setup ? createLoader(setup, config.para_load) : undefined;
    const train = usingStdin ? stdinSource(options.stdinRecords!, spec, config, start.inputScale) : dataDirSource(loader!, config, data, group, start);
    if (!usingStdin) fingerprint.iterationsPerEpoch = train.iterationsPerEpoch;
    const val = valSource(loader, config, data);
    if (group.rank === 0) {
      // The files beside the checkpoints describe the run from its (resumed) start point on.
      await writeValRecord(config.weights_dir, start.state.valRecord);
      await truncateTrainLog(config.weights_dir, start.state.iteration);
    }
    const summary = await runTrainingLoop({
      config: usingStdin ? { ...config, n_epochs: Math.max(config.n_epochs, 1) } : config,
      spec,
      engine,
      group,
      train,
      val,
      state: start.state,
      maxIters: options.maxIters,
      resumedFrom: start.resumedFrom,
      writeCheckpoint: checkpointWriter(config, spec, engine, fingerprint, start.inputScale, options.onCheckpointStep),
      appendLog: (entry) => appendTrainLog(config.weights_dir, entry),
      recordValidation: (record) => writeValRecord(config.weights_dir, record),
      onEvent: options.onEvent,
      afterStep: options.afterStep,
    });
    return { ...summary, spec, weightsDir: config.weights_dir };
  } finally {
    await loader?.close();
    await engine.dispose();
    if (!options.group) await group.close();
  }
}

/** The options that exclude each other, and the bounds of the rest. */
function checkRunOptions(options: RunTrainingOptions, resume: boolean | number): void {
  checkOptional.integer('maxIters', options.maxIters, { min: 0 });
  if (typeof resume === 'number') check.integer('resume', resume, { min: 0 });
  if (options.stdinRecords !== undefined && resume !== false) {
    throw new UsageError(
      (name) =>
        `${name('resume')} cannot continue a ${name('stdinRecords')} run (a stream cannot be rewound to the saved position); train from the data dir instead`,
    );
  }
  if (options.init && resume !== false) {
    throw new UsageError(
      (name) =>
        `${name('init')} and ${name('resume')} exclude each other: ${name('resume')} continues a run, ${name('init')} starts a new one from pretrained weights`,
    );
  }
}

/** A per-iteration schedule (warm-up, cosine, poly) needs the epoch length, which a stream of unknown length has not. */
function checkSchedule(config: TrainConfig, usingStdin: boolean): void {
  if (!usingStdin || !scheduleNeedsEpochLength(config)) return;
  const warmup = config.lr_warmup_epochs > 0 ? ` with lr_warmup_epochs ${config.lr_warmup_epochs}` : '';
  throw new UsageError(
    (name) =>
      `lr_policy ${config.lr_policy}${warmup} needs the epoch length, which a stream (${name('stdinRecords')}) does not have: ` +
      'train from the data dir, or use lr_policy step without warm-up',
  );
}

/** What a resume must find unchanged to continue at a position inside an epoch (saved with each checkpoint). */
function fingerprintOf(config: TrainConfig, data: DataInfo, group: WorkerGroup): DataFingerprint {
  return {
    trainImages: data.train?.images ?? null,
    valImages: data.val?.images ?? null,
    batchSize: config.batch_size,
    worldSize: group.worldSize,
    iterationsPerEpoch: null,
    shuffle: config.shuffle,
    seed: config.seed,
  };
}

function engineOptions(config: TrainConfig): CreateEngineOptions {
  return {
    optimizer: optimizerFromConfig(config),
    loss: { labelSmoothing: config.label_smoothing },
    batchSize: config.batch_size,
    seed: config.seed,
    devices: config.devices,
    intraOpThreads: config.intra_op_threads > 0 ? config.intra_op_threads : undefined,
    stepsPerRun: config.steps_per_run,
  };
}

/** A resumed run's momentum and dropout stream, into the engine. */
function restoreEngineState(engine: TrainingEngine, start: StartPoint): void {
  if (start.momentum) engine.setVelocities(start.momentum);
  if (start.dropoutRng === undefined) return;
  try {
    engine.setRngState(start.dropoutRng);
  } catch (err) {
    throw new InputError(`${join(start.resumedFrom!, 'state.json')}: rng.dropout is not a dropout RNG state`, { code: 'ERR_CHECKPOINT', cause: err });
  }
}

/** Batches from a decoded record stream (train --stdin): one epoch, as long as the stream. */
function stdinSource(records: Readable, spec: ModelSpec, config: TrainConfig, inputScale: number[] | undefined): TrainSource {
  const stream = new StdinBatchStream(records, spec.inputSize, spec.numClasses, config.batch_size, inputScale);
  return { iterationsPerEpoch: Infinity, open: () => stream };
}

/** This worker's share of the train set's batches, epoch by epoch. */
function dataDirSource(loader: BatchLoader, config: TrainConfig, data: DataInfo, group: WorkerGroup, start: StartPoint): TrainSource {
  const iterationsPerEpoch = loader.passIterations({ prefix: config.train_prefix, epoch: 1, train: true });
  if (start.resumedFrom && start.state.iterationInEpoch >= iterationsPerEpoch) {
    // (data that changed since is refused by startPoint when the run stopped inside an epoch)
    throw new InputError(
      `${join(start.resumedFrom, 'state.json')}: it stopped after iteration ${start.state.iterationInEpoch} of epoch ${start.state.epochsCompleted + 1}, ` +
        `but an epoch of this data has ${iterationsPerEpoch} iterations`,
      { code: 'ERR_CHECKPOINT' },
    );
  }
  if (iterationsPerEpoch === 0) {
    const workers = group.worldSize > 1 ? ` x ${group.worldSize} workers` : '';
    throw new UsageError(`batch_size ${config.batch_size}${workers} is larger than the ${data.train!.images} training images: lower batch_size`);
  }
  return { iterationsPerEpoch, open: (epoch, startIteration) => loader.open({ prefix: config.train_prefix, epoch, startIteration, train: true }) };
}

function valSource(loader: BatchLoader | undefined, config: TrainConfig, data: DataInfo): ValSource | undefined {
  if (!data.val || !loader) return undefined;
  return { open: (epoch) => loader.open({ prefix: config.val_prefix, epoch, startIteration: 0, train: false }) };
}

/** Writes the checkpoint of a loop state (with what an exact resume needs), then val_record beside it. */
function checkpointWriter(
  config: TrainConfig,
  spec: ModelSpec,
  engine: TrainingEngine,
  fingerprint: DataFingerprint,
  inputScale: number[] | undefined,
  beforeStep: SaveCheckpointOptions['beforeStep'],
): (s: TrainState) => Promise<string> {
  return async (s) => {
    const epoch = checkpointEpoch(s);
    const saved: SavedTrainState = {
      epoch,
      epochsCompleted: s.epochsCompleted,
      iterationInEpoch: s.iterationInEpoch,
      iteration: s.iteration,
      lr: s.lr,
      lastLrChangeEpoch: s.lastLrChangeEpoch,
      val_record: s.valRecord,
      config,
      rng: {
        dropout: engine.getRngState(),
        // The loader has no running state: batch j of epoch e is a pure function of (seed, e, j).
        loader: { seed: config.seed, epoch: s.epochsCompleted + 1, position: s.iterationInEpoch, scheme: 'deriveSeed(seed, epoch, k)' },
      },
      data: fingerprint,
      engine: engine.name,
      savedAt: new Date().toISOString(),
    };
    const tensors = {
      spec,
      weights: engine.getWeights(),
      ...(config.use_momentum ? { momentum: engine.getVelocities() } : {}),
      ...(inputScale ? { inputScale } : {}),
      state: saved,
    };
    const path = saveCheckpoint(join(config.weights_dir, checkpointDirName(epoch)), tensors, { beforeStep });
    await writeValRecord(config.weights_dir, s.valRecord);
    return path;
  };
}
