/**
 * The fast path of `decode`: a plain JPEG (most of a photo data set) decoded by libjpeg-turbo
 * and resized + transposed to CHW in JS (decode-resample.ts). Pure functions; decode.ts falls
 * back to libvips whenever these answer undefined.
 */
import { readJpegHeader, type JpegHeader } from './decode-jpeg-header';
import { decodeJpegRgb, decodeJpegRgbSync, releaseRgb, type RgbImage } from './decode-jpeg-turbo';
import { resampleRgbToChw, resizeTablesCached } from './decode-resample';
import type { DecodedImage, DecodeOptions } from './decode';

/**
 * The most the fast path reduces an axis by. Up to here libvips would decode the JPEG at full
 * size too (sharp's shrink-on-load starts at a 3x reduction), so TurboJPEG + the JS resize do
 * the same work cheaper; beyond it libvips decodes at 1/2..1/8 scale in the DCT domain, which
 * beats any full-size decode.
 */
const FAST_PATH_MAX_REDUCTION = 3;

/**
 * sharp's default `limitInputPixels` (0x3FFF squared): libvips refuses larger images, so the
 * fast path must not allocate for them either (a header can claim any size).
 */
const MAX_INPUT_PIXELS = 0x3fff * 0x3fff;

/**
 * A JPEG that TurboJPEG + the JS resize turn into what libvips would (up to rounding and
 * IDCT differences): 8-bit grayscale or YCbCr, no EXIF rotation, no ICC profile to apply, not
 * large. Everything else (CMYK, 12-bit, rotated, colour-managed, big, not a JPEG) goes to libvips.
 */
export function plainJpegHeader(bytes: Buffer, opts: DecodeOptions): JpegHeader | undefined {
  const header = readJpegHeader(bytes);
  if (header?.precision !== 8 || (header.components !== 1 && header.components !== 3)) return undefined;
  if (header.orientation !== 1 || header.hasIccProfile) return undefined;
  const { width, height } = header;
  if (width * height > MAX_INPUT_PIXELS) return undefined;
  const reduction = opts.resize === 'squash' ? Math.max(width, height) / opts.size : Math.min(width, height) / opts.size;
  return reduction <= FAST_PATH_MAX_REDUCTION ? header : undefined;
}

/** A Uint8Array of its own ArrayBuffer (transferable), not zero-filled: every byte gets written. */
export function uninitialised(length: number): Uint8Array {
  const b = Buffer.allocUnsafeSlow(length);
  return new Uint8Array(b.buffer, b.byteOffset, length);
}

/** Resize + transpose decoded pixels; their buffer goes back for reuse. */
function resizeToChw(rgb: RgbImage, header: JpegHeader, opts: DecodeOptions): DecodedImage | undefined {
  try {
    if (rgb.width !== header.width || rgb.height !== header.height || rgb.data.length !== rgb.width * rgb.height * 3) return undefined;
    const { size } = opts;
    const { xs, ys } = resizeTablesCached(rgb.width, rgb.height, size, opts.resize);
    const data = resampleRgbToChw(rgb.data, rgb.width, xs, ys, uninitialised(3 * size * size));
    return { data, height: size, width: size, channels: 3 };
  } finally {
    releaseRgb(rgb);
  }
}

/**
 * Decode + resize a plain JPEG, or undefined when the bytes are not one or libjpeg had any
 * complaint (truncated, corrupt, odd markers): libvips then decides, and says why.
 */
export async function decodePlainJpeg(bytes: Buffer, opts: DecodeOptions): Promise<DecodedImage | undefined> {
  const header = plainJpegHeader(bytes, opts);
  if (!header) return undefined;
  let rgb;
  try {
    rgb = await decodeJpegRgb(bytes, header.width, header.height);
  } catch {
    return undefined;
  }
  return resizeToChw(rgb, header, opts);
}

/** `decodePlainJpeg` on the calling thread (a worker's). */
export function decodePlainJpegSync(bytes: Buffer, opts: DecodeOptions): DecodedImage | undefined {
  const header = plainJpegHeader(bytes, opts);
  if (!header) return undefined;
  let rgb;
  try {
    rgb = decodeJpegRgbSync(bytes, header.width, header.height);
  } catch {
    return undefined;
  }
  return resizeToChw(rgb, header, opts);
}
