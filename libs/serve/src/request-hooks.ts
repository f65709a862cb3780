/**
 * Every request's life around its route: `onRequest` checks the token, refuses new work while
 * draining (503) and admits at most maxQueue requests at once (429 + Retry-After before the body
 * is read, so memory is bounded by maxQueue x the largest accepted body); `onResponse` counts and
 * logs the answer; the error handler turns any error into one JSON answer (a stack trace only in
 * the log); the body parsers accept JSON, binary tensors and images, within the body limit.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import multipart from '@fastify/multipart';
import { tokenChecker } from './auth';
import { alignmentPad, type BodyBufferPool, type BodyDone, readBody } from './binary-body';
import { HttpError, unavailable } from './errors';
import type { ServerMetrics } from './metrics';
import type { ResolvedServeOptions } from './options';

export const IMAGE_TYPES = ['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/tiff', 'image/avif'];
const HEALTH_ROUTES = new Set(['/v2/health/live', '/v2/health/ready']);

export interface RequestState {
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
    /** Counts against maxQueue and gets a deadline. */
    admit?: boolean;
  }
}

/** An id from the client's X-Request-Id when it is a sane token, else a fresh UUID. */
export function requestId(req: { headers: Record<string, string | string[] | undefined> }): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
}

/** Admitted requests in progress, and whether new ones are refused (draining). */
export class Traffic {
  draining = false;
  inflight = 0;
  private onIdle: (() => void) | undefined;

  constructor(private readonly metrics: ServerMetrics) {}

  admit(): void {
    this.inflight++;
    this.metrics.inflightRequests.set(this.inflight);
  }

  leave(): void {
    this.inflight--;
    this.metrics.inflightRequests.set(this.inflight);
    if (this.inflight === 0) this.onIdle?.();
  }

  /** Resolves true once no request is in progress, or false after `timeoutMs`. */
  idle(timeoutMs: number): Promise<boolean> {
    if (this.inflight === 0) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.onIdle = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
  }
}

export interface HookContext {
  options: ResolvedServeOptions;
  metrics: ServerMetrics;
  traffic: Traffic;
  nameOf(key: string): string;
}

export function installRequestHooks(app: FastifyInstance, { options, metrics, traffic, nameOf }: HookContext): void {
  const authorized = options.token ? tokenChecker(options.token) : undefined;

  app.decorateRequest('state', null as unknown as RequestState);
  app.addHook('onRequest', async (request, reply) => {
    const arrivedAt = performance.now();
    const state: RequestState = { arrivedAt, deadline: arrivedAt + options.timeoutMs, abort: new AbortController(), admitted: false };
    request.state = state;
    reply.header('x-request-id', request.id);
    // At trace level, arrivals too: with the debug line per answer, a request that was received
    // but never answered shows up as an arrival without an answer.
    request.log.trace({ method: request.method, url: request.url }, 'request received');
    const path = request.url.split('?')[0];
    if (authorized && !HEALTH_ROUTES.has(path) && !authorized(request.headers.authorization)) {
      reply.header('www-authenticate', 'Bearer');
      throw new HttpError(401, 'missing or wrong bearer token (Authorization: Bearer <token>)', 'unauthorized');
    }
    const config = request.routeOptions.config;
    if (!config.admit) return;
    if (traffic.draining) {
      reply.header('connection', 'close');
      throw unavailable('the server is shutting down', 'shutting_down');
    }
    if (traffic.inflight >= options.maxQueue) {
      throw new HttpError(
        429,
        `the server has ${traffic.inflight} requests in progress (${nameOf('maxQueue')} ${options.maxQueue}); retry later`,
        'queue_full',
        { 'retry-after': '1' },
      );
    }
    traffic.admit();
    state.admitted = true;
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) {
        // The client went away: take its rows out of the queue.
        state.abort.abort();
        metrics.requests.inc({ model: state.model ?? '', endpoint: config.endpoint ?? 'other', code: '499' });
        request.log.debug({ ms: +(performance.now() - arrivedAt).toFixed(2) }, 'client closed the connection before the answer');
      }
      traffic.leave();
    });
  });

  app.addHook('onResponse', async (request, reply) => {
    const state = request.state;
    const endpoint = request.routeOptions.config?.endpoint ?? 'other';
    const model = state?.model ?? '';
    const seconds = state ? (performance.now() - state.arrivedAt) / 1000 : 0;
    metrics.requests.inc({ model, endpoint, code: String(reply.statusCode) });
    metrics.requestDuration.observe({ model, endpoint }, seconds);
    const line = {
      method: request.method,
      url: request.url,
      statusCode: reply.statusCode,
      ms: +(seconds * 1000).toFixed(2),
      ...(model ? { model } : {}),
      ...(state?.errorMessage ? { error: state.errorMessage } : {}),
    };
    if (reply.statusCode >= 500) request.log.error(line, 'request failed');
    else request.log.debug(line, 'request');
  });

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string; validation?: unknown; headers?: Record<string, string> }, request, reply) => {
    let status =
      error instanceof HttpError
        ? error.statusCode
        : typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500
          ? error.statusCode
          : 500;
    let message = error.message;
    if (error.code === 'FST_INVALID_MULTIPART_CONTENT_TYPE') {
      status = 415;
    } else if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      message = `unsupported content type ${JSON.stringify(request.headers['content-type'] ?? null)}`;
    }
    // An HttpError's message is written for the client; anything else unexpected is not shown.
    if (status === 500 && !(error instanceof HttpError)) {
      request.log.error({ err: error }, 'unexpected error');
      message = `internal server error (request id ${request.id})`;
    }
    if (error instanceof HttpError) for (const [k, v] of Object.entries(error.headers)) reply.header(k, v);
    if (request.state) request.state.errorMessage = message;
    void reply
      .code(status)
      .type('application/json')
      .send(JSON.stringify({ error: message }));
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: `no route ${request.method} ${request.url.split('?')[0]}` });
  });
}

/** JSON (except a binary-extension body sent as application/json: left as bytes), binary tensors, images, multipart. */
export async function installBodyParsers(app: FastifyInstance, options: ResolvedServeOptions, bodies?: BodyBufferPool): Promise<void> {
  const jsonParser = app.getDefaultJsonParser('error', 'ignore');
  app.removeContentTypeParser('application/json');
  // Raw bodies are read by readBody (binary-body.ts: one copy, the tensor bytes 4-byte aligned),
  // with fastify's limits and errors.
  const read = (request: FastifyRequest, payload: NodeJS.ReadableStream, done: BodyDone) => {
    const headerLength = request.headers['inference-header-content-length'];
    // Binary infer bodies (the v2 route gives them back to the pool once queued); images not:
    // they are transferred to a decode worker.
    readBody(
      payload,
      request.headers['content-length'],
      options.bodyLimitBytes,
      alignmentPad(headerLength),
      done,
      headerLength === undefined ? undefined : bodies,
    );
  };
  app.addContentTypeParser('application/json', (request, payload, done) => {
    read(request, payload, (err, body) => {
      if (err || request.headers['inference-header-content-length'] !== undefined) done(err, body);
      else jsonParser(request, body!.toString('utf8'), done);
    });
  });
  app.addContentTypeParser(['application/octet-stream', ...IMAGE_TYPES], (request, payload, done) => read(request, payload, done));
  await app.register(multipart, {
    limits: { fileSize: options.bodyLimitBytes, files: options.maxImagesPerRequest, fields: 16, parts: options.maxImagesPerRequest + 16, fieldSize: 64 * 1024 },
  });
}
