/**
 * JPEG → interleaved 8-bit RGB with libjpeg-turbo's TurboJPEG API (`@julusian/jpeg-turbo`,
 * prebuilt binaries): asynchronously on libuv's thread pool, or synchronously (in a worker thread).
 *
 * Why beside sharp: sharp/libvips spend ~1.2 ms of CPU per image on pipeline set-up whatever
 * its size (options marshalled property by property, GObject construction, worker threads),
 * and decoded a 500x375 JPEG in ~4 ms of CPU where TurboJPEG takes ~1.2 ms (measured on the
 * project machine). Only plain JPEGs come here (decode.ts decides, from the header); libvips
 * keeps everything that needs colour management, rotation or another format.
 *
 * An optional dependency: where it is not installed or does not load, libvips decodes everything
 * (same pixels up to the IDCT difference below, about half the speed). Version 2.3.0 is pinned: 3.x ships only a Node-API 10 binary, which crashes Node 20 (Node-API 9)
 * at load. The binding uses TurboJPEG's fast integer IDCT (TJFLAG_FASTDCT, not selectable):
 * it differs from libvips' (accurate) IDCT by about a level on photographs; see decode.test.ts.
 */

interface TurboBinding {
  FORMAT_RGB: number;
  decompress(image: Buffer, out: Buffer, options: { format: number }): Promise<{ data: Buffer; width: number; height: number }>;
  decompressSync(image: Buffer, out: Buffer, options: { format: number }): { data: Buffer; width: number; height: number };
}

let binding: TurboBinding | null | undefined;

/** The binding, or null when it cannot be loaded here (then libvips decodes everything). */
function turbo(): TurboBinding | null {
  if (binding === undefined) {
    try {
      binding = require('@julusian/jpeg-turbo') as TurboBinding;
    } catch {
      binding = null;
    }
  }
  return binding;
}

/** Whether the fast JPEG decoder can be used in this process. */
export function jpegTurboAvailable(): boolean {
  return turbo() !== null;
}

export interface RgbImage {
  /** Interleaved RGB, width x height x 3 (a view of `buffer`). */
  data: Buffer;
  width: number;
  height: number;
  /** The (reusable) buffer that holds `data`: see releaseRgb. */
  buffer: Buffer;
}

/**
 * Output buffers for decoded pixels, reused: without one the binding allocates a zero-filled
 * buffer per image on the calling thread (~0.5 ms for 500x375 on the project machine, the
 * largest cost left on the stage's thread). At most `SPARE_BUFFERS` are kept; one is lent per
 * decode in flight and must be given back (`releaseRgb`) once its pixels have been used.
 */
const SPARE_BUFFERS = 16;
const spare: Buffer[] = [];

function borrow(length: number): Buffer {
  for (let i = spare.length - 1; i >= 0; i--) {
    if (spare[i].length >= length) return spare.splice(i, 1)[0];
  }
  return Buffer.allocUnsafeSlow(length);
}

/** Give an image's pixel buffer back for reuse (its `data` must not be used afterwards). */
export function releaseRgb(image: RgbImage): void {
  if (spare.length < SPARE_BUFFERS) spare.push(image.buffer);
}

/** Bytes of RGB output for a width x height JPEG. */
const rgbLength = (width: number, height: number) => width * height * 3;

/**
 * Decode a JPEG of the given size (from its header) to 8-bit RGB (grayscale is expanded to
 * R = G = B). Rejects on any error *or warning* from libjpeg (a truncated file, bad Huffman
 * data, an odd marker): the caller then hands the file to libvips, which tells a harmless
 * warning from a broken file.
 */
export async function decodeJpegRgb(jpeg: Buffer, width: number, height: number): Promise<RgbImage> {
  const t = turbo();
  if (!t) throw new Error('libjpeg-turbo binding not available');
  const buffer = borrow(rgbLength(width, height));
  try {
    const { data, width: w, height: h } = await t.decompress(jpeg, buffer, { format: t.FORMAT_RGB });
    return { data, width: w, height: h, buffer };
  } catch (err) {
    spare.push(buffer);
    throw err;
  }
}

/** `decodeJpegRgb` on the calling thread (for worker threads, whose job is to block). */
export function decodeJpegRgbSync(jpeg: Buffer, width: number, height: number): RgbImage {
  const t = turbo();
  if (!t) throw new Error('libjpeg-turbo binding not available');
  const buffer = borrow(rgbLength(width, height));
  try {
    const { data, width: w, height: h } = t.decompressSync(jpeg, buffer, { format: t.FORMAT_RGB });
    return { data, width: w, height: h, buffer };
  } catch (err) {
    spare.push(buffer);
    throw err;
  }
}
