/**
 * A pool of worker threads that run the fast decode path (decode-worker.ts) on files, so that
 * reads, decodes and resizes run in parallel and the stage's own thread only orders, frames and
 * writes records. DecodeStage uses one worker per core by default (defaultDecodeWorkers): on 2
 * cores that made `scan | decode | batch` ~12% faster than decoding on libuv's thread pool and
 * resizing on the stage's thread, once the batch stage no longer held the pipeline back.
 */
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import type { DecodeOptions } from './decode';
import type { DecodeReply, DecodeTask } from './decode-worker';

export type PoolResult = { kind: 'image'; data: Uint8Array } | { kind: 'other'; bytes: Buffer };

interface Pending {
  resolve: (result: PoolResult) => void;
  reject: (err: Error) => void;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
  exited: boolean;
}

/**
 * How long `close` waits for a worker to finish the image it is decoding before terminating it
 * (a decode takes milliseconds; terminating is the last resort, see `close`).
 */
const CLOSE_TIMEOUT_MS = 10_000;

/** A decode worker thread died: the pool cannot go on (not a fault of the file being decoded). */
export class DecodePoolError extends Error {}

export class DecodePool {
  private readonly slots: Slot[];
  private nextId = 0;
  private closed = false;
  /** Set when a worker died unexpectedly; every later decode() rejects with it. */
  private failure: DecodePoolError | undefined;
  /** Set to 1 by `close`: workers skip the tasks still queued to them (decode-worker.ts). */
  private readonly stop = new Int32Array(new SharedArrayBuffer(4));

  constructor(readonly size: number) {
    this.slots = Array.from({ length: size }, () => this.start());
  }

  private start(): Slot {
    const worker = new Worker(join(__dirname, 'decode-worker.js'), { workerData: { stop: this.stop } });
    const slot: Slot = { worker, pending: new Map(), exited: false };
    worker.unref(); // referenced only while it has work (see decode())
    worker.on('message', (reply: DecodeReply) => {
      const task = slot.pending.get(reply.id);
      if (!task) return;
      slot.pending.delete(reply.id);
      if (slot.pending.size === 0) worker.unref();
      if (reply.kind === 'image') task.resolve({ kind: 'image', data: reply.data });
      else if (reply.kind === 'other') task.resolve({ kind: 'other', bytes: Buffer.from(reply.bytes.buffer, reply.bytes.byteOffset, reply.bytes.length) });
      else task.reject(Object.assign(new Error(reply.message), reply.code ? { code: reply.code } : {}));
    });
    const fail = (reason: string) => {
      this.failure ??= new DecodePoolError(`a decode worker thread died (${reason})`);
      for (const task of slot.pending.values()) task.reject(this.failure);
      slot.pending.clear();
    };
    worker.on('error', (err) => fail(err.message));
    worker.on('exit', (code) => {
      slot.exited = true;
      if (!this.closed) fail(`exit code ${code}`);
    });
    return slot;
  }

  /** Read and decode the file at `path` in the least busy worker. */
  decode(path: string, opts: DecodeOptions): Promise<PoolResult> {
    if (this.closed) return Promise.reject(new Error('decode pool is closed'));
    if (this.failure) return Promise.reject(this.failure);
    let slot = this.slots[0];
    for (const s of this.slots) if (s.pending.size < slot.pending.size) slot = s;
    const id = this.nextId++;
    return new Promise<PoolResult>((resolve, reject) => {
      if (slot.pending.size === 0) slot.worker.ref();
      slot.pending.set(id, { resolve, reject });
      const task: DecodeTask = { id, path, opts };
      slot.worker.postMessage(task);
    });
  }

  /**
   * Stop the workers (pending decodes are rejected). Each worker finishes the image it is in
   * the middle of, skips what is queued and exits by itself: `Worker.terminate()` during a
   * TurboJPEG call aborted the whole process (the addon's C++ exception on a terminating
   * thread calls std::terminate: SIGABRT, exit 134, when e.g. `prepare` stopped at a bad batch
   * size while images were being decoded). Terminating is kept for a worker stuck past
   * CLOSE_TIMEOUT_MS.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.stop, 0, 1);
    await Promise.all(
      this.slots.map(async (slot) => {
        for (const task of slot.pending.values()) task.reject(new Error('decode pool closed'));
        slot.pending.clear();
        if (slot.exited) return;
        const exited = once(slot.worker, 'exit');
        slot.worker.ref();
        slot.worker.postMessage('close');
        const timer = setTimeout(() => void slot.worker.terminate(), CLOSE_TIMEOUT_MS);
        await exited.catch(() => undefined);
        clearTimeout(timer);
      }),
    );
  }
}
