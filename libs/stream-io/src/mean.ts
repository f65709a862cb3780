/**
 * The mean image (DESIGN §4): the per-pixel mean of a set of uint8 CHW images, accumulated in
 * float64 and stored as float32 `mean.npy` (3xSxS, the seed's `img_mean.npy` layout).
 *
 * `MeanAccumulator` is the pure part (one float64 CxHxW sum, never memory proportional to the
 * dataset); `MeanStage` is a pass-through stream that feeds it; `writeMeanNpy`/`readMeanNpy`
 * are the file IO (atomic write: temp + rename).
 */
import { Transform, type TransformCallback } from 'node:stream';
import {
  decodeNpy,
  describeReadError,
  encodeNpy,
  InputError,
  type MeanImage,
  meanImageProblem,
  readRegularFileAsync,
  writeFileAtomic,
} from '@alexnet-stream/core';
import type { BatchRecord, ImageRecord, StreamRecord } from './records';
import { StreamTally } from './stream-check';

/** A mean image: float32 values in CHW order. */
/** Sums uint8 CHW images of one size in float64; `mean()` divides by the count. */
export class MeanAccumulator {
  private sum: Float64Array | undefined;
  private shape: [number, number, number] | undefined;
  /** Number of images added so far. */
  count = 0;

  /** The CHW shape of the images seen so far (undefined before the first). */
  get imageShape(): [number, number, number] | undefined {
    return this.shape;
  }

  private ensureShape(channels: number, height: number, width: number, where: string): Float64Array {
    if (!this.shape) {
      this.shape = [channels, height, width];
      this.sum = new Float64Array(channels * height * width);
    } else if (this.shape[0] !== channels || this.shape[1] !== height || this.shape[2] !== width) {
      throw new InputError(
        `${where}: image is ${channels}x${height}x${width} but earlier images are ${this.shape.join('x')}; ` +
          'a mean needs images of one size (decode with --size)',
      );
    }
    return this.sum!;
  }

  /** Add one image (uint8 CHW). `where` names it in errors. */
  addImage(image: ImageRecord, where = image.key): void {
    const sum = this.ensureShape(image.channels, image.height, image.width, where);
    const data = image.data;
    for (let i = 0; i < sum.length; i++) sum[i] += data[i];
    this.count += 1;
  }

  /** Add every image of a uint8 NCHW batch. */
  addBatch(batch: BatchRecord, where = `batch starting with ${batch.keys[0] ?? '(empty)'}`): void {
    if (batch.dtype !== 'uint8') {
      throw new InputError(`${where}: the mean is computed over uint8 images, but this batch is ${batch.dtype} (already augmented?)`);
    }
    const [n, c, h, w] = batch.shape;
    const sum = this.ensureShape(c, h, w, where);
    const size = c * h * w;
    const data = batch.data as Uint8Array;
    for (let k = 0; k < n; k++) {
      const base = k * size;
      for (let i = 0; i < size; i++) sum[i] += data[base + i];
    }
    this.count += n;
  }

  /** The mean so far as float32 (throws if nothing was added: a mean of nothing is an error). */
  mean(): MeanImage {
    if (!this.shape || this.count === 0) throw new InputError('no images: cannot compute a mean of an empty dataset', { code: 'ERR_EMPTY_DATASET' });
    const out = new Float32Array(this.sum!.length);
    for (let i = 0; i < out.length; i++) out[i] = this.sum![i] / this.count;
    return { channels: this.shape[0], height: this.shape[1], width: this.shape[2], data: out };
  }
}

export interface MeanStageOptions {
  /** Records buffered on each side before backpressure applies. */
  highWaterMark?: number;
}

/**
 * Pass-through stage: forwards every record unchanged (header and trailer included) and adds
 * each image, or each image of a uint8 batch, to `accumulator`. The input must end with its
 * trailer (the stage fails otherwise, so a caller never takes the mean of a cut-short stream);
 * read the mean after the stream ends.
 */
export class MeanStage extends Transform {
  readonly accumulator = new MeanAccumulator();
  readonly tally = new StreamTally('input', ['image', 'batch'], 'mean');
  private index = 0;

  constructor(options: MeanStageOptions = {}) {
    super({ objectMode: true, highWaterMark: options.highWaterMark ?? 4 });
  }

  override _transform(record: StreamRecord, _enc: BufferEncoding, callback: TransformCallback): void {
    try {
      this.index += 1;
      this.tally.see(record, `record ${this.index}`);
      if (record.type === 'image') this.accumulator.addImage(record, `record ${this.index} (${record.key})`);
      else if (record.type === 'batch') this.accumulator.addBatch(record, `record ${this.index} (batch starting with ${record.keys[0] ?? '(empty)'})`);
      callback(null, record);
    } catch (err) {
      callback(err as Error);
    }
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

/** The largest mean image file read (float64 3x8192x8192 is 1.5 GiB; the seed's is 1.5 MiB). */
const MAX_MEAN_FILE_BYTES = 2047 << 20;

/** Write `mean` as a float32 CxHxW `.npy`, atomically (temp file + rename). */
export async function writeMeanNpy(path: string, mean: MeanImage): Promise<void> {
  await writeFileAtomic(path, encodeNpy(mean.data, [mean.channels, mean.height, mean.width]));
}

/**
 * Read a mean image from `.npy`: float32 or float64, shape (C, H, W) — ours or the seed's
 * `img_mean.npy`; every side at least 1 and every value finite (core's `meanImageProblem`).
 * Other shapes are refused with the shape named.
 */
export async function readMeanNpy(path: string): Promise<MeanImage> {
  let bytes: Buffer;
  try {
    // a regular file of bounded size: `--mean /dev/zero` or a FIFO is refused, not read forever
    bytes = await readRegularFileAsync(path, { maxBytes: MAX_MEAN_FILE_BYTES, limitName: `the ${MAX_MEAN_FILE_BYTES >> 20} MiB a mean image may take` });
  } catch (err) {
    throw new InputError(`${path}: cannot read the mean image (${describeReadError(err)})`, { code: 'ERR_MEAN_IMAGE', cause: err });
  }
  const array = decodeNpy(bytes, path);
  if (array.shape.length !== 3 || array.shape[0] < 1) {
    throw new InputError(`${path}: a mean image must have shape (C, H, W), this one is (${array.shape.join(', ')})`, { code: 'ERR_MEAN_IMAGE' });
  }
  let data: Float32Array;
  if (array.data instanceof Float32Array) data = array.data;
  else if (array.data instanceof Float64Array || array.data instanceof Uint8Array) data = Float32Array.from(array.data);
  else throw new InputError(`${path}: a mean image must be float32 or float64, this one is ${array.dtype}`, { code: 'ERR_MEAN_IMAGE' });
  const problem = meanImageProblem(array.shape, data);
  if (problem) throw new InputError(`${path}: not a usable mean image: ${problem}`, { code: 'ERR_MEAN_IMAGE' });
  const [channels, height, width] = array.shape;
  return { channels, height, width, data };
}
