/**
 * Loaders: where the training loop gets its batches from.
 *
 * - `ThreadedLoader` (para_load: true, the default): a worker thread reads shards, augments and
 *   hands over ready float32 batches. The batch buffers are transferred (zero copy) and come
 *   back when the engine is done with them (`release`), so exactly `queueDepth` buffers exist:
 *   memory is queueDepth x batch, and the worker stops producing when all are in use (a bounded
 *   queue with backpressure). The training thread never touches pixels.
 * - `InlineLoader` (para_load: false): the same producer on the training thread, for debugging
 *   and for comparison (the worker must give identical batches).
 * - `StdinBatchStream`: float32 batch records from a record stream (`read | augment | train --stdin`).
 */
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { AlexnetStreamError, check, InputError, type MeanImage } from '@alexnet-stream/core';
import { readMeanNpy, type StreamRecord, StreamTally } from '@alexnet-stream/stream-io';
import type { EngineBatch } from '../engine';
import { BatchProducer, type LoaderSetup, makeProducer, type PassRequest, planPass } from './loader-core';
import { applyInputScale } from './input-scale';

export interface LoadedBatch extends EngineBatch {
  /** Iteration index within the pass. */
  index: number;
}

export interface BatchStream {
  /** Batches of the pass (from its start iteration to its end); Infinity when unknown (stdin). */
  readonly iterations: number;
  /** The next batch, or null at the end of the pass. */
  next(): Promise<LoadedBatch | null>;
  /** Give a batch's buffer back once the engine is done with it (it is unusable afterwards). */
  release(batch: LoadedBatch): void;
  /** Stop the pass early (e.g. --max-iters); queued batches are dropped. */
  cancel(): void;
}

export interface BatchLoader {
  /** Batches of a whole pass for this worker (without a start offset). */
  passIterations(request: Omit<PassRequest, 'startIteration'>): number;
  open(request: PassRequest): BatchStream;
  close(): Promise<void>;
}

type WorkerMessage =
  | { type: 'batch'; passId: number; index: number; size: number; data: Float32Array; labels: Int32Array }
  | { type: 'end'; passId: number }
  | { type: 'waiting' }
  | { type: 'error'; passId: number | null; message: string; exitCode: number; code?: string };

class PassStream implements BatchStream {
  private readonly queue: LoadedBatch[] = [];
  private ended = false;
  private error: Error | undefined;
  private waiter: { resolve: (b: LoadedBatch | null) => void; reject: (e: Error) => void } | undefined;
  cancelled = false;

  constructor(
    readonly iterations: number,
    private readonly onRelease: (batch: LoadedBatch) => void,
    private readonly onCancel: () => void,
  ) {}

  push(batch: LoadedBatch): void {
    if (this.cancelled) {
      this.onRelease(batch);
      return;
    }
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(batch);
    } else this.queue.push(batch);
  }

  end(error?: Error): void {
    this.ended = true;
    this.error = error;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      if (error) w.reject(error);
      else w.resolve(null);
    }
  }

  next(): Promise<LoadedBatch | null> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.ended) return this.error ? Promise.reject(this.error) : Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  release(batch: LoadedBatch): void {
    this.onRelease(batch);
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    for (const b of this.queue.splice(0)) this.onRelease(b);
    this.onCancel();
    this.end();
  }
}

/** The loader thread's error, rebuilt on this side of the thread boundary (class by exit code, and its code). */
function workerError(message: string, exitCode: number, code: string | undefined): Error {
  return exitCode === 2 ? new InputError(message, { code }) : new AlexnetStreamError(message, { exitCode, code });
}

export class ThreadedLoader implements BatchLoader {
  private readonly worker: Worker;
  private nextPassId = 1;
  private readonly passes = new Map<number, PassStream>();
  private fatal: Error | undefined;
  /** Times the loader thread found every buffer in use and waited for one (a full queue: the engine is the slower side). */
  stalls = 0;
  private stallWaiters: { count: number; resolve: () => void }[] = [];

  constructor(private readonly setup: LoaderSetup) {
    this.worker = new Worker(join(__dirname, 'loader-worker.js'), { workerData: setup });
    this.worker.on('message', (message: WorkerMessage) => this.onMessage(message));
    this.worker.on('error', (err) => this.failAll(err));
    this.worker.on('exit', (code) => {
      if (code !== 0 && !this.fatal) this.failAll(new AlexnetStreamError(`the loader thread exited with code ${code}`, { code: 'ERR_LOADER_THREAD' }));
    });
  }

  passIterations(request: Omit<PassRequest, 'startIteration'>): number {
    return planPass(this.setup, { ...request, startIteration: 0 }).iterations;
  }

  private failAll(err: Error): void {
    this.fatal = err;
    for (const pass of this.passes.values()) pass.end(err);
    this.passes.clear();
  }

  /** Resolves once the loader thread has waited for a free buffer `count` times in all (`stalls`). */
  stalled(count = 1): Promise<void> {
    if (this.stalls >= count) return Promise.resolve();
    return new Promise((resolve) => this.stallWaiters.push({ count, resolve }));
  }

  private onMessage(message: WorkerMessage): void {
    if (message.type === 'waiting') {
      this.stalls += 1;
      const reached = this.stallWaiters.filter((w) => w.count <= this.stalls);
      this.stallWaiters = this.stallWaiters.filter((w) => w.count > this.stalls);
      for (const w of reached) w.resolve();
      return;
    }
    if (message.type === 'error' && message.passId === null) {
      this.failAll(workerError(message.message, message.exitCode, message.code));
      return;
    }
    const pass = this.passes.get(message.passId!);
    if (message.type === 'batch') {
      const batch: LoadedBatch = { index: message.index, size: message.size, data: message.data, labels: message.labels };
      if (!pass) {
        this.recycle(batch);
        return;
      }
      pass.push(batch);
    } else if (pass) {
      this.passes.delete(message.passId!);
      pass.end(message.type === 'error' ? workerError(message.message, message.exitCode, message.code) : undefined);
    }
  }

  private recycle(batch: LoadedBatch): void {
    const buffer = batch.data.buffer as ArrayBuffer;
    if (buffer.byteLength === 0) return; // already handed back
    this.worker.postMessage({ type: 'recycle', buffer }, [buffer]);
  }

  open(request: PassRequest): BatchStream {
    const total = this.passIterations(request);
    const iterations = Math.max(0, total - request.startIteration);
    const passId = this.nextPassId++;
    const stream = new PassStream(
      iterations,
      (b) => this.recycle(b),
      () => {
        this.passes.delete(passId);
        this.worker.postMessage({ type: 'cancel', passId });
      },
    );
    if (this.fatal) {
      stream.end(this.fatal);
      return stream;
    }
    this.passes.set(passId, stream);
    this.worker.postMessage({ type: 'pass', passId, request });
    return stream;
  }

  async close(): Promise<void> {
    for (const pass of this.passes.values()) pass.end();
    this.passes.clear();
    this.fatal = this.fatal ?? new Error('the loader is closed');
    await this.worker.terminate();
  }
}

/** The same batches as `ThreadedLoader`, produced on the calling thread (para_load: false). */
export class InlineLoader implements BatchLoader {
  private mean: Promise<MeanImage> | undefined;
  private readonly buffers: Float32Array[] = [];

  constructor(private readonly setup: LoaderSetup) {}

  passIterations(request: Omit<PassRequest, 'startIteration'>): number {
    return planPass(this.setup, { ...request, startIteration: 0 }).iterations;
  }

  open(request: PassRequest): BatchStream {
    const plan = planPass(this.setup, request);
    const length = BatchProducer.outputLength(this.setup.batchSize, this.setup.crop);
    this.mean ??= readMeanNpy(this.setup.meanFile);
    let producer: BatchProducer | undefined;
    let j = request.startIteration;
    let cancelled = false;
    const buffers = this.buffers;
    const setup = this.setup;
    const meanPromise = this.mean;
    return {
      iterations: Math.max(0, plan.iterations - request.startIteration),
      async next(): Promise<LoadedBatch | null> {
        if (cancelled || j >= plan.iterations) return null;
        producer ??= makeProducer(setup, await meanPromise, request, plan);
        const data = buffers.pop() ?? new Float32Array(length);
        const produced = await producer.produce(j++, data);
        return { index: produced.index, size: produced.size, labels: produced.labels, data: data.subarray(0, produced.size * 3 * setup.crop * setup.crop) };
      },
      release(batch: LoadedBatch): void {
        buffers.push(new Float32Array(batch.data.buffer, 0, length));
      },
      cancel(): void {
        cancelled = true;
      },
    };
  }

  async close(): Promise<void> {}
}

export function createLoader(setup: LoaderSetup, paraLoad: boolean): BatchLoader {
  return paraLoad ? new ThreadedLoader(setup) : new InlineLoader(setup);
}

/**
 * float32 batch records from a decoded record stream (stdin): `read | augment | train --stdin`.
 * Each record must be NCHW float32 with `crop`-sized images and labels below `numClasses`;
 * anything else is an `InputError` naming the record. Batches are re-cut to `batchSize`
 * images, whatever size they arrived in (stored batches of 32 train at batch_size 8, or 8 at
 * 32), in order; the last one holds what is left. The stream must end with its trailer: one
 * that stops short is an `InputError` (the run fails rather than end an epoch as if whole).
 * With `inputScale` each record is multiplied by it (in place: the record is this stream's
 * own), as the shard loader does after its mean subtraction.
 * Memory: one batch being filled and the record being cut.
 */
export class StdinBatchStream implements BatchStream {
  readonly iterations = Infinity;
  private readonly iterator: AsyncIterator<StreamRecord>;
  private readonly tally = new StreamTally('stdin', ['batch'], 'train --stdin');
  private readonly imageLength: number;
  private index = 0;
  private recordNumber = 0;
  private done = false;
  /** The record being cut into batches, and how many of its images are taken. */
  private current: { data: Float32Array; labels: Int32Array; size: number } | undefined;
  private taken = 0;

  constructor(
    records: Readable,
    private readonly crop: number,
    private readonly numClasses: number,
    private readonly batchSize = Infinity,
    private readonly inputScale?: readonly number[],
  ) {
    if (batchSize !== Infinity) check.integer('batchSize', batchSize, { min: 1 });
    this.iterator = records[Symbol.asyncIterator]() as AsyncIterator<StreamRecord>;
    this.imageLength = 3 * crop * crop;
  }

  /** The next record's images, or false at the end of the stream (checked whole). */
  private async nextRecord(): Promise<boolean> {
    for (;;) {
      const r = await this.iterator.next();
      if (r.done) {
        this.tally.end(); // no trailer: the stream was cut short upstream
        return false;
      }
      this.recordNumber += 1;
      const record = r.value;
      const where = `stdin record ${this.recordNumber}`;
      this.tally.see(record, where);
      if (record.type === 'header') continue;
      if (record.type === 'trailer') return false;
      if (record.type !== 'batch') throw new InputError(`${where}: train --stdin reads batch records, not ${record.type} records`);
      if (record.dtype !== 'float32')
        throw new InputError(`${where}: train --stdin reads augmented float32 batches, this one is ${record.dtype} (pipe through augment first)`);
      const [n, c, h, w] = record.shape;
      if (c !== 3 || h !== this.crop || w !== this.crop) {
        throw new InputError(`${where}: ${c}x${h}x${w} images but the network takes 3x${this.crop}x${this.crop} (augment --crop ${this.crop})`);
      }
      for (const label of record.labels) {
        if (!(label >= 0 && label < this.numClasses))
          throw new InputError(`${where}: label ${label} outside 0..${this.numClasses - 1} (num_classes ${this.numClasses})`);
      }
      const data = record.data as Float32Array;
      if (this.inputScale) applyInputScale(data, n, c, h * w, this.inputScale);
      this.current = { data, labels: record.labels, size: n };
      this.taken = 0;
      return true;
    }
  }

  async next(): Promise<LoadedBatch | null> {
    if (this.done) return null;
    if (this.batchSize === Infinity) {
      // one batch per record, as it came
      if (!(await this.nextRecord())) {
        this.done = true;
        return null;
      }
      const { data, labels, size } = this.current!;
      this.current = undefined;
      return { index: this.index++, size, data, labels };
    }
    // Re-cut: a record of exactly batchSize images, taken whole, is passed on without a copy.
    if (!this.current || this.taken === this.current.size) {
      if (!(await this.nextRecord())) {
        this.done = true;
        return null;
      }
    }
    const cur = this.current!;
    if (this.taken === 0 && cur.size === this.batchSize) {
      this.taken = cur.size;
      return { index: this.index++, size: cur.size, data: cur.data, labels: cur.labels };
    }
    const data = new Float32Array(this.batchSize * this.imageLength);
    const labels = new Int32Array(this.batchSize);
    let filled = 0;
    while (filled < this.batchSize) {
      if (!this.current || this.taken === this.current.size) {
        if (!(await this.nextRecord())) {
          this.done = true;
          break;
        }
      }
      const src = this.current!;
      const count = Math.min(this.batchSize - filled, src.size - this.taken);
      data.set(src.data.subarray(this.taken * this.imageLength, (this.taken + count) * this.imageLength), filled * this.imageLength);
      labels.set(src.labels.subarray(this.taken, this.taken + count), filled);
      this.taken += count;
      filled += count;
    }
    if (filled === 0) return null;
    return {
      index: this.index++,
      size: filled,
      data: filled === this.batchSize ? data : data.subarray(0, filled * this.imageLength),
      labels: filled === this.batchSize ? labels : labels.subarray(0, filled),
    };
  }

  release(_batch: LoadedBatch): void {}

  cancel(): void {
    this.done = true;
    void this.iterator.return?.();
  }
}
