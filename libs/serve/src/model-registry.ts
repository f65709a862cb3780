/**
 * The served models: one slot per `--model`, each holding the version that answers now, its
 * statistics, and the load that replaces it (a reload loads the file again beside the running
 * version and swaps; the old one is unloaded once its last request is answered).
 */
import { performance } from 'node:perf_hooks';
import type { FastifyBaseLogger } from 'fastify';
import type { Batcher } from './batcher';
import { ModelVersion } from './batcher';
import type { DecodePool } from './decode-pool';
import { ModelLoadError } from './errors';
import type { InferencePool } from './inference-pool';
import type { ServerMetrics } from './metrics';
import type { ModelConfig } from './options';

/** Per model, what `GET /v2/models/{m}/stats` reports (Triton's statistics extension, plus a mean). */
export class ModelStats {
  inferenceCount = 0; // images
  executionCount = 0; // onnxruntime runs
  successCount = 0;
  successNs = 0;
  failCount = 0;
  failNs = 0;
  queueCount = 0;
  queueNs = 0;
  computeCount = 0;
  computeNs = 0;
  lastInference = 0;

  /** A request's outcome, timed from its arrival. */
  count(ok: boolean, ns: number): void {
    if (ok) {
      this.successCount++;
      this.successNs += ns;
    } else {
      this.failCount++;
      this.failNs += ns;
    }
  }

  /** One onnxruntime run of `n` images that took `ms`, after the queue delays `queueMs` of its requests. */
  countBatch(n: number, ms: number, queueMs: number[]): void {
    this.inferenceCount += n;
    this.executionCount += 1;
    this.computeCount += 1;
    this.computeNs += ms * 1e6;
    this.queueCount += queueMs.length;
    for (const q of queueMs) this.queueNs += q * 1e6;
    this.lastInference = Date.now();
  }
}

export class ModelSlot {
  current?: ModelVersion;
  loading?: Promise<ModelVersion>;
  lastError?: string;
  nextNumber = 1;
  readonly stats = new ModelStats();
  constructor(readonly config: ModelConfig) {}
  get name(): string {
    return this.config.name;
  }

  /** `GET /v2/models/{m}/stats`'s entry for this model. */
  statsResponse() {
    const s = this.stats;
    return {
      name: this.name,
      version: this.current ? String(this.current.number) : '',
      last_inference: s.lastInference,
      inference_count: s.inferenceCount,
      execution_count: s.executionCount,
      mean_batch_size: s.executionCount ? s.inferenceCount / s.executionCount : 0,
      inference_stats: {
        success: { count: s.successCount, ns: Math.round(s.successNs) },
        fail: { count: s.failCount, ns: Math.round(s.failNs) },
        queue: { count: s.queueCount, ns: Math.round(s.queueNs) },
        compute_infer: { count: s.computeCount, ns: Math.round(s.computeNs) },
      },
    };
  }
}

export interface ReloadResult {
  model: string;
  ok: boolean;
  version?: number;
  error?: string;
  ms: number;
}

export interface RegistryParts {
  pool: InferencePool;
  decoders: DecodePool;
  batcher: Batcher;
  metrics: ServerMetrics;
  log: FastifyBaseLogger;
  /** Called after every load (the readiness gauge follows the slots). */
  onChange(): void;
}

export class ModelRegistry {
  readonly slots: Map<string, ModelSlot>;
  private nextVersionId = 1;

  constructor(
    models: ModelConfig[],
    private readonly parts: RegistryParts,
  ) {
    this.slots = new Map(models.map((m) => [m.name, new ModelSlot(m)]));
  }

  /** Every model has a version that answers. */
  get allLoaded(): boolean {
    return [...this.slots.values()].every((s) => s.current);
  }

  /** Load `slot`'s file (once at a time per slot) and make it the version that answers. */
  load(slot: ModelSlot): Promise<ModelVersion> {
    if (slot.loading) return slot.loading;
    slot.loading = this.loadNew(slot).finally(() => {
      slot.loading = undefined;
    });
    return slot.loading;
  }

  private async loadNew(slot: ModelSlot): Promise<ModelVersion> {
    const { pool, decoders, batcher, metrics, log } = this.parts;
    const id = this.nextVersionId++;
    const started = performance.now();
    try {
      const description = await pool.loadAll(id, slot.config);
      const version = new ModelVersion(id, slot.nextNumber++, description, new Date());
      if (description.preprocessing) decoders.configure(id, description.preprocessing);
      batcher.add(version);
      const old = slot.current;
      slot.current = version;
      slot.lastError = undefined;
      metrics.modelLoads.inc({ model: slot.name, result: 'ok' });
      metrics.modelVersion.set({ model: slot.name }, version.number);
      log.info(
        {
          model: slot.name,
          version: version.number,
          path: slot.config.path,
          ms: Math.round(performance.now() - started),
          input: `${description.input.datatype} [${description.input.shape}]`,
          classes: description.numClasses,
          classify: description.preprocessing ? true : description.noClassifyReason,
        },
        old ? 'model reloaded' : 'model loaded',
      );
      if (old) this.retire(slot, old);
      this.parts.onChange();
      return version;
    } catch (err) {
      const message = (err as Error).message;
      slot.lastError = message;
      metrics.modelLoads.inc({ model: slot.name, result: 'failed' });
      log.error(
        { model: slot.name, path: slot.config.path, err: message },
        slot.current ? `reload failed; version ${slot.current.number} keeps serving` : 'model failed to load',
      );
      throw err instanceof ModelLoadError ? err : new ModelLoadError(message, { cause: err });
    }
  }

  /** The replaced version leaves once its last request is answered. */
  private retire(slot: ModelSlot, old: ModelVersion): void {
    const { pool, decoders, batcher, log } = this.parts;
    old.retire(() => {
      batcher.remove(old);
      pool.unloadAll(old.id);
      decoders.release(old.id);
      log.info({ model: slot.name, version: old.number }, 'previous version drained and unloaded');
    });
  }

  /** Load the named models' files again (all when none named), one at a time: two at once would double the peak memory. */
  async reload(names?: string[]): Promise<ReloadResult[]> {
    const chosen = names ? names.map((n) => this.slots.get(n)).filter((s): s is ModelSlot => !!s) : [...this.slots.values()];
    const results: ReloadResult[] = [];
    for (const slot of chosen) {
      const started = performance.now();
      try {
        const v = await this.load(slot);
        results.push({ model: slot.name, ok: true, version: v.number, ms: performance.now() - started });
      } catch (err) {
        results.push({ model: slot.name, ok: false, error: (err as Error).message, ms: performance.now() - started });
      }
    }
    return results;
  }
}
