/**
 * The HTTP server (fastify): KServe v2 REST + `:classify` + `/metrics`, on top of the model
 * versions (inference workers), the decoders and the batcher. The HTTP thread only parses,
 * queues and answers; onnxruntime and image decoding run in worker threads.
 *
 * Request life: request-hooks.ts admits (token, draining, maxQueue) and answers errors; the body
 * is parsed within the body limit (413) by a parser for its content type (415 otherwise); the
 * route (v2-routes.ts, classify-route.ts) picks the model version (holding it until the answer,
 * so that a reload never pulls it from under the request), decodes images on the decode workers,
 * queues rows in the batcher and answers. A client that goes away takes its queued rows out of
 * the queue and frees its slot. This module builds the server from those parts, starts it, and
 * drains and stops it.
 */
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import { Batcher } from './batcher';
import { BodyBufferPool } from './binary-body';
import { installClassifyRoute } from './classify-route';
import { DecodePool } from './decode-pool';
import { InferencePool } from './inference-pool';
import { ServerMetrics } from './metrics';
import { ModelRegistry, type ReloadResult } from './model-registry';
import { isLoopback, optionName, resolveServeOptions, type ResolvedServeOptions, type ServeOptions } from './options';
import { installBodyParsers, installRequestHooks, requestId, Traffic } from './request-hooks';
import { Serving } from './serving';
import { installV2Routes } from './v2-routes';

export type { ReloadResult } from './model-registry';

export interface ServerHandle {
  app: FastifyInstance;
  url: string;
  port: number;
  options: ResolvedServeOptions;
  metrics: ServerMetrics;
  /** Load the named models' files again (all when none named) beside the running ones and swap. */
  reload(names?: string[]): Promise<ReloadResult[]>;
  /** Drain (bounded by drainTimeoutMs) and stop; resolves true when nothing had to be cut off. */
  shutdown(reason: string): Promise<boolean>;
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
  const traffic = new Traffic(metrics);
  let fatal: Error | undefined;

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
        registry.slots.get(name)?.stats.countBatch(n, ms, queueMs);
      },
      onQueueDepth(version) {
        metrics.queueDepth.set(
          { model: version.description.name },
          registry.slots.get(version.description.name)?.current === version ? version.queuedImages : 0,
        );
      },
      onBatchError(version, err) {
        log.error({ model: version.description.name, err: err.message }, 'inference failed');
      },
    },
  );
  const decoders = new DecodePool(options.decodeWorkers, onFatal);
  const setReady = () => metrics.ready.set(!traffic.draining && registry.allLoaded ? 1 : 0);
  const registry = new ModelRegistry(options.models, { pool, decoders, batcher, metrics, log, onChange: setReady });

  installRequestHooks(app, { options, metrics, traffic, nameOf });
  // Idle body buffers kept for reuse: at most 64 MiB (two batches of 32 AlexNet images are 40 MB).
  const bodies = new BodyBufferPool(64 << 20);
  await installBodyParsers(app, options, bodies);
  const serving = new Serving({ options, metrics, log, registry, batcher, decoders, traffic, nameOf, bodies });
  installV2Routes(app, serving);
  installClassifyRoute(app, serving);

  let shuttingDown: Promise<boolean> | undefined;
  const handle: ServerHandle = {
    app,
    url: '',
    port: 0,
    options,
    metrics,
    reload: (names) => registry.reload(names),
    shutdown(reason: string): Promise<boolean> {
      shuttingDown ??= (async () => {
        traffic.draining = true;
        setReady();
        log.info(
          { reason, inflight: traffic.inflight, queued: batcher.queuedImages, drainTimeoutMs: options.drainTimeoutMs },
          'draining: finishing the requests in progress',
        );
        batcher.flushing = true;
        batcher.pump();
        const drained = await traffic.idle(options.drainTimeoutMs);
        if (!drained) {
          log.error({ inflight: traffic.inflight, queued: batcher.queuedImages }, 'drain timeout: answering what is still queued with 503');
          batcher.rejectQueued('the server is shutting down (drain timeout)');
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
    for (const slot of registry.slots.values()) await registry.load(slot);
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
  log.info(
    {
      url: address,
      port,
      models: [...registry.slots.keys()],
      workers: options.workers,
      threadsPerWorker: options.threadsPerWorker,
      decodeWorkers: options.decodeWorkers,
      maxBatch: options.maxBatch,
      maxQueueDelayMs: options.maxQueueDelayMs,
    },
    'listening',
  );
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
  const finished = new Promise<number>((resolve) => {
    finish = resolve;
  });
  const stop = (signal: NodeJS.Signals) => {
    if (stopSignal) return;
    stopSignal = signal;
    process.removeListener('SIGHUP', hup);
    if (handle)
      handle.shutdown(signal).then(
        (clean) => finish(clean ? 0 : 1),
        () => finish(1),
      );
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
  if (stopSignal)
    handle.shutdown(stopSignal).then(
      (clean) => finish(clean ? 0 : 1),
      () => finish(1),
    );
  return finished;
}
