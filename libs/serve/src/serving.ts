/**
 * What the routes share: the server's parts (options, metrics, models, batcher, decoders,
 * traffic) and the steps every inference request takes — find the model and its version, count
 * the request as on its way to the batch queue, queue its rows, count its outcome.
 */
import { performance } from 'node:perf_hooks';
import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import type { BodyBufferPool } from './binary-body';
import type { Batcher, BatchItem, ItemResult, ModelVersion } from './batcher';
import type { DecodePool } from './decode-pool';
import { HttpError, notFound, unavailable } from './errors';
import type { ServerMetrics } from './metrics';
import type { ModelRegistry, ModelSlot } from './model-registry';
import type { ResolvedServeOptions } from './options';
import type { Traffic } from './request-hooks';

export interface ServerParts {
  options: ResolvedServeOptions;
  metrics: ServerMetrics;
  log: FastifyBaseLogger;
  registry: ModelRegistry;
  batcher: Batcher;
  decoders: DecodePool;
  traffic: Traffic;
  /** Where binary infer bodies are read into, and go back once their rows are batched. */
  bodies?: BodyBufferPool;
  /** How answers and logs name an option (the CLI: its flag). */
  nameOf(key: string): string;
}

/** The steps of an inference request, over the server's parts. */
export class Serving {
  constructor(readonly parts: ServerParts) {}

  /** The slot of model `name` (the request is counted for it from now on); 404 if none. */
  slotFor(request: FastifyRequest, name: string): ModelSlot {
    const { slots } = this.parts.registry;
    const slot = slots.get(name);
    if (!slot) throw notFound(`no model named "${name}" (served: ${[...slots.keys()].join(', ')})`);
    request.state.model = name;
    return slot;
  }

  /** The version that answers (503 while none is loaded); `wanted` must be its number. */
  versionOf(slot: ModelSlot, wanted?: string): ModelVersion {
    const v = slot.current;
    if (!v) throw unavailable(`model ${slot.name} is not loaded${slot.lastError ? `: ${slot.lastError}` : ''}`, 'not_ready');
    if (wanted !== undefined && wanted !== String(v.number)) throw notFound(`model ${slot.name} has no version ${wanted} (it serves version ${v.number})`);
    return v;
  }

  /**
   * Count a request as on its way to the batch queue of `version` until the returned function is
   * called (once it queues its rows, or fails before): the batcher waits for such requests.
   */
  preparing(version: ModelVersion): () => void {
    const { batcher } = this.parts;
    version.preparing++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      version.preparing--;
      // A batch may have been waiting for this request only.
      if (version.preparing === 0) batcher.pump();
    };
  }

  /** Queue n rows for `version`; resolves with the request's rows of the outputs (499 if the client leaves first). */
  infer(request: FastifyRequest, version: ModelVersion, n: number, data: Uint8Array, outputs: string[]): Promise<ItemResult> {
    const { batcher } = this.parts;
    return new Promise<ItemResult>((resolve, reject) => {
      const signal = request.state.abort.signal;
      const item: BatchItem = { n, data, outputs, deadline: request.state.deadline, resolve, reject };
      if (signal.aborted) return reject(new HttpError(499, 'client closed the connection', 'client_closed'));
      signal.addEventListener(
        'abort',
        () => {
          if (batcher.cancel(version, item)) reject(new HttpError(499, 'client closed the connection', 'client_closed'));
        },
        { once: true },
      );
      batcher.enqueue(version, item);
    });
  }

  countOutcome(slot: ModelSlot, request: FastifyRequest, ok: boolean): void {
    slot.stats.count(ok, (performance.now() - request.state.arrivedAt) * 1e6);
  }
}
