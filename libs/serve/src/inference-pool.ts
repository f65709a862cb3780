/**
 * The main thread's side of the inference workers: starts them, loads a model version on all
 * of them (a version is usable only when every worker has it, so any idle worker can take any
 * batch), hands a batch to one worker and gets its outputs back.
 */
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { disableOnnxRuntimeTelemetry } from '@alexnet-stream/onnx-export';
import { AlexnetStreamError } from '@alexnet-stream/core';
import { ModelLoadError } from './errors';
import type { InferenceReply, InferenceRequest } from './inference-protocol';
import type { ModelDescription } from './model-description';
import type { ModelConfig } from './options';

export interface RunResult {
  outputs: Map<string, Float32Array>;
  /** The input buffer, back for reuse. */
  input: ArrayBuffer;
  /** Time inside session.run, on the worker. */
  ms: number;
}

interface Pending<T> {
  resolve: (value: T) => void;
  reject: (err: Error) => void;
}

export class WorkerSlot {
  busy = false;
  dead = false;
  readonly runs = new Map<number, Pending<RunResult>>();
  readonly loads = new Map<number, Pending<ModelDescription>>();
  constructor(
    readonly index: number,
    readonly worker: Worker,
  ) {}
}

export class InferencePool {
  readonly slots: WorkerSlot[];
  private nextRunId = 0;
  private closed = false;

  /**
   * `onIdle` is called whenever a worker finishes a batch (the scheduler then dispatches the
   * next one); `onFatal` when a worker thread dies (the server cannot go on as configured).
   */
  constructor(
    size: number,
    readonly threads: number,
    private readonly onIdle: () => void,
    private readonly onFatal: (err: Error) => void,
  ) {
    disableOnnxRuntimeTelemetry(); // before any worker loads onnxruntime (onnx-export's onnxruntime.ts says why)
    this.slots = Array.from({ length: size }, (_, i) => this.start(i));
  }

  private start(index: number): WorkerSlot {
    const worker = new Worker(join(__dirname, 'inference-worker.js'), { name: `inference-${index}` });
    const slot = new WorkerSlot(index, worker);
    worker.on('message', (reply: InferenceReply) => this.onReply(slot, reply));
    const die = (why: string) => {
      if (slot.dead) return;
      slot.dead = true;
      const err = new AlexnetStreamError(`inference worker ${index} died (${why})`, { code: 'ERR_INFERENCE_WORKER' });
      for (const p of [...slot.runs.values(), ...slot.loads.values()]) p.reject(err);
      slot.runs.clear();
      slot.loads.clear();
      if (!this.closed) this.onFatal(err);
    };
    worker.on('error', (err) => die(err.message));
    worker.on('exit', (code) => die(`exit code ${code}`));
    return slot;
  }

  private onReply(slot: WorkerSlot, reply: InferenceReply): void {
    switch (reply.type) {
      case 'loaded':
      case 'load-failed': {
        const pending = slot.loads.get(reply.version);
        slot.loads.delete(reply.version);
        if (reply.type === 'loaded') pending?.resolve(reply.description);
        else pending?.reject(new ModelLoadError(reply.message));
        break;
      }
      case 'result':
      case 'run-failed': {
        const pending = slot.runs.get(reply.id);
        slot.runs.delete(reply.id);
        slot.busy = false;
        if (reply.type === 'result') {
          pending?.resolve({ outputs: new Map(reply.outputs.map((o) => [o.name, o.data])), input: reply.input, ms: reply.ms });
        } else {
          pending?.reject(Object.assign(new Error(`inference failed: ${reply.message}`), { input: reply.input }));
        }
        // After the batcher's .then (queued by resolve) has taken the input buffer back.
        queueMicrotask(this.onIdle);
        break;
      }
    }
  }

  private post(slot: WorkerSlot, message: InferenceRequest, transfer: ArrayBuffer[] = []): void {
    slot.worker.postMessage(message, transfer);
  }

  /**
   * Load `config` as `version` on every worker. Resolves with the model's description once all
   * have it; if any fails, unloads it from the others and rejects with the first reason.
   */
  async loadAll(version: number, config: ModelConfig): Promise<ModelDescription> {
    const live = this.slots.filter((s) => !s.dead);
    if (live.length === 0) throw new ModelLoadError('no inference worker is running');
    const results = await Promise.allSettled(
      live.map(
        (slot) =>
          new Promise<ModelDescription>((resolve, reject) => {
            slot.loads.set(version, { resolve, reject });
            this.post(slot, { type: 'load', version, config, threads: this.threads });
          }),
      ),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      this.unloadAll(version);
      throw failed.reason instanceof Error ? failed.reason : new ModelLoadError(String(failed.reason));
    }
    return (results[0] as PromiseFulfilledResult<ModelDescription>).value;
  }

  unloadAll(version: number): void {
    for (const slot of this.slots) if (!slot.dead) this.post(slot, { type: 'unload', version });
  }

  idleSlots(): WorkerSlot[] {
    return this.slots.filter((s) => !s.busy && !s.dead);
  }

  get busyCount(): number {
    return this.slots.filter((s) => s.busy).length;
  }

  /** Run a batch on `slot` (idle); `input` is transferred and comes back in the result. */
  run(slot: WorkerSlot, version: number, input: ArrayBuffer, n: number, outputs: string[]): Promise<RunResult> {
    const id = this.nextRunId++;
    slot.busy = true;
    return new Promise<RunResult>((resolve, reject) => {
      slot.runs.set(id, { resolve, reject });
      this.post(slot, { type: 'run', id, version, input, n, outputs }, [input]);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
