/**
 * Worker-thread side of DecodePool (decode-pool.ts): reads a file and decodes it by the fast
 * path (TurboJPEG + JS resize) on this thread, so that several images are resized at once and
 * the stage's own thread is left to order, frame and write records.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DEFAULT_MAX_IMAGE_FILE_BYTES, formatBytes, readRegularFileSync } from '@alexnet-stream/core';
import { decodePlainJpegSync } from './decode-fast';
import type { DecodeOptions } from './decode';

export interface DecodeTask {
  id: number;
  path: string;
  opts: DecodeOptions;
}

export type DecodeReply =
  | { id: number; kind: 'image'; data: Uint8Array }
  /** Not a plain JPEG (or libjpeg complained): the bytes, for libvips on the main thread. */
  | { id: number; kind: 'other'; bytes: Uint8Array }
  | { id: number; kind: 'error'; message: string; code?: string };

function handle(task: DecodeTask): { reply: DecodeReply; transfer: ArrayBuffer[] } {
  const { id } = task;
  try {
    // A worker may block: that is what it is for. Only a regular file, at most maxFileBytes
    // (the same limits as decode.ts's imageReadLimits; not imported from there: it loads sharp).
    const maxBytes = task.opts.maxFileBytes ?? DEFAULT_MAX_IMAGE_FILE_BYTES;
    const limitName = task.opts.maxFileBytesName ? `${task.opts.maxFileBytesName} (${formatBytes(maxBytes)})` : `the ${formatBytes(maxBytes)} limit`;
    const bytes = readRegularFileSync(task.path, { maxBytes, limitName });
    if (bytes.length === 0) return { reply: { id, kind: 'error', message: 'empty file (0 bytes)' }, transfer: [] };
    const image = decodePlainJpegSync(bytes, task.opts);
    if (image) return { reply: { id, kind: 'image', data: image.data }, transfer: [image.data.buffer as ArrayBuffer] };
    return { reply: { id, kind: 'other', bytes }, transfer: [] }; // copied: rare, and small
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return {
      reply: { id, kind: 'error', message: e instanceof Error ? e.message : String(err), code: typeof e?.code === 'string' ? e.code : undefined },
      transfer: [],
    };
  }
}

/** Set to 1 by the pool's `close`: the tasks still queued here are skipped, not decoded. */
const stop: Int32Array | undefined = (workerData as { stop?: Int32Array } | undefined)?.stop;

parentPort?.on('message', (task: DecodeTask | 'close') => {
  if (task === 'close') {
    parentPort!.close(); // nothing left to do: the thread ends on its own (see DecodePool.close)
    return;
  }
  if (stop && Atomics.load(stop, 0) !== 0) return; // closing: its promise was already rejected
  const { reply, transfer } = handle(task);
  parentPort!.postMessage(reply, transfer);
});
