/**
 * Augmentation as the seed's `proc_load.crop_and_mirror`: (uint8 image − mean image), mirrored
 * horizontally, then cropped, as float32 NCHW.
 *
 * - `planCrops(n, params, rng)` draws the crop offsets and mirror flags (pure, deterministic for
 *   a given `Rng` state): per image by default, once per batch with `perBatch` (the seed's
 *   `batch_crop_mirror`), the fixed center crop without mirror with `center` (validation;
 *   offset (256 − 227) >> 1 = 14).
 * - `cropMirrorSubtract(batch, mean, plan, out?)` applies a plan, writing into a caller's
 *   preallocated Float32Array when given (the training loader reuses its buffers).
 * - `AugmentStage` is the stream adapter.
 *
 * Order of operations, exactly as the seed: `(img - img_mean)` on the full image, then mirror
 * (`data[:, :, ::-1, :]`), then crop. So a mirrored output column x comes from source column
 * `W − 1 − (offsetX + x)`, and the mean is taken at the same source pixel. Offsets are drawn
 * uniformly from 0..H−crop (the seed's `round(u · 2 · margin)` gives the two end offsets half
 * the probability of the others; a fair draw is the intended distribution).
 * The arithmetic is `float32(uint8 − float32 mean)`: both values are exact in float64 and their
 * difference is exact too, so the result equals NumPy's float32 subtraction bit for bit.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { check, checkOptional, InputError, type MeanImage, Rng, UsageError } from '@alexnet-stream/core';
import { oversizedBatch } from './framing';
import { type BatchRecord, makeHeader, makeTrailer, type StreamRecord } from './records';
import { IMAGE_CHANNELS } from './record-validation';
import { StreamTally } from './stream-check';

export interface CropParams {
  /** Side of the square crop (227 for AlexNet). */
  crop: number;
  /** Image height and width the crops are taken from. */
  height: number;
  width: number;
  /** Mirror with probability 1/2 (ignored with `center`). */
  mirror?: boolean;
  /** Fixed center crop, no mirror: validation. */
  center?: boolean;
  /** One offset/mirror draw for the whole batch instead of one per image. */
  perBatch?: boolean;
}

/** Per-image crop offsets and mirror flags for one batch. */
export interface CropPlan {
  crop: number;
  offsetY: Int32Array;
  offsetX: Int32Array;
  /** 1 = mirror horizontally. */
  mirror: Uint8Array;
}

/** Validate crop parameters once, at the boundary: a crop larger than the image is a usage error. */
export function checkCropParams(params: CropParams): CropParams {
  const { height, width } = params;
  if (params.center && (params.mirror || params.perBatch)) {
    throw new UsageError(
      (name) => `${name('center')} takes the fixed center crop without mirroring; it cannot be combined with ${name('mirror')} or ${name('perBatch')}`,
    );
  }
  const crop = check.integer('crop', params.crop, { min: 1 });
  if (crop > height || crop > width) {
    throw new UsageError((name) => `Expected a ${name('crop')} no larger than the ${height}x${width} images but received ${crop}`, {
      code: 'ERR_INVALID_PARAMETER',
    });
  }
  return params;
}

/** The center offset along a side: (side − crop) >> 1, 14 for 256 → 227. */
export function centerOffset(side: number, crop: number): number {
  return (side - crop) >> 1;
}

/**
 * Draw crop offsets and mirror flags for `n` images. Consumes the same number of draws from
 * `rng` for the same `n` and params, so a seeded `Rng` gives the same plan every time.
 */
export function planCrops(n: number, params: CropParams, rng: Rng): CropPlan {
  const { crop, height, width } = params;
  const plan: CropPlan = { crop, offsetY: new Int32Array(n), offsetX: new Int32Array(n), mirror: new Uint8Array(n) };
  if (params.center) {
    plan.offsetY.fill(centerOffset(height, crop));
    plan.offsetX.fill(centerOffset(width, crop));
    return plan;
  }
  const draw = (i: number): void => {
    plan.offsetY[i] = rng.nextInt(height - crop + 1);
    plan.offsetX[i] = rng.nextInt(width - crop + 1);
    plan.mirror[i] = params.mirror ? rng.nextUint32() >>> 31 : 0;
  };
  if (params.perBatch) {
    draw(0);
    plan.offsetY.fill(plan.offsetY[0]);
    plan.offsetX.fill(plan.offsetX[0]);
    plan.mirror.fill(plan.mirror[0]);
  } else {
    for (let i = 0; i < n; i++) draw(i);
  }
  return plan;
}

/** Throw unless `batch` is a uint8 batch of the mean's shape. `where` names the record. */
export function checkAugmentInput(batch: BatchRecord, mean: MeanImage, where: string): void {
  if (batch.dtype !== 'uint8') {
    throw new InputError(`${where}: augment reads uint8 batches, this one is ${batch.dtype} (already augmented?)`);
  }
  const [, c, h, w] = batch.shape;
  if (c !== mean.channels || h !== mean.height || w !== mean.width) {
    throw new InputError(`${where}: ${c}x${h}x${w} images but the mean image is ${mean.channels}x${mean.height}x${mean.width}; use the mean of the same data`);
  }
}

/** True when every image of the plan has the same offsets and mirror flag (center, per-batch). */
function uniformPlan(plan: CropPlan): boolean {
  const n = plan.offsetY.length;
  for (let i = 1; i < n; i++) {
    if (plan.offsetY[i] !== plan.offsetY[0] || plan.offsetX[i] !== plan.offsetX[0] || plan.mirror[i] !== plan.mirror[0]) return false;
  }
  return n > 0;
}

// Center crops reuse their mean crop batch after batch: a few per mean image, no more.
const meanCropCache = new WeakMap<MeanImage, Map<string, Float32Array>>();
const MEAN_CROPS_KEPT = 4;

/**
 * The mean image cropped (and mirrored) exactly as the images are: a contiguous C x crop x crop
 * array, so the inner loop reads it sequentially. Cached per mean image when `cache`.
 */
export function meanCrop(mean: MeanImage, offsetY: number, offsetX: number, mirror: boolean, crop: number, cache = false): Float32Array {
  const key = `${offsetY},${offsetX},${mirror ? 1 : 0},${crop}`;
  const cached = cache ? meanCropCache.get(mean)?.get(key) : undefined;
  if (cached) return cached;
  const { channels, height, width, data } = mean;
  const out = new Float32Array(channels * crop * crop);
  let o = 0;
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < crop; y++) {
      const row = (c * height + offsetY + y) * width;
      if (mirror) {
        const m0 = row + width - 1 - offsetX;
        for (let x = 0; x < crop; x++) out[o + x] = data[m0 - x];
      } else {
        const m0 = row + offsetX;
        for (let x = 0; x < crop; x++) out[o + x] = data[m0 + x];
      }
      o += crop;
    }
  }
  if (cache) {
    let perMean = meanCropCache.get(mean);
    if (!perMean) meanCropCache.set(mean, (perMean = new Map()));
    if (perMean.size >= MEAN_CROPS_KEPT) perMean.clear();
    perMean.set(key, out);
  }
  return out;
}

/**
 * out[n, c, y, x] = batch[n, c, oy+y, sx] − mean[c, oy+y, sx], with sx = ox + x, or
 * W − 1 − (ox + x) when mirrored. Writes into `out` (length N·C·crop·crop) when given, else
 * allocates. Inputs are trusted (see `checkAugmentInput`, `checkCropParams`).
 *
 * Speed (bench/augment.mjs): one tight loop per output row over typed arrays with constant
 * bases (V8 keeps it free of bounds-check deopts); when all images share one crop (center,
 * per-batch) the mean crop is made once as a contiguous array (cached for center crops).
 */
export function cropMirrorSubtract(batch: BatchRecord, mean: MeanImage, plan: CropPlan, out?: Float32Array): Float32Array {
  const [n, channels, height, width] = batch.shape;
  const crop = plan.crop;
  const length = n * channels * crop * crop;
  if (!out) out = new Float32Array(length);
  else if (out.length < length) throw new RangeError(`cropMirrorSubtract: output holds ${out.length} values, ${length} needed`);
  const src = batch.data as Uint8Array;
  const plane = height * width;
  if (uniformPlan(plan)) {
    const oy = plan.offsetY[0];
    const ox = plan.offsetX[0];
    const mirror = plan.mirror[0] === 1;
    // Cache only when the crop repeats batch after batch (center); a per-batch random crop is
    // made fresh (1/N of the batch's work) rather than filling memory with every offset.
    const meanRows = meanCrop(mean, oy, ox, mirror, crop, oy === centerOffset(height, crop) && ox === centerOffset(width, crop) && !mirror);
    let o = 0;
    for (let i = 0; i < n; i++) {
      let mo = 0;
      for (let c = 0; c < channels; c++) {
        for (let y = 0; y < crop; y++) {
          const rowStart = (i * channels + c) * plane + (oy + y) * width;
          if (mirror) {
            const s0 = rowStart + width - 1 - ox;
            for (let x = 0; x < crop; x++) out[o + x] = src[s0 - x] - meanRows[mo + x];
          } else {
            const s0 = rowStart + ox;
            for (let x = 0; x < crop; x++) out[o + x] = src[s0 + x] - meanRows[mo + x];
          }
          o += crop;
          mo += crop;
        }
      }
    }
    return out;
  }
  const meanData = mean.data;
  let o = 0;
  for (let i = 0; i < n; i++) {
    const oy = plan.offsetY[i];
    const ox = plan.offsetX[i];
    const mirror = plan.mirror[i] === 1;
    const imageBase = i * channels * plane;
    for (let c = 0; c < channels; c++) {
      const planeBase = c * plane;
      for (let y = 0; y < crop; y++) {
        // Same index into the image and the mean: both are CxHxW.
        const row = planeBase + (oy + y) * width;
        if (mirror) {
          const m0 = row + width - 1 - ox; // source of output column 0
          const s0 = imageBase + m0;
          for (let x = 0; x < crop; x++) out[o + x] = src[s0 - x] - meanData[m0 - x];
        } else {
          const m0 = row + ox;
          const s0 = imageBase + m0;
          for (let x = 0; x < crop; x++) out[o + x] = src[s0 + x] - meanData[m0 + x];
        }
        o += crop;
      }
    }
  }
  return out;
}

/** The whole job for one batch: plan, crop/mirror/subtract, and wrap as a float32 batch record. */
export function augmentBatch(batch: BatchRecord, mean: MeanImage, params: Omit<CropParams, 'height' | 'width'>, rng: Rng, out?: Float32Array): BatchRecord {
  const [n, c, h, w] = batch.shape;
  const plan = planCrops(n, { ...params, height: h, width: w }, rng);
  const data = cropMirrorSubtract(batch, mean, plan, out);
  const result: BatchRecord = {
    type: 'batch',
    dtype: 'float32',
    shape: [n, c, params.crop, params.crop],
    layout: 'NCHW',
    data,
    labels: batch.labels,
    keys: batch.keys,
  };
  if (batch.partial) result.partial = true;
  return result;
}

export interface AugmentStageOptions extends Omit<CropParams, 'height' | 'width'> {
  mean: MeanImage;
  /** Seed of the crop/mirror draws (default 0). */
  seed?: number;
  highWaterMark?: number;
}

/**
 * uint8 batches → float32 mean-subtracted crops. Refuses float32 input and batches whose image
 * size differs from the mean's. A crop larger than the mean image is a `UsageError` at
 * construction. Every output batch gets a fresh buffer (downstream may hold it).
 */
export class AugmentStage extends Transform {
  readonly tally = new StreamTally('input', ['batch'], 'augment');
  private readonly rng: Rng;
  private index = 0;
  private batches = 0;
  private images = 0;

  constructor(private readonly options: AugmentStageOptions) {
    super({ objectMode: true, highWaterMark: options.highWaterMark ?? 2 });
    checkCropParams({ ...options, height: options.mean.height, width: options.mean.width });
    this.rng = new Rng(checkOptional.seed('seed', options.seed) ?? 0);
  }

  override _transform(record: StreamRecord, _enc: BufferEncoding, callback: TransformCallback): void {
    this.index += 1;
    try {
      this.tally.see(record, `record ${this.index}`);
      if (record.type === 'header') {
        const { type: _t, schema: _s, kind: _k, ...rest } = record;
        const { crop, mirror, center, perBatch, seed } = this.options;
        if (record.batchSize !== undefined) this.checkOutputSize(record.batchSize);
        callback(
          null,
          makeHeader('batch', {
            ...rest,
            producer: 'alexnet-stream augment',
            imageSize: crop,
            dtype: 'float32',
            augment: { crop, mirror: Boolean(mirror), center: Boolean(center), perBatch: Boolean(perBatch), seed: seed ?? 0 },
          }),
        );
        return;
      }
      if (record.type === 'trailer') {
        callback(null, makeTrailer({ records: this.batches, images: this.images, skipped: record.skipped, producer: 'alexnet-stream augment' }));
        return;
      }
      if (record.type !== 'batch') throw new InputError(`record ${this.index}: augment reads batch records, not ${record.type} records`);
      checkAugmentInput(record, this.options.mean, `record ${this.index} (batch starting with ${record.keys[0] ?? '(empty)'})`);
      this.checkOutputSize(record.shape[0]);
      this.batches += 1;
      this.images += record.shape[0];
      callback(null, augmentBatch(record, this.options.mean, this.options, this.rng));
    } catch (err) {
      callback(err as Error);
    }
  }

  /**
   * float32 crops take 4 bytes a value where the input took 1: a batch size whose output no
   * reader takes (1 GiB a record) is refused before anything is written.
   */
  private checkOutputSize(n: number): void {
    const { crop } = this.options;
    const tooLarge = oversizedBatch(n, IMAGE_CHANNELS * crop * crop, 4, `float32 ${IMAGE_CHANNELS}x${crop}x${crop} crops`);
    if (tooLarge) throw new UsageError(`${tooLarge}: make smaller batches upstream (batch --size)`, { code: 'ERR_BATCH_TOO_LARGE' });
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.tally.end();
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }
}
