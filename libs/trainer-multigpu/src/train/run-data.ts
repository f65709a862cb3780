/**
 * What a run trains on, checked against the config before anything is trained: the data dir's
 * index (sets, image size, class count) and mean image, the model spec (`spec_file` or the
 * preset), the optimizer, and the loader's setup.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describeReadError, InputError, readRegularFileAsync, UsageError } from '@alexnet-stream/core';
import { alexnetSpec, checkDataClasses, type ModelSpec, parseSpec, specProblem } from '@alexnet-stream/model-alexnet';
import { readMeanNpy, readShardIndex, type ShardSetEntry, shardSet } from '@alexnet-stream/stream-io';
import type { OptimizerConfig } from '../engine';
import type { TrainConfig } from './config';
import type { LoaderSetup } from './loader-core';
import type { WorkerGroup } from './worker-group';

export function optimizerFromConfig(config: TrainConfig): OptimizerConfig {
  return {
    useMomentum: config.use_momentum,
    nesterov: config.use_nesterov_momentum,
    momentum: config.momentum,
    weightDecay: config.weight_decay,
    biasLrMultiplier: config.bias_lr_multiplier,
  };
}

/** A model spec is a few kB of JSON (a layer list); 16 MiB is far more than any. */
const MAX_SPEC_FILE_BYTES = 16 << 20;

/** The model: `spec_file` when given (its class count checked against the data), else the preset. */
export async function specFromConfig(config: TrainConfig, numClasses: number): Promise<ModelSpec> {
  if (config.spec_file !== null) {
    let parsed: unknown;
    try {
      // A regular file of bounded size: a FIFO or /dev/zero named as spec_file is refused, not read forever.
      const bytes = await readRegularFileAsync(config.spec_file, { maxBytes: MAX_SPEC_FILE_BYTES, limitName: 'the 16 MiB a model spec may take' });
      parsed = JSON.parse(bytes.toString('utf8'));
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

export interface DataInfo {
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
    throw new InputError(
      `${where}: the data holds ${height}x${width} images but the config says image_size ${config.image_size}; use data of that size or change image_size`,
    );
  }
  if (val && train && (val.imageShape[1] !== height || val.imageShape[2] !== width)) {
    throw new InputError(
      `${where}: "${config.val_prefix}" images are ${val.imageShape[1]}x${val.imageShape[2]} but "${config.train_prefix}" images are ${height}x${width}`,
    );
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
    throw new InputError(
      `${meanFile}: the mean image is ${mean.channels}x${mean.height}x${mean.width} but the data's images are ${channels}x${height}x${width}; use the mean of this data (mean_file)`,
    );
  }
  return { train, val, numClasses, imageSize: [height, width] };
}

/** The data must hold images at least as large as the network input (the crop). */
export function checkInputSize(config: TrainConfig, data: DataInfo, spec: ModelSpec): void {
  if (data.imageSize && (spec.inputSize > data.imageSize[0] || spec.inputSize > data.imageSize[1])) {
    throw new InputError(
      `${config.data_dir}: ${data.imageSize[0]}x${data.imageSize[1]} images are smaller than the network input ${spec.inputSize}; set input_size <= ${Math.min(...data.imageSize)}`,
    );
  }
}

/** The loader's setup for this worker (its share of the batches), or undefined without a data dir (stdin). */
export function loaderSetupFor(config: TrainConfig, data: DataInfo, spec: ModelSpec, group: WorkerGroup, inputScale?: number[]): LoaderSetup | undefined {
  if (!config.data_dir) return undefined;
  return {
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
    ...(inputScale ? { inputScale } : {}),
  };
}
