/**
 * The pure part of the training loader (the seed's para_load, DESIGN §6): which images make up
 * training batch k of epoch e, and how to turn them into a float32 batch.
 *
 * Determinism without replay: the batch order of epoch e is a pure function of (seed, epoch),
 * and the crop/mirror draws of batch k are a pure function of (seed, epoch, k). So a loader can
 * start at any position of any epoch (`--resume` after `--max-iters` mid-epoch) and produce the
 * very batches an uninterrupted run would have produced, without reading what came before.
 *
 * Order of an epoch (as the seed, which shuffled its batch files): the shard order is shuffled,
 * and the batches inside each shard too; the images of the resulting sequence of stored
 * batches, in that order, are cut into training batches of `batchSize` (so the training batch
 * size need not equal the stored one). Training drops a last incomplete batch (the seed's
 * `n_train_batches`); validation keeps it, so every validation image counts once.
 *
 * Several workers: training batch k goes to rank k % worldSize; each rank runs
 * floor(batches / worldSize) iterations per epoch, all ranks the same number.
 */
import { type MeanImage, Rng } from '@alexnet-stream/core';
import { type BatchRecord, cropMirrorSubtract, planCrops, readShard, type ShardSetEntry } from '@alexnet-stream/stream-io';
import { applyInputScale } from './input-scale';

/** 32-bit mix of several integers into a seed (splitmix32's finaliser applied per part). */
export function deriveSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const part of parts) {
    h = (h ^ (part >>> 0)) >>> 0;
    h = (h + 0x9e3779b9) >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
    h = (h ^ (h >>> 16)) >>> 0;
  }
  return h;
}

const SHARD_ORDER_STREAM = 1;
const BATCH_ORDER_STREAM = 2;
const CROP_STREAM = 3;

/** One stored batch of a shard set. */
export interface SourceBatch {
  /** Index into `set.shards`. */
  shard: number;
  /** Index of the batch inside its shard file. */
  batch: number;
  images: number;
}

export interface EpochPlanOptions {
  seed: number;
  /** 1-based epoch (ignored without `shuffle`). */
  epoch: number;
  shuffle: boolean;
  batchSize: number;
  /** Training: drop the last incomplete batch. Validation: keep it. */
  dropLast: boolean;
  rank?: number;
  worldSize?: number;
}

export interface EpochPlan {
  sources: SourceBatch[];
  /** Start of each source in the epoch's image sequence (length sources + 1). */
  offsets: number[];
  totalImages: number;
  batchSize: number;
  /** Batches of the whole epoch, over all ranks. */
  globalBatches: number;
  /** Batches this rank handles: index j is global batch j * worldSize + rank. */
  iterations: number;
  rank: number;
  worldSize: number;
}

/** The stored batches of a set in file order, with their image counts (only the last may be partial). */
export function sourceBatches(set: ShardSetEntry): SourceBatch[] {
  const out: SourceBatch[] = [];
  set.shards.forEach((file, shard) => {
    for (let b = 0; b < file.batches; b++) {
      const images = b < file.batches - 1 ? set.batchSize : file.images - (file.batches - 1) * set.batchSize;
      out.push({ shard, batch: b, images });
    }
  });
  return out;
}

export function planEpoch(set: ShardSetEntry, options: EpochPlanOptions): EpochPlan {
  const rank = options.rank ?? 0;
  const worldSize = options.worldSize ?? 1;
  const all = sourceBatches(set);
  let sources = all;
  if (options.shuffle) {
    const shardOrder = new Rng(deriveSeed(options.seed, options.epoch, SHARD_ORDER_STREAM)).shuffle(set.shards.map((_, i) => i));
    const withinRng = new Rng(deriveSeed(options.seed, options.epoch, BATCH_ORDER_STREAM));
    sources = [];
    for (const shard of shardOrder) sources.push(...withinRng.shuffle(all.filter((s) => s.shard === shard)));
  }
  const offsets = [0];
  for (const s of sources) offsets.push(offsets[offsets.length - 1] + s.images);
  const totalImages = offsets[offsets.length - 1];
  const globalBatches = options.dropLast ? Math.floor(totalImages / options.batchSize) : Math.ceil(totalImages / options.batchSize);
  const iterations = options.dropLast ? Math.floor(globalBatches / worldSize) : Math.max(0, Math.ceil((globalBatches - rank) / worldSize));
  return { sources, offsets, totalImages, batchSize: options.batchSize, globalBatches, iterations, rank, worldSize };
}

export interface AugmentOptions {
  /** Crop side (network input size). */
  crop: number;
  /** Random crop + mirror (training with rand_crop); false: center crop, no mirror. */
  random: boolean;
  /** One crop/mirror draw per batch (batch_crop_mirror). */
  perBatch: boolean;
  /** Per-channel factor applied after the mean subtraction (input_scale); absent: none. */
  inputScale?: readonly number[];
}

export interface ProducedBatch {
  /** Iteration index within the pass (j). */
  index: number;
  size: number;
  labels: Int32Array;
}

/**
 * Reads the shards of one pass in plan order and produces its batches into caller buffers. Holds
 * one decoded shard and one uint8 staging batch: memory does not grow with the dataset.
 * Batches must be requested in increasing order (skipping is fine: `--resume` mid-epoch).
 */
export class BatchProducer {
  private shardIndex = -1;
  private shardBatches: BatchRecord[] = [];
  private staging: Uint8Array | undefined;
  private readonly imageLength: number;

  constructor(
    private readonly dir: string,
    private readonly set: ShardSetEntry,
    private readonly mean: MeanImage,
    private readonly plan: EpochPlan,
    private readonly augment: AugmentOptions,
    private readonly cropSeed: number,
    private readonly verify = true,
  ) {
    const [c, h, w] = set.imageShape;
    this.imageLength = c * h * w;
  }

  /** Float32 values of one output batch (the size of the buffers to pass to `produce`). */
  static outputLength(batchSize: number, crop: number, channels = 3): number {
    return batchSize * channels * crop * crop;
  }

  private async source(i: number): Promise<BatchRecord> {
    const s = this.plan.sources[i];
    if (s.shard !== this.shardIndex) {
      this.shardBatches = []; // let the previous shard go before reading the next
      const shard = await readShard(this.dir, this.set, this.set.shards[s.shard], { verify: this.verify });
      this.shardBatches = shard.batches;
      this.shardIndex = s.shard;
    }
    return this.shardBatches[s.batch];
  }

  /** Produce iteration `j` of the pass into `out`; returns its labels and size. */
  async produce(j: number, out: Float32Array): Promise<ProducedBatch> {
    const { plan, set } = this;
    const k = j * plan.worldSize + plan.rank;
    const start = k * plan.batchSize;
    const end = Math.min(start + plan.batchSize, plan.totalImages);
    const n = end - start;
    if (!(n > 0)) throw new RangeError(`batch ${j} is outside the pass (${plan.iterations} batches)`);
    const labels = new Int32Array(n);
    // First source overlapping `start` (binary search over offsets).
    let lo = 0;
    let hi = plan.sources.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (plan.offsets[mid] <= start) lo = mid;
      else hi = mid - 1;
    }
    let batch: BatchRecord;
    const first = await this.source(lo);
    if (plan.offsets[lo] === start && first.shape[0] === n) {
      batch = first; // aligned: the stored batch is the training batch, no copy
      labels.set(first.labels);
    } else {
      if (!this.staging) this.staging = new Uint8Array(plan.batchSize * this.imageLength);
      let filled = 0;
      for (let i = lo; filled < n; i++) {
        const src = await this.source(i);
        const from = Math.max(start, plan.offsets[i]) - plan.offsets[i];
        const count = Math.min(end, plan.offsets[i + 1]) - plan.offsets[i] - from;
        const data = src.data as Uint8Array;
        this.staging.set(data.subarray(from * this.imageLength, (from + count) * this.imageLength), filled * this.imageLength);
        labels.set(src.labels.subarray(from, from + count), filled);
        filled += count;
      }
      const [c, h, w] = set.imageShape;
      batch = { type: 'batch', dtype: 'uint8', shape: [n, c, h, w], layout: 'NCHW', data: this.staging.subarray(0, n * this.imageLength), labels, keys: [] };
    }
    const [, height, width] = set.imageShape;
    const { crop, random, perBatch } = this.augment;
    const cropPlan = planCrops(n, { crop, height, width, mirror: random, center: !random, perBatch }, new Rng(deriveSeed(this.cropSeed, k, CROP_STREAM)));
    cropMirrorSubtract(batch, this.mean, cropPlan, out);
    if (this.augment.inputScale) applyInputScale(out, n, set.imageShape[0], crop * crop, this.augment.inputScale);
    return { index: j, size: n, labels };
  }
}

/** The seed of the crop draws of one epoch's pass (validation uses center crops: no draws). */
export function cropSeedFor(seed: number, epoch: number): number {
  return deriveSeed(seed, epoch, CROP_STREAM);
}

/** What a loader needs to know, once (structured-cloneable: it is sent to the worker thread). */
export interface LoaderSetup {
  dir: string;
  meanFile: string;
  /** Shard set entries by prefix (`train`, `val`), as read from index.json by the caller. */
  sets: Record<string, ShardSetEntry>;
  batchSize: number;
  crop: number;
  seed: number;
  shuffle: boolean;
  randCrop: boolean;
  perBatch: boolean;
  rank: number;
  worldSize: number;
  verify: boolean;
  /** Batch buffers in flight between loader and engine (>= 2). */
  queueDepth: number;
  /** Per-channel factor after the mean subtraction (input_scale), for training and validation alike. */
  inputScale?: number[];
}

/** One pass over a set: an epoch of training (from `startIteration`) or a validation pass. */
export interface PassRequest {
  prefix: string;
  epoch: number;
  startIteration: number;
  train: boolean;
}

export function planPass(setup: LoaderSetup, request: PassRequest): EpochPlan {
  const set = setup.sets[request.prefix];
  if (!set) throw new RangeError(`no shard set "${request.prefix}" in the loader setup`);
  return planEpoch(set, {
    seed: setup.seed,
    epoch: request.epoch,
    shuffle: request.train && setup.shuffle,
    batchSize: setup.batchSize,
    dropLast: request.train,
    rank: setup.rank,
    worldSize: setup.worldSize,
  });
}

export function makeProducer(setup: LoaderSetup, mean: MeanImage, request: PassRequest, plan = planPass(setup, request)): BatchProducer {
  const scale = setup.inputScale ? { inputScale: setup.inputScale } : {};
  const augment: AugmentOptions = request.train
    ? { crop: setup.crop, random: setup.randCrop, perBatch: setup.perBatch, ...scale }
    : { crop: setup.crop, random: false, perBatch: false, ...scale };
  return new BatchProducer(setup.dir, setup.sets[request.prefix], mean, plan, augment, cropSeedFor(setup.seed, request.epoch), setup.verify);
}
