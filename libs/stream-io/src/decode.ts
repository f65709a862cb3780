/**
 * decode: source image bytes → 8-bit RGB pixels, CHW, size x size (DESIGN §4 `image` records).
 *
 * `decodeImage` is the pure part (bytes in, pixels out), here; `DecodeStage` (decode-stage.ts) is
 * the stream adapter: item records in, image records out, in input order, with bounded
 * concurrency and backpressure, skipping files that cannot be decoded.
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
 *  - a *truncated or corrupt* file is an error, not a half-grey image. libjpeg reports damaged
 *    data (a cut with an end marker appended, a missing middle, a header that claims more
 *    pixels than the data holds) only as a *warning* and fills the rest with grey; so a JPEG is
 *    decoded with `failOn: 'warning'` (the fast path, TurboJPEG, gives up on any warning and
 *    leaves the file to this one). The one libjpeg warning that leaves the image whole,
 *    "extraneous bytes before marker", is told apart: garbage between header segments is cut
 *    out and the file decoded again, still failing on any warning; garbage before the end
 *    marker (after every pixel) is accepted. Other formats fail on errors (`failOn: 'error'`:
 *    a truncated PNG, GIF or TIFF, a damaged TIFF tile), not on warnings, which for them are
 *    about metadata (an unknown TIFF tag).
 *  - only regular files are read, at most `maxFileBytes` (read-file.ts): a FIFO or a device in
 *    the list is skipped with what it is, never read forever.
 */
import * as os from 'node:os';
import type { Sharp } from 'sharp';
import {
  check,
  checkOptional,
  DEFAULT_MAX_IMAGE_FILE_BYTES,
  describeReadError,
  formatBytes,
  type ReadBoundedOptions,
  readRegularFile,
} from '@alexnet-stream/core';
import { loadSharp } from './sharp-lazy';
import { decodePlainJpeg, uninitialised } from './decode-fast';

export type ResizeMode = 'squash' | 'center-crop';
export const RESIZE_MODES: readonly ResizeMode[] = ['squash', 'center-crop'];

export interface DecodeOptions {
  /** Output height and width in pixels. */
  size: number;
  /** squash: whole image to size x size (the seed); center-crop: shorter side to size, then the center. */
  resize: ResizeMode;
  /** Files larger than this are skipped unread (default `DEFAULT_MAX_IMAGE_FILE_BYTES`, 128 MiB). */
  maxFileBytes?: number;
  /**
   * How skip messages name `maxFileBytes` ("… more than --max-file-bytes (10.0 KiB); raise
   * --max-file-bytes to decode it": the CLI passes its flag). Default: the limit is not named.
   */
  maxFileBytesName?: string;
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
  check.integer('size', opts.size, { min: 1, max: 16384 });
  check.oneOf('resize', opts.resize, RESIZE_MODES);
  checkOptional.integer('maxFileBytes', opts.maxFileBytes, { min: 1 });
}

/** How decode reads an image file: a regular file of at most `maxFileBytes`. */
export function imageReadLimits(opts: Pick<DecodeOptions, 'maxFileBytes' | 'maxFileBytesName'>): ReadBoundedOptions {
  const maxBytes = opts.maxFileBytes ?? DEFAULT_MAX_IMAGE_FILE_BYTES;
  return { maxBytes, limitName: opts.maxFileBytesName ? `${opts.maxFileBytesName} (${formatBytes(maxBytes)})` : `the ${formatBytes(maxBytes)} limit` };
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
      const a = src[j],
        b = src[j + 1],
        c = src[j + 2];
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

type FailOn = 'warning' | 'error';

function pipelineFor(input: Buffer, opts: DecodeOptions, failOn: FailOn): Sharp {
  const { size, resize } = opts;
  return loadSharp()(input, { failOn, sequentialRead: true })
    .rotate() // EXIF orientation
    .toColourspace('srgb') // grayscale, CMYK, 16-bit, labs, ... → sRGB (alpha, if any, rides along)
    .removeAlpha()
    .resize(size, size, resize === 'squash' ? { fit: 'fill', kernel: KERNEL } : { fit: 'cover', position: 'centre', kernel: KERNEL });
}

async function runLibvips(input: Buffer, opts: DecodeOptions, failOn: FailOn): Promise<DecodedImage> {
  const { size } = opts;
  const { data, info } = await pipelineFor(input, opts, failOn).raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== size || info.height !== size || data.length !== size * size * 3) {
    // Not expected for any input libvips decodes; refuse rather than emit a wrong-shaped record.
    throw new Error(`decoder produced ${info.width}x${info.height}x${info.channels} instead of ${size}x${size}x3`);
  }
  return { data: hwcToChw(data, size, size, uninitialised(data.length)), height: size, width: size, channels: 3 };
}

function isJpeg(bytes: Uint8Array): boolean {
  return bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

/**
 * A JPEG without the stray bytes between its header segments (before the first scan), or
 * undefined when it has none there (or its markers cannot be followed). libjpeg skips such
 * bytes with a warning ("N extraneous bytes before marker 0xc0") and decodes the image whole;
 * removing them lets the strict decode run again and still catch real damage.
 */
export function withoutExtraneousHeaderBytes(bytes: Uint8Array): Buffer | undefined {
  const parts: Uint8Array[] = [bytes.subarray(0, 2)];
  let removed = false;
  let p = 2;
  while (p + 1 < bytes.length) {
    if (bytes[p] !== 0xff || bytes[p + 1] === 0x00) {
      // not at a marker: skip to the next 0xFF that starts one
      let q = p + 1;
      while (q + 1 < bytes.length && !(bytes[q] === 0xff && bytes[q + 1] !== 0x00 && bytes[q + 1] !== 0xff)) q++;
      if (q + 1 >= bytes.length) return undefined;
      removed = true;
      p = q;
      continue;
    }
    const marker = bytes[p + 1];
    if (marker === 0xff) {
      p += 1;
      continue;
    } // fill byte
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd9)) {
      parts.push(bytes.subarray(p, p + 2));
      p += 2;
      continue;
    }
    if (p + 4 > bytes.length) return undefined;
    const end = p + 2 + ((bytes[p + 2] << 8) | bytes[p + 3]);
    if (end > bytes.length) return undefined;
    if (marker === 0xda) {
      // start of scan: the rest is entropy-coded data and later markers, kept as is
      parts.push(bytes.subarray(p));
      return removed ? Buffer.concat(parts) : undefined;
    }
    parts.push(bytes.subarray(p, end));
    p = end;
  }
  return undefined;
}

/**
 * Decode and resize by libvips alone (what `decodeImage` does for all but plain JPEGs).
 * Fails on damaged data, JPEG warnings included (see the file comment).
 */
export async function decodeWithLibvips(input: Buffer, opts: DecodeOptions): Promise<DecodedImage> {
  if (!isJpeg(input)) return runLibvips(input, opts, 'error');
  try {
    return await runLibvips(input, opts, 'warning');
  } catch (err) {
    // Stray bytes between header segments: decide by the bytes, not the message (libvips'
    // messages can be lost when several images decode at once). The cleaned file is decoded
    // just as strictly, so real damage elsewhere still fails.
    const cleaned = withoutExtraneousHeaderBytes(input);
    if (cleaned) return runLibvips(cleaned, opts, 'warning');
    // Stray bytes before the end-of-image marker: every pixel was decoded before them.
    const message = err instanceof Error ? err.message : String(err);
    if (/^[^\n]*extraneous bytes before marker 0xd9/i.test(message)) return runLibvips(input, opts, 'error');
    throw err;
  }
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
  // ENOENT, EACCES, a FIFO, a device, too large ...: described by describeDecodeError. The
  // callback read: it costs the stage's thread about half of what fs.promises.readFile does
  // (open, fstat, read and close each a promise there).
  const bytes = await readImageBytes(path, opts);
  if (bytes.length === 0) throw new Error('empty file (0 bytes)');
  return decodeImage(bytes, opts);
}

/** The bytes of an image file: a regular file, at most `maxFileBytes` (read-file.ts). */
export function readImageBytes(path: string, opts: Pick<DecodeOptions, 'maxFileBytes'>): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => readRegularFile(path, imageReadLimits(opts), (err, data) => (err ? reject(err) : resolve(data!))));
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

/**
 * Why a file was skipped, in a few words (sharp's messages are long and multi-line).
 * `maxFileBytesName`: how to name the size limit a file was over (see DecodeOptions).
 */
export function describeDecodeError(err: unknown, maxFileBytesName?: string): string {
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.code === 'string') {
    switch (e.code) {
      case 'ENOENT':
        return 'file not found';
      case 'ERR_NOT_REGULAR_FILE':
        return e.message;
      case 'ERR_FILE_TOO_LARGE':
        return maxFileBytesName ? `${e.message}; raise ${maxFileBytesName} to decode it` : e.message;
      default:
        return describeReadError(err);
    }
  }
  const message = (e instanceof Error ? e.message : String(err)).split('\n')[0].trim();
  if (/unsupported image format/i.test(message)) return 'not an image (unsupported or unrecognised format)';
  // libvips reports damaged data in several words, and with several decodes in flight its
  // (per-thread) message can be lost or doubled: one stable phrase first, the detail after.
  const corrupt = /corrupt jpeg data:\s*([^\n]*)/i.exec(message);
  if (corrupt) return `truncated or corrupt image (corrupt JPEG data: ${corrupt[1]}; parts of it would be grey)`;
  if (/warning treated as error/i.test(message)) return 'truncated or corrupt image (the decoder warned about damaged data)';
  if (/premature end|truncated|not enough data|unexpected end|read error|invalid frame data/i.test(message)) return `truncated or corrupt image (${message})`;
  // With several decodes in flight, libvips sometimes loses the message of a failed decode
  // (its error buffer is per thread) and sharp reports "Unknown error": the format was
  // recognised (else the check above), so the data itself is bad.
  if (message === '' || /^unknown error$/i.test(message)) return 'truncated or corrupt image (the decoder gave no details)';
  return message;
}
