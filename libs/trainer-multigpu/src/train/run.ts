/**
 * `runTraining(config, options)`: everything between a validated config and the training loop.
 * Checks the data against the config before anything is trained (image size, class count, mean),
 * builds the spec, finds the starting point (fresh seeded init, `--init` fine-tuning, or
 * `--resume` from a checkpoint), creates the engine and the loader, writes checkpoints and the
 * files beside them, and cleans up whatever happens.
 */
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { describeReadError, InputError, type MessageRender, type NamedTensors, type ParameterNamer, sameJson, UsageError } from '@alexnet-stream/core';
import {
  alexnetSpec,
  checkDataClasses,
  checkpointDirName,
  describeSpec,
  initParameters,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  ModelSpec,
  parameterList,
  MOMENTUM_FILE,
  parseSpec,
  saveCheckpoint,
  SaveCheckpointOptions,
  specProblem,
} from '@alexnet-stream/model-alexnet';
import { readMeanNpy, readShardIndex, ShardSetEntry, shardSet } from '@alexnet-stream/stream-io';
import type { OptimizerConfig, TrainingEngine } from '../engine';
import { createEngine, CreateEngineOptions, EngineKind } from '../engines';
import type { TrainConfig } from './config';
import { appendTrainLog, checkValRecord, truncateTrainLog, writeValRecord } from './files';
import { BatchLoader, createLoader, StdinBatchStream } from './loader';
import type { LoaderSetup } from './loader-core';
import { initialState, runTrainingLoop, TrainEvent, TrainSource, TrainState, TrainSummary, ValSource } from './trainer';
import { SingleProcessGroup, WorkerGroup } from './worker-group';

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

/** The saved form of the loop state plus what an exact resume must compare. */
export interface SavedTrainState extends Record<string, unknown> {
  epoch: number;
  epochsCompleted: number;
  iterationInEpoch: number;
  iteration: number;
  lr: number;
  lastLrChangeEpoch: number;
  val_record: TrainState['valRecord'];
  config: TrainConfig;
  rng: { dropout: unknown; loader: { seed: number; epoch: number; position: number; scheme: string } };
  data: DataFingerprint;
  engine: string;
  savedAt: string;
}

interface DataFingerprint {
  trainImages: number | null;
  valImages: number | null;
  batchSize: number;
  worldSize: number;
  iterationsPerEpoch: number | null;
  shuffle: boolean;
  seed: number;
}

/** The directory a state is saved in: `epoch-N` for a finished epoch N, and for a position inside epoch N. */
export function checkpointEpoch(state: Pick<TrainState, 'epochsCompleted' | 'iterationInEpoch'>): number {
  return state.iterationInEpoch > 0 ? state.epochsCompleted + 1 : state.epochsCompleted;
}

export function optimizerFromConfig(config: TrainConfig): OptimizerConfig {
  return {
    useMomentum: config.use_momentum,
    nesterov: config.use_nesterov_momentum,
    momentum: config.momentum,
    weightDecay: config.weight_decay,
    biasLrMultiplier: config.bias_lr_multiplier,
  };
}

/** The model: `spec_file` when given (its class count checked against the data), else the preset. */
export async function specFromConfig(config: TrainConfig, numClasses: number): Promise<ModelSpec> {
  if (config.spec_file !== null) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(config.spec_file, 'utf8'));
    } catch (err) {
      throw new UsageError(`${config.spec_file}: cannot read the model spec (spec_file): ${describeReadError(err)}`, { cause: err });
    }
    const spec = parseSpec(parsed, config.spec_file);
    if (spec.numClasses !== numClasses) {
      throw new InputError(`${config.spec_file}: the model has ${spec.numClasses} classes but the data has ${numClasses}`);
    }
    return spec;
  }
  let spec: ModelSpec;
  try {
    spec = alexnetSpec(config.preset, {
      numClasses,
      ...(config.input_size !== null ? { inputSize: config.input_size } : {}),
      dropout: config.dropout,
      lrn: config.lrn,
      init: config.init,
    });
  } catch (err) {
    throw new UsageError('the model does not fit the config', { cause: err });
  }
  // The limits every spec read back must meet (spec-check.ts): never train a model whose
  // checkpoints could not be loaded.
  const problem = specProblem(spec);
  if (problem) throw new UsageError(`the model does not fit the config: ${problem}`);
  return spec;
}

interface DataInfo {
  train?: ShardSetEntry;
  val?: ShardSetEntry;
  numClasses: number;
  imageSize?: [number, number];
}

/** Read the data dir's index and check it (and the mean) against the config: before training starts. */
export async function checkData(config: TrainConfig, needTrain: boolean): Promise<DataInfo> {
  if (config.data_dir === null) {
    if (needTrain) {
      throw new UsageError((name) => `no data: set ${name('data_dir')} (a shard directory from \`alexnet-stream prepare\`), or ${name('stdinRecords')}`);
    }
    if (config.num_classes === null) throw new UsageError((name) => `with ${name('stdinRecords')} and no data_dir, num_classes must be set in the config`);
    return { numClasses: config.num_classes };
  }
  const dir = config.data_dir;
  if (!existsSync(dir)) {
    throw new InputError(`${dir}: no such data directory (data_dir); create one with \`alexnet-stream prepare\` (or \`npm run demo\` for the demo data set)`);
  }
  const index = await readShardIndex(dir);
  // Own keys only: a prefix named `constructor` or `__proto__` is a missing set, not Object's.
  const setOf = (prefix: string): ShardSetEntry | undefined => (Object.hasOwn(index.prefixes, prefix) ? index.prefixes[prefix] : undefined);
  const train = needTrain ? shardSet(index, config.train_prefix, dir) : setOf(config.train_prefix);
  const val = setOf(config.val_prefix);
  const reference = train ?? val;
  if (!reference) throw new InputError(`${join(dir, 'index.json')}: no "${config.train_prefix}" or "${config.val_prefix}" shard set`);
  const [channels, height, width] = reference.imageShape;
  const where = `${join(dir, 'index.json')}`;
  if (channels !== 3) throw new InputError(`${where}: images have ${channels} channels, AlexNet takes 3 (RGB)`);
  if (config.image_size !== null && (height !== config.image_size || width !== config.image_size)) {
    throw new InputError(`${where}: the data holds ${height}x${width} images but the config says image_size ${config.image_size}; use data of that size or change image_size`);
  }
  if (val && train && (val.imageShape[1] !== height || val.imageShape[2] !== width)) {
    throw new InputError(`${where}: "${config.val_prefix}" images are ${val.imageShape[1]}x${val.imageShape[2]} but "${config.train_prefix}" images are ${height}x${width}`);
  }
  const dataClasses = Math.max(train?.labelCount ?? 0, val?.labelCount ?? 0);
  const numClasses = config.num_classes ?? dataClasses;
  // The same rule validate applies (model-alexnet data-fit.ts).
  const sets = [
    ...(train ? [{ name: `"${config.train_prefix}" set`, labelCount: train.labelCount, classNames: train.classNames }] : []),
    ...(val ? [{ name: `"${config.val_prefix}" set`, labelCount: val.labelCount, classNames: val.classNames }] : []),
  ];
  checkDataClasses(sets, numClasses, where, config.num_classes !== null ? `the config (num_classes ${config.num_classes})` : 'the model');
  const meanFile = config.mean_file ?? join(dir, 'mean.npy');
  const mean = await readMeanNpy(meanFile);
  if (mean.channels !== channels || mean.height !== height || mean.width !== width) {
    throw new InputError(`${meanFile}: the mean image is ${mean.channels}x${mean.height}x${mean.width} but the data's images are ${channels}x${height}x${width}; use the mean of this data (mean_file)`);
  }
  return { train, val, numClasses, imageSize: [height, width] };
}

/** Weights from a pretrained checkpoint for `spec`; layers whose shape differs only in the class count (fc8) are re-initialised. */
export function initFromPretrained(spec: ModelSpec, path: string, seed: number, notice: (m: MessageRender) => void): NamedTensors {
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
    notice((name) => `${name('init')}: ${lastLayer} re-initialised for ${spec.numClasses} classes (the pretrained model has ${loaded.spec.numClasses}); every other layer is pretrained`);
  }
  return fresh;
}

function restoreState(saved: Record<string, unknown>, path: string): TrainState {
  const num = (key: string): number => {
    const v = Object.hasOwn(saved, key) ? saved[key] : undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new InputError(`${path}: state.json lacks "${key}" (not written by alexnet-stream train?)`);
    return v;
  };
  const count = (key: string): number => {
    const v = num(key);
    if (!Number.isSafeInteger(v) || v < 0) throw new InputError(`${path}: "${key}" is ${v}, expected a count (an integer >= 0)`);
    return v;
  };
  const lr = num('lr');
  if (!(lr > 0)) throw new InputError(`${path}: "lr" is ${lr}, expected a learning rate > 0`);
  const record = Object.hasOwn(saved, 'val_record') ? saved.val_record : [];
  return {
    epochsCompleted: count('epochsCompleted'),
    iterationInEpoch: count('iterationInEpoch'),
    iteration: count('iteration'),
    lr,
    lastLrChangeEpoch: count('lastLrChangeEpoch'),
    valRecord: Array.isArray(record) ? checkValRecord(record, `${path} (val_record)`) : [],
  };
}

/** A field of a JSON object read back from disk, without the prototype chain. */
function own(value: unknown, key: string): unknown {
  return typeof value === 'object' && value !== null && Object.hasOwn(value, key) ? (value as Record<string, unknown>)[key] : undefined;
}

const sleepMs = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runTraining(config: TrainConfig, options: RunTrainingOptions = {}): Promise<RunTrainingResult> {
  const nameParameter = options.nameParameter ?? ((p: string) => p);
  const notice = (m: string | MessageRender) => options.onNotice?.(typeof m === 'string' ? m : m(nameParameter));
  const group = options.group ?? new SingleProcessGroup();
  const ownGroup = !options.group;
  const usingStdin = options.stdinRecords !== undefined;
  const resume = options.resume ?? (config.resume_train ? (config.load_epoch ?? true) : false);
  if (usingStdin && resume !== false) {
    throw new UsageError(
      (name) => `${name('resume')} cannot continue a ${name('stdinRecords')} run (a stream cannot be rewound to the saved position); train from the data dir instead`,
    );
  }
  if (options.init && resume !== false) {
    throw new UsageError(
      (name) => `${name('init')} and ${name('resume')} exclude each other: ${name('resume')} continues a run, ${name('init')} starts a new one from pretrained weights`,
    );
  }
  const weightsDir = config.weights_dir;

  // 1. The data, checked against the config before anything else.
  const data = await checkData(config, !usingStdin);
  const spec = await specFromConfig(config, data.numClasses);
  if (data.imageSize && (spec.inputSize > data.imageSize[0] || spec.inputSize > data.imageSize[1])) {
    throw new InputError(`${config.data_dir}: ${data.imageSize[0]}x${data.imageSize[1]} images are smaller than the network input ${spec.inputSize}; set input_size <= ${Math.min(...data.imageSize)}`);
  }
  const loaderSetup: LoaderSetup | undefined = config.data_dir
    ? {
        dir: config.data_dir,
        meanFile: config.mean_file ?? join(config.data_dir, 'mean.npy'),
        sets: { ...(data.train ? { [config.train_prefix]: data.train } : {}), ...(data.val ? { [config.val_prefix]: data.val } : {}) },
        batchSize: config.batch_size,
        crop: spec.inputSize,
        seed: config.seed,
        shuffle: config.shuffle,
        randCrop: config.rand_crop,
        perBatch: config.batch_crop_mirror,
        rank: group.rank,
        worldSize: group.worldSize,
        verify: config.verify_shards,
        queueDepth: config.queue_depth,
      }
    : undefined;
  if (!data.val) notice(`no "${config.val_prefix}" shard set in ${config.data_dir ?? '(no data_dir)'}: epochs are not validated`);

  const fingerprint: DataFingerprint = {
    trainImages: data.train?.images ?? null,
    valImages: data.val?.images ?? null,
    batchSize: config.batch_size,
    worldSize: group.worldSize,
    iterationsPerEpoch: null,
    shuffle: config.shuffle,
    seed: config.seed,
  };

  // 2. The starting point.
  let weights: NamedTensors;
  let state = initialState(config);
  let momentum: NamedTensors | undefined;
  let dropoutRng: unknown;
  let resumedFrom: string | undefined;
  if (resume !== false) {
    const entry = typeof resume === 'number' ? listCheckpoints(weightsDir).find((c) => c.epoch === resume) : latestCheckpoint(weightsDir);
    if (!entry) {
      const have = listCheckpoints(weightsDir).map((c) => c.epoch);
      throw new UsageError(
        (name) =>
          `${name('resume')}: no checkpoint${typeof resume === 'number' ? ` of epoch ${resume}` : ''} in ${weightsDir}` +
          (have.length ? ` (it has epochs ${have.join(', ')})` : ` (it has none; train without ${name('resume')} first)`),
        { code: 'ERR_NO_CHECKPOINT' },
      );
    }
    const loaded = loadCheckpoint(entry.path);
    if (!sameJson(loaded.spec, spec)) {
      throw new UsageError(
        (name) => `${name('resume')}: ${entry.path} holds ${describeSpec(loaded.spec)} but the config describes ${describeSpec(spec)}; resume with the config the run was started with`,
      );
    }
    // Momentum is part of the optimizer's state, as in torch.optim: resuming without it would
    // silently restart it at zero and make a different run. Refuse, and say what works.
    if (config.use_momentum && !loaded.momentum) {
      throw new UsageError(
        (name) =>
          `${name('resume')}: ${entry.path} has no ${MOMENTUM_FILE} (a run without momentum, an import, or a removed file): resuming with use_momentum: true would restart ` +
          `the momentum at zero and change the run. Restore the file, resume with use_momentum: false, or start a new run from these weights with ${name('init')} ${entry.path} ` +
          '(momentum from zero, learning rate and schedule from the config)',
      );
    }
    weights = loaded.weights;
    momentum = loaded.momentum;
    state = restoreState(loaded.state, join(entry.path, 'state.json'));
    resumedFrom = entry.path;
    const saved = loaded.state;
    dropoutRng = own(own(saved, 'rng'), 'dropout');
    if (dropoutRng === undefined && spec.layers.some((l) => l.kind === 'dropout' && l.rate > 0)) {
      notice((name) => `${name('resume')}: ${entry.path} holds no dropout RNG state: dropout masks start afresh, so the run is no longer exactly the uninterrupted one`);
    }
    const before = own(saved, 'data') as Partial<DataFingerprint> | undefined;
    const changed = before ? (['trainImages', 'batchSize', 'worldSize', 'shuffle', 'seed'] as const).filter((k) => own(before, k) !== fingerprint[k]) : [];
    if (changed.length && state.iterationInEpoch > 0) {
      const changes = changed.map((k) => `${own(before, k)} -> ${fingerprint[k]}`).join(', ');
      throw new UsageError(
        (name) =>
          `${name('resume')}: ${entry.path} stopped inside epoch ${state.epochsCompleted + 1}, and ${changed.join(', ')} changed since (${changes}): ` +
          `the position in the epoch means nothing with other data order; resume from an epoch boundary (${name('resume')} <epoch>) or keep those settings`,
      );
    }
    if (changed.length) notice((name) => `${name('resume')}: ${changed.join(', ')} changed since the checkpoint; training continues, but not exactly as the original run would have`);
    // An explicit learning rate replaces the checkpoint's (the schedule goes on from it): one given
    // for this run, or a config learning_rate that differs from the one the run was configured with.
    const configuredLr = own(own(saved, 'config'), 'learning_rate');
    const configChanged = typeof configuredLr === 'number' && config.learning_rate !== configuredLr;
    const newLr = options.learningRate ?? (configChanged ? config.learning_rate : undefined);
    if (newLr !== undefined && Math.fround(newLr) !== state.lr) {
      const why = options.learningRate !== undefined ? 'given for this run' : `the config's learning_rate; the run was configured with ${configuredLr}`;
      const old = Number(state.lr.toPrecision(6));
      notice((name) => `${name('resume')}: learning rate ${newLr} (${why}) replaces the checkpoint's ${old} from iteration ${state.iteration + 1} on`);
      state.lr = Math.fround(newLr);
      state.lastLrChangeEpoch = state.epochsCompleted;
    }
    notice(`resuming from ${entry.path}: epoch ${state.epochsCompleted}${state.iterationInEpoch ? ` + ${state.iterationInEpoch} iterations` : ''}, iteration ${state.iteration}, lr ${Number(state.lr.toPrecision(6))}`);
  } else {
    const existing = listCheckpoints(weightsDir);
    if (existing.length && group.rank === 0) {
      const epochs = existing.map((c) => `epoch ${c.epoch}`).join(', ');
      throw new UsageError(
        (name) => `${weightsDir} already holds checkpoints (${epochs}): ${name('resume')} to continue that run, or use another ${name('weights_dir')} for a new one`,
        { code: 'ERR_CHECKPOINTS_EXIST' },
      );
    }
    weights = options.init ? initFromPretrained(spec, options.init, config.seed, notice) : initParameters(spec, config.seed);
    if (options.learningRate !== undefined) state.lr = Math.fround(options.learningRate);
  }

  // 3. Engine and loader.
  const factory = options.createEngine ?? createEngine;
  const engine = await factory(config.engine, spec, weights, {
    optimizer: optimizerFromConfig(config),
    batchSize: config.batch_size,
    seed: config.seed,
    devices: config.devices,
    intraOpThreads: config.intra_op_threads > 0 ? config.intra_op_threads : undefined,
    stepsPerRun: config.steps_per_run,
  });
  let loader: BatchLoader | undefined;
  try {
    if (momentum) engine.setVelocities(momentum);
    if (dropoutRng !== undefined) {
      try {
        engine.setRngState(dropoutRng);
      } catch (err) {
        throw new InputError(`${join(resumedFrom!, 'state.json')}: rng.dropout is not a dropout RNG state (${(err as Error).message})`);
      }
    }
    loader = loaderSetup ? createLoader(loaderSetup, config.para_load) : undefined;
    let train: TrainSource;
    if (usingStdin) {
      const stream = new StdinBatchStream(options.stdinRecords!, spec.inputSize, spec.numClasses, config.batch_size);
      train = { iterationsPerEpoch: Infinity, open: () => stream };
    } else {
      const l = loader!;
      const iterationsPerEpoch = l.passIterations({ prefix: config.train_prefix, epoch: 1, train: true });
      if (iterationsPerEpoch === 0) {
        throw new UsageError(`batch_size ${config.batch_size}${group.worldSize > 1 ? ` x ${group.worldSize} workers` : ''} is larger than the ${data.train!.images} training images: lower batch_size`);
      }
      fingerprint.iterationsPerEpoch = iterationsPerEpoch;
      train = { iterationsPerEpoch, open: (epoch, startIteration) => l.open({ prefix: config.train_prefix, epoch, startIteration, train: true }) };
    }
    const val: ValSource | undefined = data.val && loader ? { open: (epoch) => loader!.open({ prefix: config.val_prefix, epoch, startIteration: 0, train: false }) } : undefined;

    if (group.rank === 0) {
      // The files beside the checkpoints describe the run from its (resumed) start point on.
      await writeValRecord(weightsDir, state.valRecord);
      await truncateTrainLog(weightsDir, state.iteration);
    }
    const pauseMs = Number(process.env.ALEXNET_STREAM_TEST_PAUSE_IN_CHECKPOINT_MS ?? 0);

    const writeCheckpoint = async (s: TrainState): Promise<string> => {
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
      // Test hook: widen the window in which a `kill -9` lands inside a checkpoint write.
      if (pauseMs > 0) await sleepMs(pauseMs);
      const path = saveCheckpoint(join(weightsDir, checkpointDirName(epoch)), {
        spec,
        weights: engine.getWeights(),
        ...(config.use_momentum ? { momentum: engine.getVelocities() } : {}),
        state: saved,
      }, { beforeStep: options.onCheckpointStep });
      if (pauseMs > 0) await sleepMs(pauseMs);
      await writeValRecord(weightsDir, s.valRecord);
      return path;
    };

    const summary = await runTrainingLoop({
      config: usingStdin ? { ...config, n_epochs: Math.max(config.n_epochs, 1) } : config,
      spec,
      engine,
      group,
      train,
      val,
      state,
      maxIters: options.maxIters,
      resumedFrom,
      writeCheckpoint,
      appendLog: (entry) => appendTrainLog(weightsDir, entry),
      recordValidation: (record) => writeValRecord(weightsDir, record),
      onEvent: options.onEvent,
      afterStep: options.afterStep,
    });
    return { ...summary, spec, weightsDir };
  } finally {
    await loader?.close();
    await engine.dispose();
    if (ownGroup) await group.close();
  }
}
