/**
 * An image decoding worker thread: bytes → the model's input row, with the project's own decode
 * path (stream-io's `decodeImage`: libjpeg-turbo + the WebAssembly resize for plain JPEGs,
 * sharp/libvips for everything else; the fast path called synchronously here, as stream-io's
 * own decode worker does), then `preprocessImage` (center crop, mean, std).
 *
 * Before decoding, the image's header is read (JPEG markers, else libvips' header-only
 * `metadata()`): an image that declares more than `maxPixels` is refused without a single pixel
 * being decoded (a decompression bomb is a few KB that claims gigapixels).
 */
import { parentPort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { decodePlainJpegSync, decodeWithLibvips, describeDecodeError, readJpegHeader } from '@alexnet-stream/stream-io';
import type { DecodeReply, DecodeRequest, RejectReason } from './decode-protocol';
import { type PreparedPreprocessing, preparePreprocessing, preprocessImage } from './preprocess';

const prepared = new Map<number, PreparedPreprocessing>();

type SharpFactory = (
  input: Buffer,
  options?: { failOn?: string; limitInputPixels?: number | boolean },
) => { metadata(): Promise<{ width?: number; height?: number; format?: string }> };
let sharp: SharpFactory | undefined;

class Rejected extends Error {
  constructor(
    readonly reason: RejectReason,
    message: string,
  ) {
    super(message);
  }
}

/** Width and height as the file declares them, without decoding pixels. */
async function declaredSize(bytes: Buffer): Promise<{ width: number; height: number }> {
  const jpeg = readJpegHeader(bytes);
  if (jpeg) return jpeg;
  sharp ??= require('sharp') as SharpFactory;
  let meta;
  try {
    // limitInputPixels: false: report any declared size; the limit is ours to apply, below.
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw new Rejected('not_an_image', describeDecodeError(err));
  }
  if (!meta.width || !meta.height) throw new Rejected('not_an_image', `no image size in the ${meta.format ?? 'file'} header`);
  return { width: meta.width, height: meta.height };
}

async function decode(message: Extract<DecodeRequest, { type: 'decode' }>): Promise<void> {
  const { task } = message;
  const bytes = Buffer.from(message.bytes.buffer, message.bytes.byteOffset, message.bytes.byteLength);
  let reply: DecodeReply;
  let transfer: ArrayBuffer[] = [];
  try {
    const pre = prepared.get(message.pre);
    if (!pre) throw new Error(`preprocessing ${message.pre} is not configured`);
    if (bytes.length === 0) throw new Rejected('empty', 'empty image (0 bytes)');
    const started = performance.now();
    const { width, height } = await declaredSize(bytes);
    if (width * height > message.maxPixels) {
      throw new Rejected(
        'too_many_pixels',
        `the image declares ${width}x${height} = ${width * height} pixels, more than ${message.maxPixelsName} ${message.maxPixels}; it was not decoded`,
      );
    }
    let image;
    try {
      // decodeImage's two paths, the fast one on this thread: a decode worker is one core's
      // worth of decoding, not a queue onto libuv's (process-wide, 4-thread) pool.
      const opts = { size: pre.pre.imageSize, resize: pre.pre.resize };
      image = decodePlainJpegSync(bytes, opts) ?? (await decodeWithLibvips(bytes, opts));
    } catch (err) {
      throw new Rejected('undecodable', describeDecodeError(err));
    }
    const row = preprocessImage(image.data, pre);
    reply = { task, ok: true, row, width, height, decodeMs: performance.now() - started };
    transfer = [row.buffer as ArrayBuffer];
  } catch (err) {
    if (err instanceof Rejected) reply = { task, ok: false, reason: err.reason, message: err.message };
    else reply = { task, ok: false, reason: 'undecodable', message: (err as Error).message };
  }
  parentPort!.postMessage(reply, transfer);
}

parentPort!.on('message', (message: DecodeRequest) => {
  switch (message.type) {
    case 'configure':
      prepared.set(message.id, preparePreprocessing(message.pre));
      break;
    case 'release':
      prepared.delete(message.id);
      break;
    case 'decode':
      void decode(message);
      break;
  }
});
