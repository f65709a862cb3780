/**
 * Images → batches: `BatchAssembler` packs uint8 CHW images of one size into NCHW batch records
 * (pure, no streams); `BatchStage` is the stream adapter. The last, smaller batch is kept and
 * marked `partial: true`, or dropped with `dropLast`.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { check, InputError, UsageError } from '@alexnet-stream/core';
import { oversizedBatch } from './framing';
import { type BatchRecord, type ImageRecord, makeHeader, makeTrailer, type StreamRecord } from './records';
import { MAX_BATCH_SIZE } from './record-validation';
import { StreamTally } from './stream-check';

export interface BatchOptions {
  /** Images per batch (>= 1). */
  batchSize: number;
  /** Drop a last batch smaller than `batchSize` instead of emitting it marked `partial`. */
  dropLast?: boolean;
}

/** Validate batch options once, at the boundary. */
export function checkBatchSize(batchSize: number): number {
  // The stream format's bound (record-validation): a reader refuses a header declaring more.
  return check.integer('batchSize', batchSize, { min: 1, max: MAX_BATCH_SIZE });
}

/**
 * Packs images into batches. `add` returns a full batch when one completes; `finish` returns
 * the last partial batch (or undefined when there is none or `dropLast`). Holds at most one
 * batch of pixels.
 */
export class BatchAssembler {
  private data: Uint8Array | undefined;
  private labels: Int32Array | undefined;
  private keys: string[] = [];
  private shape: [number, number, number] | undefined;
  /** A finished batch's pixel buffer, given back by its consumer (see `recycle`). */
  private spare: Uint8Array | undefined;
  /** Images dropped by `dropLast` (known after `finish`). */
  dropped = 0;

  constructor(private readonly options: BatchOptions) {
    checkBatchSize(options.batchSize);
  }

  /** The CHW shape of the images seen so far. */
  get imageShape(): [number, number, number] | undefined {
    return this.shape;
  }

  /** Add one image; `where` names it in errors (default: its key). */
  add(image: ImageRecord, where = image.key): BatchRecord | undefined {
    const { channels: c, height: h, width: w } = image;
    if (!this.shape) this.shape = [c, h, w];
    else if (this.shape[0] !== c || this.shape[1] !== h || this.shape[2] !== w) {
      throw new InputError(`${where}: image is ${c}x${h}x${w} but the batch holds ${this.shape.join('x')} images; decode every image to one size (--size)`);
    }
    const size = c * h * w;
    if (!this.data) {
      // Before allocating: a batch larger than any reader takes is refused, not written (nor a
      // RangeError "Invalid typed array length" when it cannot even be allocated).
      const tooLarge = oversizedBatch(this.options.batchSize, size, 1, `uint8 ${c}x${h}x${w} images`);
      if (tooLarge) throw new UsageError((name) => `${tooLarge}: lower ${name('batchSize')}`, { code: 'ERR_BATCH_TOO_LARGE' });
      const length = this.options.batchSize * size;
      this.data = this.spare?.length === length ? this.spare : new Uint8Array(length);
      this.spare = undefined;
      this.labels = new Int32Array(this.options.batchSize);
      this.keys = [];
    }
    const k = this.keys.length;
    this.data.set(image.data, k * size);
    this.labels![k] = image.label;
    this.keys.push(image.key);
    return this.keys.length === this.options.batchSize ? this.take(false) : undefined;
  }

  /**
   * Give back the pixel buffer of a batch this assembler made, once nothing reads it any more
   * (a shard writer has written it): the next batch is packed into it. A fresh 50 MB buffer
   * per batch costs ~12k page faults, as much CPU as copying the pixels into it.
   */
  recycle(data: Uint8Array | Float32Array): void {
    if (data instanceof Uint8Array && data.byteOffset === 0 && data.length === data.buffer.byteLength) this.spare = data;
  }

  /** The last partial batch, if any and not dropped. */
  finish(): BatchRecord | undefined {
    if (!this.data || this.keys.length === 0) return undefined;
    if (this.options.dropLast) {
      this.dropped = this.keys.length;
      this.data = undefined;
      return undefined;
    }
    return this.take(true);
  }

  private take(partial: boolean): BatchRecord {
    const n = this.keys.length;
    const [c, h, w] = this.shape!;
    const data = partial ? this.data!.slice(0, n * c * h * w) : this.data!;
    const labels = partial ? this.labels!.slice(0, n) : this.labels!;
    const batch: BatchRecord = { type: 'batch', dtype: 'uint8', shape: [n, c, h, w], layout: 'NCHW', data, labels, keys: this.keys };
    if (partial) batch.partial = true;
    this.data = undefined; // the record owns its buffer now; the next batch gets a fresh one
    this.labels = undefined;
    this.keys = [];
    return batch;
  }
}

export interface BatchStageOptions extends BatchOptions {
  /** Records buffered on each side before backpressure applies (default 4 images, 2 batches). */
  highWaterMark?: number;
}

/**
 * Image records → batch records. The header becomes a batch-stream header with the same class
 * names (and the batch size, dtype and image size, which bound every record downstream); the
 * trailer, once checked, becomes this stage's own, after the last (partial) batch. Any other
 * record kind is refused, and so is an input that ends without its trailer.
 */
export class BatchStage extends Transform {
  readonly assembler: BatchAssembler;
  readonly tally = new StreamTally('input', ['image'], 'batch');
  private index = 0;
  /** Number of class names in the input header, when it names them (labels are checked against it). */
  private classCount: number | undefined;
  private batches = 0;
  private images = 0;

  constructor(private readonly options: BatchStageOptions) {
    super({
      writableObjectMode: true,
      readableObjectMode: true,
      writableHighWaterMark: options.highWaterMark ?? 4,
      readableHighWaterMark: options.highWaterMark ?? 2,
    });
    this.assembler = new BatchAssembler(options);
  }

  private pushBatch(batch: BatchRecord | undefined): void {
    if (!batch) return;
    this.batches += 1;
    this.images += batch.shape[0];
    this.push(batch);
  }

  override _transform(record: StreamRecord, _enc: BufferEncoding, callback: TransformCallback): void {
    this.index += 1;
    try {
      this.tally.see(record, `record ${this.index}`);
      if (record.type === 'header') {
        const { type: _t, schema: _s, kind: _k, ...rest } = record;
        this.classCount = record.classNames?.length;
        callback(null, makeHeader('batch', { ...rest, producer: 'alexnet-stream batch', batchSize: this.options.batchSize, dtype: 'uint8' }));
        return;
      }
      if (record.type === 'trailer') {
        this.pushBatch(this.assembler.finish());
        callback(
          null,
          makeTrailer({
            records: this.batches,
            images: this.images,
            skipped: this.tally.skippedUpstream + this.assembler.dropped,
            producer: 'alexnet-stream batch',
          }),
        );
        return;
      }
      if (record.type !== 'image') throw new InputError(`record ${this.index}: batch reads image records, not ${record.type} records`);
      const where = `record ${this.index} (${record.key})`;
      if (this.classCount !== undefined && record.label >= this.classCount) {
        throw new InputError(`${where}: label ${record.label} is out of range for the stream's ${this.classCount} class names`);
      }
      this.pushBatch(this.assembler.add(record, where));
      callback();
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
