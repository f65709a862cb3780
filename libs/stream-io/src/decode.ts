/**
 * decode: source image bytes → 8-bit RGB pixels, CHW, size x size (DESIGN §4 `image` records).
 *
 * `decodeImage` is the pure part (bytes in, pixels out); `DecodeStage` is the stream adapter:
 * item records in, image records out, in input order, with bounded concurrency and
 * backpressure, skipping files that cannot be decoded.
 *
 * Two decoders, one result (decode.test.ts compares them): plain JPEGs (8-bit gray or YCbCr,
 * no EXIF rotation, no ICC profile, at most 3x the output size: most of a photo data set) are
 * decoded by libjpeg-turbo and resized + transposed by WebAssembly kernels (decode-fast.ts), at
 * about half the CPU of libvips, whose per-image pipeline set-up alone costs ~1.2 ms; everything
 * else, and any JPEG libjpeg-turbo complains about, goes through sharp/libvips as below.
 *
 * Conversions (what "even oddly" decodable inputs become):
 *  - EXIF orientation is applied (`rotate()`), so a phone photo stands upright;
 *  - grayscale, CMYK (ImageNet has ~22), palette, 16-bit and any other colour space → 8-bit sRGB;
 *  - alpha is *dropped* (not flattened): the colour channels are kept as they are, as Pillow's
 *    and torchvision's `convert('RGB')` do, so our pixels match models trained that way;
 *  - a file is judged by its content, not its name (a PNG named `.JPEG` decodes as a PNG);
 *  - a *truncated* file is an error (`failOn: 'truncated'`), not a half-grey image: libvips
 *    would otherwise decode a truncated JPEG partially, with a warning, and we would train on
 *    a picture that is part grey. Other decoder warnings (odd markers, extra bytes) are allowed.
 */
import { Duplex } from 'node:stream';
import { promises as fs, readFile } from 'node:fs';
import * as os from 'node:os';
import type { Sharp } from 'sharp';
import { loadSharp } from './sharp-lazy';
import { decodePlainJpeg, uninitialised } from './decode-fast';
import { jpegTurboAvailable } from './decode-jpeg-turbo';
import { DecodePool, DecodePoolError } from './decode-pool';
import { InputError, invalidOption } from './errors';
import { ImageRecord, ItemRecord, makeHeader, StreamHeader } from './records';

export type ResizeMode = 'squash' | 'center-crop';
export const RESIZE_MODES: readonly ResizeMode[] = ['squash', 'center-crop'];

export interface DecodeOptions {
  /** Output height and width in pixels. */
  size: number;
  /** squash: whole image to size x size (the seed); center-crop: shorter side to size, then the center. */
  resize: ResizeMode;
}

export interface DecodedImage {
  /** CHW, uint8, RGB. */
  data: Uint8Array;
  height: number;
  width: number;
  channels: 3;
}

/**
 * Interpolation for the resize. 'linear' (a triangle filter that widens when downscaling, so it
 * antialiases) is Pillow's BILINEAR, what the seed's PIL-based preprocessing used; it is also
 * cheaper than sharp's default lanczos3.
 */
const KERNEL = 'linear' as const;

export function validateDecodeOptions(opts: DecodeOptions): void {
  if (!Number.isInteger(opts.size) || opts.size < 1 || opts.size > 16384) throw invalidOption('--size', 'an integer between 1 and 16384', opts.size);
  if (!RESIZE_MODES.includes(opts.resize)) throw invalidOption('--resize', `one of ${RESIZE_MODES.join(', ')}`, opts.resize);
}

const LITTLE_ENDIAN = os.endianness() === 'LE';

/**
 * HWC (interleaved, 3 channels) → CHW (planar), one pass over the source. This runs on the
 * stage's (single) JS thread for every image, so it is done 4 pixels at a time: three 32-bit
 * loads (r0 g0 b0 r1 | g1 b1 r2 g2 | b2 r3 g3 b3) and one 32-bit store per plane, which
 * measured ~1.5x faster than a byte loop at 256x256; the byte loop does the unaligned/odd rest.
 */
export function hwcToChw(hwc: Uint8Array, height: number, width: number, out: Uint8Array = new Uint8Array(hwc.length)): Uint8Array {
  const plane = height * width;
  let start = 0;
  if (LITTLE_ENDIAN && hwc.byteOffset % 4 === 0 && out.byteOffset % 4 === 0 && plane % 4 === 0) {
    const quads = plane >> 2;
    const src = new Uint32Array(hwc.buffer, hwc.byteOffset, quads * 3);
    const dst = new Uint32Array(out.buffer, out.byteOffset, quads * 3);
    for (let k = 0, j = 0; k < quads; k++, j += 3) {
      const a = src[j], b = src[j + 1], c = src[j + 2];
      dst[k] = (a & 255) | ((a >>> 24) << 8) | (((b >>> 16) & 255) << 16) | (((c >>> 8) & 255) << 24);
      dst[quads + k] = ((a >>> 8) & 255) | ((b & 255) << 8) | ((b >>> 24) << 16) | (((c >>> 16) & 255) << 24);
      dst[2 * quads + k] = ((a >>> 16) & 255) | (((b >>> 8) & 255) << 8) | ((c & 255) << 16) | ((c >>> 24) << 24);
    }
    start = quads * 4;
  }
  for (let i = start, j = start * 3; i < plane; i++, j += 3) {
    out[i] = hwc[j];
    out[plane + i] = hwc[j + 1];
    out[2 * plane + i] = hwc[j + 2];
  }
  return out;
}

function pipelineFor(input: Buffer, opts: DecodeOptions): Sharp {
  const { size, resize } = opts;
  return loadSharp()(input, { failOn: 'truncated', sequentialRead: true })
    .rotate() // EXIF orientation
    .toColourspace('srgb') // grayscale, CMYK, 16-bit, labs, ... → sRGB (alpha, if any, rides along)
    .removeAlpha()
    .resize(size, size, resize === 'squash' ? { fit: 'fill', kernel: KERNEL } : { fit: 'cover', position: 'centre', kernel: KERNEL });
}

/** Decode and resize by libvips alone (what `decodeImage` does for all but plain JPEGs). */
export async function decodeWithLibvips(input: Buffer, opts: DecodeOptions): Promise<DecodedImage> {
  const { size } = opts;
  const { data, info } = await pipelineFor(input, opts).raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== size || info.height !== size || data.length !== size * size * 3) {
    // Not expected for any input libvips decodes; refuse rather than emit a wrong-shaped record.
    throw new Error(`decoder produced ${info.width}x${info.height}x${info.channels} instead of ${size}x${size}x3`);
  }
  return { data: hwcToChw(data, size, size, uninitialised(data.length)), height: size, width: size, channels: 3 };
}

/**
 * Decode image bytes (JPEG, PNG, WebP, TIFF, GIF, ...; BMP is not supported by libvips' loaders
 * in sharp's prebuilt binaries) into size x size 8-bit RGB, CHW. Rejects (throws) when the bytes
 * are not a decodable image, including truncated files; the message says why.
 *
 * Plain JPEGs (most of a photo data set) are decoded by libjpeg-turbo and resized by
 * WebAssembly kernels (decode-resample.ts, the same triangle filter); the rest, and any JPEG
 * libjpeg-turbo complains about, by libvips.
 */
export async function decodeImage(input: Buffer, opts: DecodeOptions): Promise<DecodedImage> {
  return (await decodePlainJpeg(input, opts)) ?? decodeWithLibvips(input, opts);
}

/** `decodeImage` of a file; errors say what is wrong with the file. */
export async function decodeImageFile(path: string, opts: DecodeOptions): Promise<DecodedImage> {
  // ENOENT, EISDIR, EACCES, ...: described by describeDecodeError. The callback readFile: it
  // costs the stage's thread about half of what fs.promises.readFile does (open, fstat, read
  // and close each a promise there).
  const bytes = await new Promise<Buffer>((resolve, reject) => readFile(path, (err, data) => (err ? reject(err) : resolve(data))));
  if (bytes.length === 0) throw new Error('empty file (0 bytes)');
  return decodeImage(bytes, opts);
}

/**
 * Process-wide sharp settings for a process whose job is decoding a stream of distinct images
 * (the CLI's `decode`): libvips' operation cache is turned off. It can never hit (every image
 * is new) and costs hashing, locking and memory; on 2 cores it measured +10-18% img/s in
 * bench/decode.mjs. A library must not change them behind an application's back, so this is
 * opt-in, called by the process owner.
 */
export function tuneSharpForDecoding(): void {
  loadSharp().cache(false);
}

/** Why a file was skipped, in a few words (sharp's messages are long and multi-line). */
export function describeDecodeError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.code === 'string') {
    switch (e.code) {
      case 'ENOENT': return 'file not found';
      case 'EISDIR': return 'is a folder, not a file';
      case 'EACCES': return 'permission denied';
      default: return `cannot read file (${e.code})`;
    }
  }
  const message = (e instanceof Error ? e.message : String(err)).split('\n')[0].trim();
  if (/unsupported image format/i.test(message)) return 'not an image (unsupported or unrecognised format)';
  if (/premature end|truncated|not enough data|unexpected end/i.test(message)) return `truncated or corrupt image (${message})`;
  // With several decodes in flight, libvips sometimes loses the message of a failed decode
  // (its error buffer is per thread) and sharp reports "Unknown error": the format was
  // recognised (else the check above), so the data itself is bad.
  if (message === '' || /^unknown error$/i.test(message)) return 'truncated or corrupt image (the decoder gave no details)';
  return message;
}

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
    if (!Number.isInteger(concurrency) || concurrency < 1) throw invalidOption('--concurrency', 'an integer >= 1', concurrency);
    const workers = options.workers ?? defaultDecodeWorkers();
    if (!Number.isInteger(workers) || workers < 0 || workers > 256) throw invalidOption('--workers', 'an integer between 0 and 256', workers);
    this.concurrency = concurrency;
    this.opts = { size: options.size, resize: options.resize };
    this.onSkip = options.onSkip;
    this.onImage = options.onImage;
    this.readFile = options.readFile;
    this.decode = options.decode;
    if (workers > 0 && !this.readFile && !this.decode) this.pool = new DecodePool(workers);
  }

  override _write(record: ItemRecord | StreamHeader, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (record.type === 'header') {
      const { type: _t, schema: _s, kind: _k, producer: _p, ...rest } = record;
      const header = makeHeader('image', { ...rest, producer: 'alexnet-stream decode', imageSize: this.opts.size, resize: this.opts.resize });
      this.queue.push({ settled: true, output: header });
    } else if (record.type === 'item') {
      const slot: Slot = { settled: false };
      this.queue.push(slot);
      this.work(record).then(
        (image) => { slot.output = image; },
        (err) => {
          // a dead worker thread is the stage's failure, not this file's: stop, do not skip the rest
          if (err instanceof DecodePoolError) this.destroy(new Error(`${err.message}; stopped at ${record.path}`));
          else slot.skipped = { key: record.key, path: record.path, reason: describeDecodeError(err) };
        },
      ).then(() => {
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
      const bytes = await (this.readFile ?? ((p: string) => fs.readFile(p)))(item.path);
      if (bytes.length === 0) throw new Error('empty file (0 bytes)');
      image = await (this.decode ?? decodeImage)(bytes, this.opts);
    } else if (this.pool) {
      const result = await this.pool.decode(item.path, this.opts);
      image = result.kind === 'image'
        ? { data: result.data, height: this.opts.size, width: this.opts.size, channels: 3 }
        : await decodeWithLibvips(result.bytes, this.opts);
    } else {
      image = await decodeImageFile(item.path, this.opts);
    }
    return { type: 'image', key: item.key, label: item.label, channels: 3, height: image.height, width: image.width, data: image.data };
  }

  /** Emit finished slots in order; accept the next input when there is room. */
  private pump(): void {
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
    if (this.pool) this.pool.close().then(() => callback(err), () => callback(err));
    else callback(err);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.flushing = callback;
    this.pump();
  }
}
