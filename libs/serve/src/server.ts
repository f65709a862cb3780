/**
 * The HTTP server (fastify): KServe v2 REST + `:classify` + `/metrics`, on top of the model
 * versions (inference workers), the decoders and the batcher. The HTTP thread only parses,
 * queues and answers; onnxruntime and image decoding run in worker threads.
 *
 * Request life: `onRequest` checks the token, refuses new work while draining (503) and admits
 * at most --max-queue requests at once (429 + Retry-After before the body is read, so memory is
 * bounded by --max-queue x the largest accepted body); the body is parsed within --body-limit
 * (413) by a parser for its content type (415 otherwise); the route picks the model version
 * (holding it until the answer, so that a reload never pulls it from under the request),
 * decodes images on the decode workers, queues rows in the batcher and answers. A client that
 * goes away takes its queued rows out of the queue and frees its slot.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import Fastify, { FastifyInstance, FastifyReply, FastifyRequest, LogController } from 'fastify';
import multipart from '@fastify/multipart';
import { topK } from '@alexnet-stream/onnx-export';
import { tokenChecker } from './auth';
import { Batcher, BatchItem, ItemResult, ModelVersion } from './batcher';
import { DecodePool, ImageRejected } from './decode-pool';
import { HttpError, ModelLoadError, notFound, unavailable } from './errors';
import { InferencePool } from './inference-pool';
import { buildInferResponse, inferRequestSchema, InferRequestBody, modelMetadataResponse, OutputTensor, parseInfer, splitBinaryBody } from './kserve';
import { ServerMetrics } from './metrics';
import type { ModelDescription } from './model-description';
import { isLoopback, ModelConfig, optionName, resolveServeOptions, ResolvedServeOptions, ServeOptions } from './options';

const SERVER_NAME = 'alexnet-stream';
const IMAGE_TYPES = ['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/tiff', 'image/avif'];
const HEALTH_ROUTES = new Set(['/v2/health/live', '/v2/health/ready']);

/** Per model, what `GET /v2/models/{m}/stats` reports (Triton's statistics extension, plus a mean). */
class ModelStats {
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
}

class ModelSlot {
  current?: ModelVersion;
  loading?: Promise<ModelVersion>;
  lastError?: string;
  nextNumber = 1;
  readonly stats = new ModelStats();
  constructor(readonly config: ModelConfig) {}
  get name(): string {
    return this.config.name;
  }
}

export interface ReloadResult {
  model: string;
  ok: boolean;
  version?: number;
  error?: string;
  ms: number;
}

export interface ServerHandle {
  app: FastifyInstance;
  url: string;
  port: number;
  options: ResolvedServeOptions;
  metrics: ServerMetrics;
  /** Load the named models' files again (all when none named) beside the running ones and swap. */
  reload(names?: string[]): Promise<ReloadResult[]>;
  /** Drain (bounded by --drain-timeout-ms) and stop; resolves true when nothing had to be cut off. */
  shutdown(reason: string): Promise<boolean>;
}

interface RequestState {
  arrivedAt: number;
  deadline: number;
  abort: AbortController;
  admitted: boolean;
  model?: string;
  errorMessage?: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    state: RequestState;
  }
  interface FastifyContextConfig {
    endpoint?: string;
    /** Counts against --max-queue and gets a deadline. */
    admit?: boolean;
  }
}

/** An id from the client's X-Request-Id when it is a sane token, else a fresh UUID. */
function requestId(req: { headers: Record<string, string | string[] | undefined> }): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
}

function softmaxRow(values: Float32Array): Float32Array {
  let max = -Infinity;
  for (const v of values) if (v > max) max = v;
  const out = new Float32Array(values.length);
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += out[i] = Math.exp(values[i] - max);
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

export async function startServer(serveOptions: ServeOptions, logStream: NodeJS.WritableStream = process.stderr): Promise<ServerHandle> {
  const options = resolveServeOptions(serveOptions);
  const nameOf = (key: string): string => optionName(options.optionNames, key);
  const metrics = new ServerMetrics(options.maxBatch);
  const app = Fastify({
    logger: { level: options.logLevel, stream: logStream, base: { pid: process.pid } },
    // Our own line per request (onResponse, debug level; errors always), not fastify's two at info.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: requestId,
    bodyLimit: options.bodyLimitBytes,
    // Node's 5 s default would close keep-alive connections a load balancer still uses (its
    // idle timeout is typically 60 s): the LB then answers 502 on a request sent on a closed one.
    keepAliveTimeout: 65_000,
    requestTimeout: Math.max(60_000, 2 * options.timeoutMs),
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
  });
  const log = app.log;
  let fatal: Error | undefined;
  let draining = false;
  let inflight = 0;
  let inflightZero: (() => void) | undefined;

  const onFatal = (err: Error) => {
    if (fatal) return;
    fatal = err;
    log.error({ err: err.message }, 'a worker thread died; the server stops (exit 1) so that its supervisor restarts it');
    // Nothing queued can run any more if no inference worker is left: answer it now, not at its deadline.
    if (pool.slots.every((s) => s.dead)) batcher.rejectQueued('the server is stopping: its inference worker died');
    void handle.shutdown('worker died');
  };
  const pool: InferencePool = new InferencePool(options.workers, options.threadsPerWorker, () => batcher.pump(), onFatal);
  const batcher: Batcher = new Batcher(
    pool,
    { maxBatch: options.maxBatch, maxQueueDelayMs: options.maxQueueDelayMs, timeoutMs: options.timeoutMs, timeoutMsName: nameOf('timeoutMs') },
    {
      onBatch(version, n, ms, queueMs) {
        const name = version.description.name;
        metrics.batchSize.observe({ model: name }, n);
        metrics.inferenceDuration.observe({ model: name }, ms / 1000);
        metrics.inferenceImages.inc({ model: name }, n);
        for (const q of queueMs) metrics.queueDuration.observe({ model: name }, q / 1000);
        const s = slots.get(name)?.stats;
        if (s) {
          s.inferenceCount += n;
          s.executionCount += 1;
          s.computeCount += 1;
          s.computeNs += ms * 1e6;
          s.queueCount += queueMs.length;
          for (const q of queueMs) s.queueNs += q * 1e6;
          s.lastInference = Date.now();
        }
      },
      onQueueDepth(version) {
        metrics.queueDepth.set({ model: version.description.name }, slots.get(version.description.name)?.current === version ? version.queuedImages : 0);
      },
      onBatchError(version, err) {
        log.error({ model: version.description.name, err: err.message }, 'inference failed');
      },
    },
  );
  const decoders = new DecodePool(options.decodeWorkers, onFatal);

  const slots = new Map<string, ModelSlot>(options.models.map((m) => [m.name, new ModelSlot(m)]));
  let nextVersionId = 1;

  const setReady = () => metrics.ready.set(!draining && [...slots.values()].every((s) => s.current) ? 1 : 0);

  async function load(slot: ModelSlot): Promise<ModelVersion> {
    if (slot.loading) return slot.loading;
    slot.loading = (async () => {
      const id = nextVersionId++;
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
        log.info({ model: slot.name, version: version.number, path: slot.config.path, ms: Math.round(performance.now() - started), input: `${description.input.datatype} [${description.input.shape}]`, classes: description.numClasses, classify: description.preprocessing ? true : description.noClassifyReason }, old ? 'model reloaded' : 'model loaded');
        if (old) {
          old.retire(() => {
            batcher.remove(old);
            pool.unloadAll(old.id);
            decoders.release(old.id);
            log.info({ model: slot.name, version: old.number }, 'previous version drained and unloaded');
          });
        }
        setReady();
        return version;
      } catch (err) {
        const message = (err as Error).message;
        slot.lastError = message;
        metrics.modelLoads.inc({ model: slot.name, result: 'failed' });
        log.error({ model: slot.name, path: slot.config.path, err: message }, slot.current ? `reload failed; version ${slot.current.number} keeps serving` : 'model failed to load');
        throw err instanceof ModelLoadError ? err : new ModelLoadError(message);
      } finally {
        slot.loading = undefined;
      }
    })();
    return slot.loading;
  }

  async function reload(names?: string[]): Promise<ReloadResult[]> {
    const chosen = names ? names.map((n) => slots.get(n)).filter((s): s is ModelSlot => !!s) : [...slots.values()];
    // One at a time: two full models loading at once would double the peak memory.
    const results: ReloadResult[] = [];
    for (const slot of chosen) {
      const started = performance.now();
      try {
        const v = await load(slot);
        results.push({ model: slot.name, ok: true, version: v.number, ms: performance.now() - started });
      } catch (err) {
        results.push({ model: slot.name, ok: false, error: (err as Error).message, ms: performance.now() - started });
      }
    }
    return results;
  }

  // ---- hooks -----------------------------------------------------------------------------
  const authorized = options.token ? tokenChecker(options.token) : undefined;

  app.decorateRequest('state', null as unknown as RequestState);
  app.addHook('onRequest', async (request, reply) => {
    const arrivedAt = performance.now();
    const state: RequestState = { arrivedAt, deadline: arrivedAt + options.timeoutMs, abort: new AbortController(), admitted: false };
    request.state = state;
    reply.header('x-request-id', request.id);
    const path = request.url.split('?')[0];
    if (authorized && !HEALTH_ROUTES.has(path) && !authorized(request.headers.authorization)) {
      reply.header('www-authenticate', 'Bearer');
      throw new HttpError(401, 'missing or wrong bearer token (Authorization: Bearer <token>)', 'unauthorized');
    }
    const config = request.routeOptions.config;
    if (!config.admit) return;
    if (draining) {
      reply.header('connection', 'close');
      throw unavailable('the server is shutting down', 'shutting_down');
    }
    if (inflight >= options.maxQueue) {
      throw new HttpError(
        429,
        `the server has ${inflight} requests in progress (${nameOf('maxQueue')} ${options.maxQueue}); retry later`,
        'queue_full',
        { 'retry-after': '1' },
      );
    }
    inflight++;
    state.admitted = true;
    metrics.inflightRequests.set(inflight);
    reply.raw.once('close', () => {
      inflight--;
      metrics.inflightRequests.set(inflight);
      if (!reply.raw.writableFinished) {
        // The client went away: take its rows out of the queue.
        state.abort.abort();
        metrics.requests.inc({ model: state.model ?? '', endpoint: config.endpoint ?? 'other', code: '499' });
        request.log.debug({ ms: +(performance.now() - arrivedAt).toFixed(2) }, 'client closed the connection before the answer');
      }
      if (inflight === 0 && inflightZero) inflightZero();
    });
  });

  app.addHook('onResponse', async (request, reply) => {
    const state = request.state;
    const endpoint = request.routeOptions.config?.endpoint ?? 'other';
    const model = state?.model ?? '';
    const seconds = state ? (performance.now() - state.arrivedAt) / 1000 : 0;
    metrics.requests.inc({ model, endpoint, code: String(reply.statusCode) });
    metrics.requestDuration.observe({ model, endpoint }, seconds);
    const line = { method: request.method, url: request.url, statusCode: reply.statusCode, ms: +(seconds * 1000).toFixed(2), ...(model ? { model } : {}), ...(state?.errorMessage ? { error: state.errorMessage } : {}) };
    if (reply.statusCode >= 500) request.log.error(line, 'request failed');
    else request.log.debug(line, 'request');
  });

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string; validation?: unknown; headers?: Record<string, string> }, request, reply) => {
    let status = error instanceof HttpError ? error.statusCode : typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
    let message = error.message;
    if (error.code === 'FST_INVALID_MULTIPART_CONTENT_TYPE') {
      status = 415;
    } else if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      message = `unsupported content type ${JSON.stringify(request.headers['content-type'] ?? null)}`;
    }
    if (status === 500) {
      request.log.error({ err: error }, 'unexpected error');
      message = `internal server error (request id ${request.id})`;
    }
    if (error instanceof HttpError) for (const [k, v] of Object.entries(error.headers)) reply.header(k, v);
    if (request.state) request.state.errorMessage = message;
    void reply.code(status).type('application/json').send(JSON.stringify({ error: message }));
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: `no route ${request.method} ${request.url.split('?')[0]}` });
  });

  // ---- body parsers ----------------------------------------------------------------------
  // JSON, except a binary-extension body sent as application/json: left as bytes.
  const jsonParser = app.getDefaultJsonParser('error', 'ignore');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    if (request.headers['inference-header-content-length'] !== undefined) done(null, body);
    else jsonParser(request, (body as Buffer).toString('utf8'), done);
  });
  app.addContentTypeParser(['application/octet-stream', ...IMAGE_TYPES], { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
  await app.register(multipart, {
    limits: { fileSize: options.bodyLimitBytes, files: options.maxImagesPerRequest, fields: 16, parts: options.maxImagesPerRequest + 16, fieldSize: 64 * 1024 },
  });

  // ---- helpers ----------------------------------------------------------------------------
  function slotFor(request: FastifyRequest, name: string): ModelSlot {
    const slot = slots.get(name);
    if (!slot) throw notFound(`no model named "${name}" (served: ${[...slots.keys()].join(', ')})`);
    request.state.model = name;
    return slot;
  }

  function versionOf(slot: ModelSlot, wanted?: string): ModelVersion {
    const v = slot.current;
    if (!v) throw unavailable(`model ${slot.name} is not loaded${slot.lastError ? `: ${slot.lastError}` : ''}`, 'not_ready');
    if (wanted !== undefined && wanted !== String(v.number)) throw notFound(`model ${slot.name} has no version ${wanted} (it serves version ${v.number})`);
    return v;
  }

  /**
   * Count a request as on its way to the batch queue of `version` until the returned function is
   * called (once it queues its rows, or fails before): the batcher waits for such requests.
   */
  function preparing(version: ModelVersion): () => void {
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

  /** Queue n rows for `version`; resolves with the request's rows of the outputs. */
  function infer(request: FastifyRequest, version: ModelVersion, n: number, data: Uint8Array, outputs: string[]): Promise<ItemResult> {
    return new Promise<ItemResult>((resolve, reject) => {
      const signal = request.state.abort.signal;
      const item: BatchItem = { n, data, outputs, deadline: request.state.deadline, resolve, reject };
      if (signal.aborted) return reject(new HttpError(499, 'client closed the connection', 'client_closed'));
      signal.addEventListener('abort', () => {
        if (batcher.cancel(version, item)) reject(new HttpError(499, 'client closed the connection', 'client_closed'));
      }, { once: true });
      batcher.enqueue(version, item);
    });
  }

  function stats(slot: ModelSlot) {
    const s = slot.stats;
    return {
      name: slot.name,
      version: slot.current ? String(slot.current.number) : '',
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

  function countOutcome(slot: ModelSlot, request: FastifyRequest, ok: boolean): void {
    const ns = (performance.now() - request.state.arrivedAt) * 1e6;
    if (ok) {
      slot.stats.successCount++;
      slot.stats.successNs += ns;
    } else {
      slot.stats.failCount++;
      slot.stats.failNs += ns;
    }
  }

  // ---- routes: health, metadata, stats, repository ---------------------------------------
  app.get('/v2/health/live', { config: { endpoint: 'health' } }, async () => ({ live: true }));
  app.get('/v2/health/ready', { config: { endpoint: 'health' } }, async (_request, reply) => {
    const ready = !draining && [...slots.values()].every((s) => s.current);
    void reply.code(ready ? 200 : 503);
    return { ready };
  });
  app.get('/v2', { config: { endpoint: 'metadata' } }, async () => ({
    name: SERVER_NAME,
    version: require('../package.json').version as string,
    extensions: ['binary_tensor_data', 'classification', 'model_repository', 'statistics'],
  }));
  const modelParams = { type: 'object', properties: { model: { type: 'string' }, version: { type: 'string' } }, required: ['model'] } as const;
  const metadataHandler = async (request: FastifyRequest<{ Params: { model: string; version?: string } }>) => {
    const slot = slotFor(request, request.params.model);
    const v = versionOf(slot, request.params.version);
    return modelMetadataResponse(v.description, String(v.number));
  };
  app.get('/v2/models/:model', { schema: { params: modelParams }, config: { endpoint: 'metadata' } }, metadataHandler);
  app.get('/v2/models/:model/versions/:version', { schema: { params: modelParams }, config: { endpoint: 'metadata' } }, metadataHandler);
  const readyHandler = async (request: FastifyRequest<{ Params: { model: string; version?: string } }>, reply: FastifyReply) => {
    const slot = slotFor(request, request.params.model);
    const ready = !draining && slot.current !== undefined && (request.params.version === undefined || request.params.version === String(slot.current.number));
    void reply.code(ready ? 200 : 503);
    return { name: slot.name, ready };
  };
  app.get('/v2/models/:model/ready', { schema: { params: modelParams }, config: { endpoint: 'health' } }, readyHandler);
  app.get('/v2/models/:model/versions/:version/ready', { schema: { params: modelParams }, config: { endpoint: 'health' } }, readyHandler);
  app.get('/v2/models/stats', { config: { endpoint: 'stats' } }, async () => ({ model_stats: [...slots.values()].map(stats) }));
  app.get('/v2/models/:model/stats', { schema: { params: modelParams }, config: { endpoint: 'stats' } }, async (request: FastifyRequest<{ Params: { model: string } }>) => ({
    model_stats: [stats(slotFor(request, request.params.model))],
  }));
  app.post('/v2/repository/index', { config: { endpoint: 'repository' } }, async () => [...slots.values()].map((s) => ({
    name: s.name,
    ...(s.current ? { version: String(s.current.number) } : {}),
    state: s.loading ? 'LOADING' : s.current ? 'READY' : 'UNAVAILABLE',
    reason: s.lastError ?? '',
  })));
  app.post('/v2/repository/models/:model/load', { schema: { params: modelParams }, config: { endpoint: 'repository' } }, async (request: FastifyRequest<{ Params: { model: string } }>, reply) => {
    const slot = slotFor(request, request.params.model);
    if (draining) throw unavailable('the server is shutting down', 'shutting_down');
    const started = performance.now();
    try {
      const v = await load(slot);
      return { name: slot.name, version: String(v.number), load_ms: Math.round(performance.now() - started) };
    } catch (err) {
      void reply.code(400);
      const kept = slot.current ? `; version ${slot.current.number} keeps serving` : '';
      return { error: `failed to load model ${slot.name}: ${(err as Error).message}${kept}` };
    }
  });
  app.get('/metrics', { config: { endpoint: 'metrics' } }, async (_request, reply) => {
    void reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  // ---- route: infer ------------------------------------------------------------------------
  const inferHandler = async (request: FastifyRequest<{ Params: { model: string; version?: string } }>, reply: FastifyReply) => {
    const slot = slotFor(request, request.params.model);
    const version = versionOf(slot, request.params.version);
    version.acquire();
    const prepared = preparing(version);
    let ok = false;
    try {
      const type = (request.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
      let header: unknown;
      let binary: Buffer | undefined;
      if (Buffer.isBuffer(request.body)) {
        if (type !== 'application/octet-stream' && type !== 'application/json') throw new HttpError(415, `infer takes application/json, or application/octet-stream with binary tensors; not ${type}`, 'unsupported_media_type');
        if (request.headers['inference-header-content-length'] === undefined) {
          throw new HttpError(400, 'a binary infer request needs the Inference-Header-Content-Length header (the JSON header\'s byte length)', 'bad_request');
        }
        ({ header, binary } = splitBinaryBody(request.body, String(request.headers['inference-header-content-length'])));
      } else if (type === 'application/json') {
        header = request.body;
      } else {
        throw new HttpError(415, `infer takes application/json, or application/octet-stream with binary tensors; not ${type || 'a body without content type'}`, 'unsupported_media_type');
      }
      const validate = request.compileValidationSchema(inferRequestSchema);
      if (!validate(header)) {
        const e = validate.errors?.[0];
        throw new HttpError(400, `body${e?.instancePath ?? ''} ${e?.message ?? 'is not a valid infer request'}`, 'bad_request');
      }
      const parsed = parseInfer(header as InferRequestBody, binary, version.description, options.maxBatch, nameOf('maxBatch'));
      const wanted = [...new Set(parsed.outputs.map((o) => o.name))];
      prepared();
      const result = await infer(request, version, parsed.n, parsed.data, wanted);
      const tensors = new Map<string, OutputTensor>();
      for (const [name, data] of result.outputs) tensors.set(name, { name, data, shape: [parsed.n, data.length / parsed.n] });
      const response = buildInferResponse(version.description, String(version.number), parsed.id, parsed.outputs, tensors);
      ok = true;
      if (response.binary.length === 0) return reply.type('application/json').send(response.json);
      const json = Buffer.from(response.json, 'utf8');
      return reply
        .type('application/octet-stream')
        .header('inference-header-content-length', String(json.length))
        .send(Buffer.concat([json, ...response.binary]));
    } finally {
      prepared();
      countOutcome(slot, request, ok);
      version.release();
    }
  };
  app.post('/v2/models/:model/infer', { schema: { params: modelParams }, config: { endpoint: 'infer', admit: true } }, inferHandler);
  app.post('/v2/models/:model/versions/:version/infer', { schema: { params: modelParams }, config: { endpoint: 'infer', admit: true } }, inferHandler);

  // ---- route: classify ---------------------------------------------------------------------
  interface Upload {
    bytes: Buffer;
    filename?: string;
  }

  async function uploads(request: FastifyRequest): Promise<Upload[]> {
    const type = (request.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (request.isMultipart()) {
      const files: Upload[] = [];
      let total = 0;
      for await (const part of request.parts()) {
        if (part.type !== 'file') continue;
        const bytes = await part.toBuffer();
        total += bytes.length;
        if (total > options.bodyLimitBytes) {
          throw new HttpError(413, `the images add up to more than ${nameOf('bodyLimitBytes')} (${options.bodyLimitBytes} bytes)`, 'body_too_large');
        }
        files.push({ bytes, filename: part.filename || part.fieldname });
      }
      return files;
    }
    if (!Buffer.isBuffer(request.body) || !(IMAGE_TYPES.includes(type) || type === 'application/octet-stream')) {
      throw new HttpError(415, `:classify takes an image body (${IMAGE_TYPES.slice(0, 3).join(', ')}, ...) or multipart/form-data; not ${type || 'a body without content type'}`, 'unsupported_media_type');
    }
    return [{ bytes: request.body }];
  }

  app.post('/v1/models/:spec', {
    schema: {
      params: { type: 'object', properties: { spec: { type: 'string' } }, required: ['spec'] },
      querystring: { type: 'object', properties: { topk: { type: 'string', pattern: '^[0-9]{1,5}$' } } },
    },
    config: { endpoint: 'classify', admit: true },
  }, async (request: FastifyRequest<{ Params: { spec: string }; Querystring: { topk?: string } }>) => {
    const colon = request.params.spec.lastIndexOf(':');
    const verb = colon > 0 ? request.params.spec.slice(colon + 1) : '';
    if (verb !== 'classify') throw notFound(`no route POST ${request.url.split('?')[0]} (this server has /v1/models/{model}:classify)`);
    const slot = slotFor(request, request.params.spec.slice(0, colon));
    const version = versionOf(slot);
    const description: ModelDescription = version.description;
    version.acquire();
    const prepared = preparing(version);
    let ok = false;
    try {
      if (!description.preprocessing) throw new HttpError(400, `:classify cannot run: ${description.noClassifyReason}`, 'no_preprocessing');
      const k = Math.min(Number(request.query.topk ?? 5), description.numClasses);
      if (!(k >= 1)) throw new HttpError(400, 'querystring/topk must be an integer >= 1', 'bad_request');
      const images = await uploads(request);
      if (images.length === 0) throw new HttpError(400, 'the request has no image (send an image body, or multipart/form-data with image files)', 'bad_request');
      const decoded = await Promise.allSettled(images.map((img) => decoders.decode(version.id, img.bytes, options.maxPixels, nameOf('maxPixels'))));
      let rejected: { i: number; err: Error } | undefined;
      decoded.forEach((d, i) => {
        if (d.status === 'fulfilled') metrics.imagesDecoded.inc({ model: slot.name });
        else {
          const reason = d.reason instanceof ImageRejected ? d.reason.reason : 'undecodable';
          metrics.imagesRejected.inc({ model: slot.name, reason });
          rejected ??= { i, err: d.reason as Error };
        }
        if (d.status === 'fulfilled') metrics.decodeDuration.observe({ model: slot.name }, d.value.decodeMs / 1000);
      });
      if (rejected) {
        const { i, err } = rejected;
        if (!(err instanceof ImageRejected)) throw err;
        const which = images.length > 1 ? `image ${i + 1}${images[i].filename ? ` (${images[i].filename})` : ''}: ` : '';
        throw new HttpError(422, `${which}${err.message}`, `image_${err.reason}`);
      }
      const rows = decoded.map((d) => (d as PromiseFulfilledResult<{ row: Float32Array | Uint8Array; width: number; height: number; decodeMs: number }>).value);
      prepared();
      const results = await Promise.all(rows.map((r) => infer(request, version, 1, new Uint8Array(r.row.buffer, r.row.byteOffset, r.row.byteLength), [description.classifyOutput])));
      const predictions = results.map((res, i) => {
        const raw = res.outputs.get(description.classifyOutput)!;
        const prob = description.classifyOutputIsProb ? raw : softmaxRow(raw);
        return {
          image: i,
          ...(images[i].filename ? { filename: images[i].filename } : {}),
          width: rows[i].width,
          height: rows[i].height,
          top: topK(prob, 0, description.numClasses, k).map((j) => ({ index: j, ...(description.classNames ? { label: description.classNames[j] } : {}), prob: prob[j] })),
          timings_ms: { decode: +rows[i].decodeMs.toFixed(3), queue: +res.queueMs.toFixed(3), inference: +res.inferenceMs.toFixed(3), batch_size: res.batchSize },
        };
      });
      ok = true;
      return { model_name: slot.name, model_version: String(version.number), predictions, timings_ms: { total: +(performance.now() - request.state.arrivedAt).toFixed(3) } };
    } finally {
      prepared();
      countOutcome(slot, request, ok);
      version.release();
    }
  });

  // ---- start ---------------------------------------------------------------------------------
  let shuttingDown: Promise<boolean> | undefined;
  const handle: ServerHandle = {
    app,
    url: '',
    port: 0,
    options,
    metrics,
    reload,
    shutdown(reason: string): Promise<boolean> {
      shuttingDown ??= (async () => {
        draining = true;
        setReady();
        log.info({ reason, inflight, queued: batcher.queuedImages, drainTimeoutMs: options.drainTimeoutMs }, 'draining: finishing the requests in progress');
        batcher.flushing = true;
        batcher.pump();
        let drained = true;
        if (inflight > 0) {
          let timer: NodeJS.Timeout | undefined;
          drained = await Promise.race([
            new Promise<boolean>((resolve) => { inflightZero = () => resolve(true); }),
            new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), options.drainTimeoutMs); }),
          ]);
          clearTimeout(timer);
          if (!drained) {
            log.error({ inflight, queued: batcher.queuedImages }, 'drain timeout: answering what is still queued with 503');
            batcher.rejectQueued('the server is shutting down (drain timeout)');
          }
        }
        // Nothing is in progress now: whatever connection is left is idle, or holds the unread
        // body of a request refused early (401/429/503); Node would wait for those until
        // requestTimeout, so close them all at once.
        const closing = app.close();
        app.server.closeAllConnections();
        await closing;
        batcher.close();
        await Promise.all([pool.close(), decoders.close()]);
        log.info({ drained }, 'stopped');
        return drained && !fatal;
      })();
      return shuttingDown;
    },
  };

  try {
    // Load every model before listening: a server that cannot serve what it was told to fails at start.
    for (const slot of slots.values()) await load(slot);
  } catch (err) {
    batcher.close();
    await Promise.all([pool.close(), decoders.close()]);
    await app.close();
    throw err;
  }
  if (!isLoopback(options.host) && !options.token) {
    log.warn({ host: options.host }, `listening on a non-loopback address without ${nameOf('token')}: anyone who can reach it can use it`);
  }
  const address = await app.listen({ host: options.host, port: options.port });
  const port = (app.server.address() as { port: number }).port;
  handle.url = address;
  handle.port = port;
  setReady();
  log.info({ url: address, port, models: [...slots.keys()], workers: options.workers, threadsPerWorker: options.threadsPerWorker, decodeWorkers: options.decodeWorkers, maxBatch: options.maxBatch, maxQueueDelayMs: options.maxQueueDelayMs }, 'listening');
  return handle;
}

/**
 * Start a server and wire the process signals: SIGHUP reloads every model, SIGTERM/SIGINT
 * drain and stop. Resolves with the exit code once the server has stopped (0: drained).
 *
 * The handlers are installed before the server starts: a process without a SIGTERM listener
 * dies at once by the signal's default action, and a supervisor (or a test) may send SIGTERM
 * the moment it reads the `listening` line, before code after `startServer` has run. A stop
 * asked for during start-up takes effect as soon as the server is up.
 */
export async function runServer(options: ServeOptions, onStarted?: (handle: ServerHandle) => void): Promise<number> {
  let handle: ServerHandle | undefined;
  let stopSignal: NodeJS.Signals | undefined;
  let finish: (code: number) => void = () => undefined;
  const finished = new Promise<number>((resolve) => { finish = resolve; });
  const stop = (signal: NodeJS.Signals) => {
    if (stopSignal) return;
    stopSignal = signal;
    process.removeListener('SIGHUP', hup);
    if (handle) handle.shutdown(signal).then((clean) => finish(clean ? 0 : 1), () => finish(1));
  };
  const hup = () => {
    if (!handle) return;
    handle.app.log.info('SIGHUP: reloading every model');
    void handle.reload();
  };
  process.on('SIGHUP', hup);
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  try {
    handle = await startServer(options);
  } catch (err) {
    process.removeListener('SIGHUP', hup);
    process.removeListener('SIGTERM', stop);
    process.removeListener('SIGINT', stop);
    throw err;
  }
  onStarted?.(handle);
  if (stopSignal) handle.shutdown(stopSignal).then((clean) => finish(clean ? 0 : 1), () => finish(1));
  return finished;
}
