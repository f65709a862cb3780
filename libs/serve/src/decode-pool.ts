/**
 * The main thread's side of the decoding workers: each image goes to the least busy worker
 * (its bytes transferred when they own their buffer), and comes back as a model input row.
 * The HTTP thread never decodes: a slow or huge image stalls one decoder, not other requests.
 */
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { AlexnetStreamError } from '@alexnet-stream/core';
import type { DecodeReply, DecodeRequest, RejectReason } from './decode-protocol';
import type { Preprocessing } from './model-description';

export class ImageRejected extends Error {
  constructor(
    readonly reason: RejectReason,
    message: string,
  ) {
    super(message);
  }
}

export interface DecodedRow {
  row: Float32Array | Uint8Array;
  width: number;
  height: number;
  decodeMs: number;
}

interface Slot {
  worker: Worker;
  pending: Map<number, { resolve: (r: DecodedRow) => void; reject: (e: Error) => void }>;
  dead: boolean;
}

export class DecodePool {
  private readonly slots: Slot[];
  private nextTask = 0;
  private closed = false;
  private readonly configured = new Map<number, Preprocessing>();

  constructor(
    size: number,
    private readonly onFatal: (err: Error) => void,
  ) {
    this.slots = Array.from({ length: size }, (_, i) => this.start(i));
  }

  private start(index: number): Slot {
    const worker = new Worker(join(__dirname, 'decode-worker.js'), { name: `decode-${index}` });
    const slot: Slot = { worker, pending: new Map(), dead: false };
    worker.on('message', (reply: DecodeReply) => {
      const p = slot.pending.get(reply.task);
      if (!p) return;
      slot.pending.delete(reply.task);
      if (reply.ok) p.resolve({ row: reply.row, width: reply.width, height: reply.height, decodeMs: reply.decodeMs });
      else p.reject(new ImageRejected(reply.reason, reply.message));
    });
    const die = (why: string) => {
      if (slot.dead) return;
      slot.dead = true;
      const err = new AlexnetStreamError(`decode worker ${index} died (${why})`, { code: 'ERR_DECODE_WORKER' });
      for (const p of slot.pending.values()) p.reject(err);
      slot.pending.clear();
      if (!this.closed) this.onFatal(err);
    };
    worker.on('error', (err) => die(err.message));
    worker.on('exit', (code) => die(`exit code ${code}`));
    return slot;
  }

  /** Make preprocessing `id` known to every worker (messages keep their order: before any task). */
  configure(id: number, pre: Preprocessing): void {
    this.configured.set(id, pre);
    for (const s of this.slots) s.worker.postMessage({ type: 'configure', id, pre } satisfies DecodeRequest);
  }

  release(id: number): void {
    this.configured.delete(id);
    for (const s of this.slots) if (!s.dead) s.worker.postMessage({ type: 'release', id } satisfies DecodeRequest);
  }

  get pending(): number {
    return this.slots.reduce((n, s) => n + s.pending.size, 0);
  }

  decode(pre: number, bytes: Buffer, maxPixels: number, maxPixelsName = 'maxPixels'): Promise<DecodedRow> {
    const live = this.slots.filter((s) => !s.dead);
    if (live.length === 0) return Promise.reject(new Error('no decode worker is running'));
    let slot = live[0];
    for (const s of live) if (s.pending.size < slot.pending.size) slot = s;
    const task = this.nextTask++;
    // Transfer the bytes when they are the whole of their buffer (a large body: its own
    // allocation); small bodies share Node's pool and are copied.
    const owns = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && !(bytes.buffer instanceof SharedArrayBuffer);
    const view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return new Promise<DecodedRow>((resolve, reject) => {
      slot.pending.set(task, { resolve, reject });
      const request: DecodeRequest = { type: 'decode', task, pre, bytes: view, maxPixels, maxPixelsName };
      slot.worker.postMessage(request, owns ? [bytes.buffer as ArrayBuffer] : []);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
