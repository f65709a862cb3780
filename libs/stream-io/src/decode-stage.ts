/**
 * The decode stage (decode.ts has the decoders): item records in, image records out, in input
 * order, with bounded concurrency and backpressure; a file that cannot be decoded is skipped with
 * its reason (`onSkip`), and the output's trailer counts what was decoded and skipped.
 */
import { Duplex } from 'node:stream';
import * as os from 'node:os';
import { AlexnetStreamError, check, InputError } from '@alexnet-stream/core';
import { jpegTurboAvailable } from './decode-jpeg-turbo';
import { DecodePool, DecodePoolError } from './decode-pool';
import {
  type DecodedImage,
  type DecodeOptions,
  decodeImage,
  decodeImageFile,
  decodeWithLibvips,
  describeDecodeError,
  readImageBytes,
  validateDecodeOptions,
} from './decode';
import { type ImageRecord, type ItemRecord, makeHeader, makeTrailer, type StreamHeader, type StreamRecord, type StreamTrailer } from './records';
import { StreamTally } from './stream-check';

export interface DecodeStageOptions extends DecodeOptions {
  /** Files read and decoded at once. Default: see `defaultDecodeConcurrency`. */
  concurrency?: number;
  /**
   * Worker threads that read, decode and resize plain JPEGs (the fast path) beside the stage's
   * thread; 0: the resize runs on the stage's thread and decoding on libuv's thread pool.
   * Default: see `defaultDecodeWorkers`.
   */
  workers?: number;
  /** Image records buffered on the readable side before backpressure applies (default 4). */
  highWaterMark?: number;
  /** Called once per image emitted, in input order (progress reporting). */
  onImage?: (image: ImageRecord) => void;
  /** Called once per skipped file, in input order. */
  onSkip?: (key: string, reason: string, path: string) => void;
  /** Injectable for tests: how a file's bytes are read (default: fs.readFile). */
  readFile?: (path: string) => Promise<Buffer>;
  /** Injectable for tests: the pure decoder (default decodeImage). */
  decode?: (input: Buffer, opts: DecodeOptions) => Promise<DecodedImage>;
}

/**
 * Files in flight by default. sharp runs each image on one libuv thread-pool thread (4 by
 * default; sharp.concurrency() is 1 with glibc), so twice the cores keeps the CPUs busy while
 * other images open or wait to be taken; bench/decode.mjs --explore measured 2..16 in flight,
 * with thread pools of 2..8, all within ±5% on 2 cores.
 */
export function defaultDecodeConcurrency(): number {
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.max(2, 2 * cores);
}

/**
 * Decode worker threads by default: one per core where the fast path can run (libjpeg-turbo
 * loaded), else none (libvips already runs on libuv's thread pool). On the 2-core project
 * machine, 2 workers made `scan | decode | batch` ~12% faster than none (bench/decode.mjs):
 * the stage's own thread is then left free to frame and write records.
 */
export function defaultDecodeWorkers(): number {
  if (!jpegTurboAvailable()) return 0;
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}

interface Slot {
  settled: boolean;
  output?: ImageRecord | StreamHeader;
  skipped?: { key: string; path: string; reason: string };
  /** The input's trailer: when this slot comes out, every item before it has been emitted or skipped. */
  trailer?: StreamTrailer;
}

/**
 * item records → image records, in input order. A header record (kind 'item') becomes an
 * 'image' header with the same class names, so a decoded stream can go straight to the next
 * stage. At most `concurrency` files are read/decoded at once; a new item is accepted only
 * while fewer are in flight and the readable side is not backed up (the last push() returned
 * false and no _read() came since), so a slow consumer slows the producer instead of growing
 * a buffer.
 */
export class DecodeStage extends Duplex {
  decoded = 0;
  skipped = 0;
  readonly tally = new StreamTally('input', ['item'], 'decode');
  private index = 0;
  readonly concurrency: number;
  private readonly opts: DecodeOptions;
  private readonly onSkip?: DecodeStageOptions['onSkip'];
  private readonly onImage?: DecodeStageOptions['onImage'];
  private readonly readFile?: (path: string) => Promise<Buffer>;
  private readonly decode?: (input: Buffer, opts: DecodeOptions) => Promise<DecodedImage>;
  private readonly pool?: DecodePool;
  private readonly queue: Slot[] = [];
  private waiting: ((err?: Error | null) => void) | undefined;
  /** push() said the readable buffer is full; cleared when the consumer asks for more (_read). */
  private backedUp = false;
  private flushing: ((err?: Error | null) => void) | undefined;

  constructor(options: DecodeStageOptions) {
    const concurrency = options.concurrency ?? defaultDecodeConcurrency();
    super({ objectMode: true, writableHighWaterMark: 1, readableHighWaterMark: options.highWaterMark ?? 4 });
    validateDecodeOptions(options);
    check.integer('concurrency', concurrency, { min: 1, max: 1024 });
    const workers = check.integer('workers', options.workers ?? defaultDecodeWorkers(), { min: 0, max: 256 });
    this.concurrency = concurrency;
    this.opts = {
      size: options.size,
      resize: options.resize,
      ...(options.maxFileBytes !== undefined ? { maxFileBytes: options.maxFileBytes } : {}),
      ...(options.maxFileBytesName !== undefined ? { maxFileBytesName: options.maxFileBytesName } : {}),
    };
    this.onSkip = options.onSkip;
    this.onImage = options.onImage;
    this.readFile = options.readFile;
    this.decode = options.decode;
    if (workers > 0 && !this.readFile && !this.decode) this.pool = new DecodePool(workers);
  }

  override _write(record: StreamRecord, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.index += 1;
    try {
      this.tally.see(record, `record ${this.index}`);
    } catch (err) {
      callback(err as Error);
      return;
    }
    if (record.type === 'header') {
      const { type: _t, schema: _s, kind: _k, producer: _p, ...rest } = record;
      const header = makeHeader('image', { ...rest, producer: 'alexnet-stream decode', imageSize: this.opts.size, resize: this.opts.resize });
      this.queue.push({ settled: true, output: header });
    } else if (record.type === 'trailer') {
      this.queue.push({ settled: true, trailer: record });
    } else if (record.type === 'item') {
      const slot: Slot = { settled: false };
      this.queue.push(slot);
      this.work(record)
        .then(
          (image) => {
            slot.output = image;
          },
          (err) => {
            if (this.destroyed) return; // the stage stopped (its input failed): not this file's fault
            // a dead worker thread is the stage's failure, not this file's: stop, do not skip the rest
            if (err instanceof DecodePoolError) {
              this.destroy(new AlexnetStreamError(`${err.message}; stopped at ${record.path}`, { code: 'ERR_DECODE_WORKER', cause: err }));
            } else slot.skipped = { key: record.key, path: record.path, reason: describeDecodeError(err, this.opts.maxFileBytesName) };
          },
        )
        .then(() => {
          slot.settled = true;
          this.pump();
        });
    } else {
      callback(new InputError(`decode reads item records, not ${(record as { type?: string }).type} records`));
      return;
    }
    this.waiting = callback;
    this.pump();
  }

  private async work(item: ItemRecord): Promise<ImageRecord> {
    let image: DecodedImage;
    if (this.readFile || this.decode) {
      const bytes = await (this.readFile ?? ((p: string) => readImageBytes(p, this.opts)))(item.path);
      if (bytes.length === 0) throw new Error('empty file (0 bytes)');
      image = await (this.decode ?? decodeImage)(bytes, this.opts);
    } else if (this.pool) {
      const result = await this.pool.decode(item.path, this.opts);
      image =
        result.kind === 'image'
          ? { data: result.data, height: this.opts.size, width: this.opts.size, channels: 3 }
          : await decodeWithLibvips(result.bytes, this.opts);
    } else {
      image = await decodeImageFile(item.path, this.opts);
    }
    return { type: 'image', key: item.key, label: item.label, channels: 3, height: image.height, width: image.width, data: image.data };
  }

  /** Emit finished slots in order; accept the next input when there is room. */
  private pump(): void {
    if (this.destroyed) return;
    while (this.queue.length > 0 && this.queue[0].settled) {
      const slot = this.queue.shift()!;
      if (slot.output) {
        if (!this.push(slot.output)) this.backedUp = true;
        if (slot.output.type === 'image') {
          this.decoded += 1;
          this.onImage?.(slot.output);
        }
      } else if (slot.skipped) {
        this.skipped += 1;
        this.onSkip?.(slot.skipped.key, slot.skipped.reason, slot.skipped.path);
      } else if (slot.trailer) {
        // Every item of the input has come out as an image or a skip: the input's count is
        // decoded + skipped, and the skips add to those upstream.
        const trailer = makeTrailer({ records: this.decoded, skipped: this.tally.skippedUpstream + this.skipped, producer: 'alexnet-stream decode' });
        if (!this.push(trailer)) this.backedUp = true;
      }
    }
    if (this.waiting && this.queue.length < this.concurrency && !this.backedUp) {
      const callback = this.waiting;
      this.waiting = undefined;
      callback();
    }
    if (this.flushing && this.queue.length === 0) {
      const callback = this.flushing;
      this.flushing = undefined;
      try {
        this.tally.end(); // an input without its trailer: fail, do not end this stream as if whole
      } catch (err) {
        callback(err as Error);
        return;
      }
      this.push(null);
      if (this.pool) this.pool.close().then(() => callback(), callback);
      else callback();
    }
  }

  override _read(): void {
    // The consumer wants more. (Do not compare readableLength with the high-water mark here:
    // Readable calls _read before it takes the chunk being read off the buffer.)
    this.backedUp = false;
    this.pump(); // maybe accept the input we held back
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (this.pool)
      this.pool.close().then(
        () => callback(err),
        () => callback(err),
      );
    else callback(err);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.flushing = callback;
    this.pump();
  }
}
