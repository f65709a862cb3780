/**
 * Reading a raw request body (binary tensors, images) into one buffer: the bytes are copied once,
 * from the socket's chunks into a buffer of the declared Content-Length, instead of fastify's
 * `parseAs: 'buffer'` (an array of chunks, then Buffer.concat). For a binary-extension infer body
 * (`Inference-Header-Content-Length`), the body is placed so that the tensor bytes after the
 * JSON header start on a 4-byte boundary: the FP32 check and the copy into the batch read them
 * as a Float32Array view, with no realigning copy (a 618 KB image each).
 *
 * The limits and errors are fastify's own (its rawBody): a Content-Length over the limit is
 * refused before a byte is read (413, FST_ERR_CTP_BODY_TOO_LARGE), so are more bytes than the
 * limit (a chunked body); a body whose length differs from its Content-Length gets 400
 * (FST_ERR_CTP_INVALID_CONTENT_LENGTH); a stream error gets 400 unless it carries a 4xx/5xx.
 * Memory: at most the limit per request, allocated only for a Content-Length within it.
 *
 * Binary infer bodies come from a BodyBufferPool and go back to it once the request's rows are
 * in a batch: a new 618 KB ArrayBuffer per request made V8 collect garbage for ~23% of the main
 * thread's busy time (a CPU profile at concurrency 32).
 */
import { errorCodes } from 'fastify';

export type BodyDone = (err: Error | null, body?: Buffer) => void;

interface Payload extends NodeJS.ReadableStream {
  receivedEncodedLength?: number;
}

/**
 * Reusable body buffers, by capacity (rounded up to 64 KiB, so that bodies of one tensor shape
 * whose JSON headers differ by a few bytes share them). Buffers are handed out by `take` and
 * come back by `release` once nothing reads the body any more; at most `maxRetainedBytes` are
 * kept (the rest are left to the GC), so the pool holds no more than that between bursts.
 */
export class BodyBufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private readonly owned = new WeakSet<ArrayBuffer>();
  private retainedBytes = 0;
  constructor(private readonly maxRetainedBytes: number) {}

  static capacityFor(bytes: number): number {
    return Math.ceil(bytes / 65536) * 65536 || 65536;
  }

  /** An ArrayBuffer of at least `bytes` bytes. */
  take(bytes: number): ArrayBuffer {
    const capacity = BodyBufferPool.capacityFor(bytes);
    const buffer = this.free.get(capacity)?.pop();
    if (buffer) {
      this.retainedBytes -= capacity;
      return buffer;
    }
    const fresh = new ArrayBuffer(capacity);
    this.owned.add(fresh);
    return fresh;
  }

  /** Give back a buffer from `take` (anything else, or one detached, is ignored). */
  release(buffer: ArrayBufferLike): void {
    if (!(buffer instanceof ArrayBuffer) || !this.owned.has(buffer) || buffer.byteLength === 0) return;
    const list = this.free.get(buffer.byteLength) ?? [];
    if (list.includes(buffer)) return; // released twice: keep it once
    if (this.retainedBytes + buffer.byteLength > this.maxRetainedBytes) {
      this.owned.delete(buffer); // left to the GC
      return;
    }
    list.push(buffer);
    this.free.set(buffer.byteLength, list);
    this.retainedBytes += buffer.byteLength;
  }

  /** Bytes held for reuse now. */
  get retained(): number {
    return this.retainedBytes;
  }
}

/** Bytes before the body in its buffer so that the part after `headerLength` bytes is 4-byte aligned. */
export function alignmentPad(headerLengthText: unknown): number {
  if (typeof headerLengthText !== 'string' || !/^\d+$/.test(headerLengthText)) return 0;
  return (4 - (Number(headerLengthText) % 4)) % 4;
}

/**
 * Read `payload` (at most `limit` bytes) into one Buffer. `contentLengthText` is the request's
 * Content-Length header (undefined: chunked); `pad` bytes are left before the body in its
 * ArrayBuffer (alignmentPad). With pad 0 and a Content-Length, the Buffer owns its whole
 * ArrayBuffer (so that it can be transferred to a worker). With a `pool`, a body of known
 * length is read into one of its buffers (whose caller then releases it).
 */
export function readBody(payload: Payload, contentLengthText: string | undefined, limit: number, pad: number, done: BodyDone, pool?: BodyBufferPool): void {
  const contentLength = contentLengthText === undefined ? Number.NaN : Number(contentLengthText);
  if (contentLength > limit) {
    done(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE());
    return;
  }
  const known = Number.isInteger(contentLength) && contentLength >= 0;
  // Known length: one buffer, filled as chunks arrive. Unknown (chunked): chunks, joined once.
  const target = known ? Buffer.from(pool ? pool.take(pad + contentLength) : new ArrayBuffer(pad + contentLength), pad, contentLength) : undefined;
  const chunks: Buffer[] = [];
  let received = 0;
  let finished = false;

  const finish = (err: Error | null, body?: Buffer) => {
    if (finished) return;
    finished = true;
    payload.removeListener('data', onData);
    payload.removeListener('end', onEnd);
    payload.removeListener('error', onEnd);
    if (err && target && pool) pool.release(target.buffer);
    done(err, body);
  };
  function onData(chunk: Buffer | string): void {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    const at = received;
    received += bytes.length;
    if (received > limit || (payload.receivedEncodedLength ?? 0) > limit) {
      finish(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE());
      return;
    }
    if (target) {
      // More bytes than declared: answered as fastify does, once the stream ends.
      if (received <= contentLength) target.set(bytes, at);
    } else {
      chunks.push(bytes);
    }
  }
  function onEnd(err?: Error & { statusCode?: number }): void {
    if (err != null) {
      if (!(typeof err.statusCode === 'number' && err.statusCode >= 400)) err.statusCode = 400;
      finish(err);
      return;
    }
    if (known && (payload.receivedEncodedLength || received) !== contentLength) {
      finish(new errorCodes.FST_ERR_CTP_INVALID_CONTENT_LENGTH());
      return;
    }
    if (target) {
      finish(null, target);
      return;
    }
    const body = Buffer.from(new ArrayBuffer(pad + received), pad, received);
    let offset = 0;
    for (const c of chunks) {
      body.set(c, offset);
      offset += c.length;
    }
    finish(null, body);
  }
  payload.on('data', onData);
  payload.on('end', onEnd);
  payload.on('error', onEnd);
  payload.resume();
}
