/**
 * Dynamic batching (Triton's dynamic batcher, simplified): requests for a model version wait in
 * its queue until `maxBatch` images are there or the oldest has waited `maxQueueDelayMs` (or no
 * other request is on its way: then there is nobody to wait for), then go to an idle inference
 * worker as one onnxruntime run; the batch's outputs are split back to
 * the requests row by row. With several idle workers, the queue is shared out among them (a
 * batch of 20 with two idle workers runs as 10 + 10, not 20 + nothing).
 *
 * Rows are copied once, from each request's buffer into a batch buffer that is transferred to
 * the worker and back (buffers are reused, one per worker and size). A request still queued at
 * its deadline is taken out and rejected (503); one whose client went away is taken out by
 * `cancel` and never runs.
 */
import { performance } from 'node:perf_hooks';
import { HttpError, unavailable } from './errors';
import type { InferencePool, WorkerSlot } from './inference-pool';
import type { ModelDescription } from './model-description';

export interface BatchItem {
  /** Images (rows) in this request. */
  n: number;
  /** n x inputLength values as bytes (float32 little-endian or uint8). */
  data: Uint8Array;
  /** Outputs wanted. */
  outputs: string[];
  /** performance.now() deadline: still queued then → 503. */
  deadline: number;
  resolve: (result: ItemResult) => void;
  reject: (err: Error) => void;
  /** Set by the batcher. */
  enqueuedAt?: number;
  timer?: NodeJS.Timeout;
}

export interface ItemResult {
  /** Per output, this request's n rows. */
  outputs: Map<string, Float32Array>;
  queueMs: number;
  inferenceMs: number;
  /** Images in the onnxruntime run this request was part of. */
  batchSize: number;
}

/**
 * A loaded version of a model. Every request that uses it holds a reference from the moment it
 * picks the version (before decoding) until it is answered, so a reload that replaces it
 * unloads it only once the last of them is done (`retire`).
 */
export class ModelVersion {
  readonly queue: BatchItem[] = [];
  queuedImages = 0;
  inFlight = 0;
  refs = 0;
  /**
   * Requests that hold this version and have not queued their rows yet (their body is being
   * read, parsed or decoded). When none are, nothing is on its way to join a batch, so a lone
   * request does not wait for the queue delay (one client at a time pays no delay at all).
   */
  preparing = 0;
  /** Set when a newer version replaced this one: `onDrained` runs once its last request is answered. */
  retired = false;
  private onDrained?: () => void;
  constructor(
    readonly id: number,
    readonly number: number,
    readonly description: ModelDescription,
    readonly loadedAt: Date,
  ) {}

  get bytesPerRow(): number {
    return this.description.inputLength * (this.description.input.datatype === 'FP32' ? 4 : 1);
  }

  acquire(): void {
    this.refs++;
  }

  release(): void {
    this.refs--;
    this.maybeDrained();
  }

  /** Stop giving this version to new requests; `onDrained` runs when the last one is answered. */
  retire(onDrained: () => void): void {
    this.retired = true;
    this.onDrained = onDrained;
    this.maybeDrained();
  }

  private maybeDrained(): void {
    if (this.retired && this.refs === 0 && this.onDrained) {
      const done = this.onDrained;
      this.onDrained = undefined;
      done();
    }
  }
}

export interface BatcherOptions {
  maxBatch: number;
  maxQueueDelayMs: number;
  /** The deadline a request gets. */
  timeoutMs: number;
  /** How messages name `timeoutMs` (the CLI: `--timeout-ms`); default `timeoutMs`. */
  timeoutMsName?: string;
}

export interface BatchObserver {
  onBatch?(version: ModelVersion, batchSize: number, inferenceMs: number, queueMs: number[]): void;
  onQueueDepth?(version: ModelVersion): void;
  onBatchError?(version: ModelVersion, err: Error): void;
}

export class Batcher {
  private readonly versions = new Set<ModelVersion>();
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  /** Dispatch without waiting for the delay (shutting down: finish the queue quickly). */
  flushing = false;
  private readonly spare = new Map<number, ArrayBuffer[]>();

  constructor(
    private readonly pool: InferencePool,
    private readonly options: BatcherOptions,
    private readonly observer: BatchObserver = {},
  ) {}

  add(version: ModelVersion): void {
    this.versions.add(version);
  }

  /** Queue a request; `item.resolve` gets its rows of the outputs. */
  enqueue(version: ModelVersion, item: BatchItem): void {
    const now = performance.now();
    if (item.deadline <= now) {
      item.reject(unavailable('the request timed out before it was queued', 'timeout'));
      return;
    }
    item.enqueuedAt = now;
    item.timer = setTimeout(() => {
      if (this.take(version, item))
        item.reject(
          unavailable(
            `the request was still queued ${this.options.timeoutMs} ms after it arrived (${this.options.timeoutMsName ?? 'timeoutMs'} ${this.options.timeoutMs}); the server is overloaded`,
            'timeout',
          ),
        );
    }, item.deadline - now);
    version.queue.push(item);
    version.queuedImages += item.n;
    this.observer.onQueueDepth?.(version);
    this.pump();
  }

  /** Take a queued item out (client gone); false when it is already running or done. */
  cancel(version: ModelVersion, item: BatchItem): boolean {
    return this.take(version, item);
  }

  private take(version: ModelVersion, item: BatchItem): boolean {
    const i = version.queue.indexOf(item);
    if (i < 0) return false;
    version.queue.splice(i, 1);
    version.queuedImages -= item.n;
    clearTimeout(item.timer);
    this.observer.onQueueDepth?.(version);
    return true;
  }

  get queuedImages(): number {
    let n = 0;
    for (const v of this.versions) n += v.queuedImages;
    return n;
  }

  get inFlightBatches(): number {
    let n = 0;
    for (const v of this.versions) n += v.inFlight;
    return n;
  }

  /** Dispatch what can go now; arm the timer for what must wait. */
  pump(): void {
    for (;;) {
      const idle = this.pool.idleSlots();
      if (idle.length === 0) return;
      const now = performance.now();
      let best: ModelVersion | undefined;
      let wakeAt = Infinity;
      for (const v of this.versions) {
        if (v.queue.length === 0) continue;
        const head = v.queue[0].enqueuedAt!;
        const readyAt = v.queuedImages >= this.options.maxBatch || this.flushing || v.preparing === 0 ? head : head + this.options.maxQueueDelayMs;
        if (readyAt <= now) {
          if (!best || head < best.queue[0].enqueuedAt!) best = v;
        } else {
          wakeAt = Math.min(wakeAt, readyAt);
        }
      }
      if (!best) {
        this.arm(wakeAt);
        return;
      }
      // Share the queue out among the idle workers, up to maxBatch each.
      const target = Math.min(this.options.maxBatch, Math.ceil(best.queuedImages / idle.length));
      this.dispatch(best, idle[0], target);
    }
  }

  private arm(at: number): void {
    if (at === Infinity || (this.timer && at >= this.timerAt)) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.timerAt = Infinity;
        this.pump();
      },
      Math.max(0, at - performance.now()),
    );
  }

  private buffer(bytes: number): ArrayBuffer {
    return this.spare.get(bytes)?.pop() ?? new ArrayBuffer(bytes);
  }

  private giveBack(buffer: ArrayBuffer): void {
    if (buffer.byteLength === 0) return; // detached
    const list = this.spare.get(buffer.byteLength) ?? [];
    if (list.length < this.pool.slots.length + 1) list.push(buffer);
    this.spare.set(buffer.byteLength, list);
  }

  private dispatch(version: ModelVersion, slot: WorkerSlot, target: number): void {
    const items: BatchItem[] = [];
    let n = 0;
    while (version.queue.length > 0 && (items.length === 0 || n + version.queue[0].n <= target)) {
      const item = version.queue.shift()!;
      clearTimeout(item.timer);
      items.push(item);
      n += item.n;
    }
    version.queuedImages -= n;
    this.observer.onQueueDepth?.(version);
    const rowBytes = version.bytesPerRow;
    const input = this.buffer(Math.max(this.options.maxBatch * rowBytes, n * rowBytes));
    const bytes = new Uint8Array(input);
    let offset = 0;
    const outputs = new Set<string>();
    for (const item of items) {
      bytes.set(item.data.subarray(0, item.n * rowBytes), offset);
      offset += item.n * rowBytes;
      for (const o of item.outputs) outputs.add(o);
    }
    const started = performance.now();
    const queueMs = items.map((item) => started - item.enqueuedAt!);
    version.inFlight++;
    this.pool
      .run(slot, version.id, input, n, [...outputs])
      .then(
        (result) => {
          this.giveBack(result.input);
          this.observer.onBatch?.(version, n, result.ms, queueMs);
          let row = 0;
          items.forEach((item, i) => {
            const mine = new Map<string, Float32Array>();
            for (const name of item.outputs) {
              const all = result.outputs.get(name)!;
              const width = all.length / n;
              mine.set(name, all.slice(row * width, (row + item.n) * width));
            }
            row += item.n;
            item.resolve({ outputs: mine, queueMs: queueMs[i], inferenceMs: result.ms, batchSize: n });
          });
        },
        (err: Error & { input?: ArrayBuffer }) => {
          if (err.input) this.giveBack(err.input);
          this.observer.onBatchError?.(version, err);
          const failure = new HttpError(500, `model ${version.description.name}: ${err.message}`, 'inference_failed');
          for (const item of items) item.reject(failure);
        },
      )
      .finally(() => {
        version.inFlight--;
      });
  }

  /** Forget a version (retired and drained). */
  remove(version: ModelVersion): void {
    this.versions.delete(version);
  }

  /** Reject everything still queued (drain timeout): each gets a 503. */
  rejectQueued(message: string): void {
    for (const v of this.versions) {
      for (const item of v.queue.splice(0)) {
        clearTimeout(item.timer);
        item.reject(unavailable(message, 'shutting_down'));
      }
      v.queuedImages = 0;
      this.observer.onQueueDepth?.(v);
    }
  }

  close(): void {
    clearTimeout(this.timer);
  }
}
