/**
 * The server's options, checked once here (the CLI maps flags to these names; messages name
 * the flag). Defaults follow the command line and Triton's dynamic batcher.
 */
import * as os from 'node:os';
import { readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { invalidOption, UsageError } from '@alexnet-stream/core';
import { RESIZE_MODES, ResizeMode } from '@alexnet-stream/stream-io';

/** One served model: a name in the URL and a file, plus preprocessing for models without our metadata. */
export interface ModelConfig {
  /** URL name (`/v2/models/{name}`): letters, digits, `_`, `-`, `.`; default the file name without `.onnx`. */
  name: string;
  path: string;
  /** Class names file, one per line in label order (default: the model's metadata). */
  labels?: string;
  /** `r,g,b` per-channel means in pixel units (0..255), or a mean image `.npy` (float32 3xSxS). */
  mean?: string;
  /** `r,g,b` (or one value) per-channel standard deviations in pixel units; default 1 (none). */
  std?: string;
  /** Side the image is resized to before the center crop (default: the model's, else 256). */
  size?: number;
  /** How the image is brought to size x size (default squash, as the training pipeline). */
  resize?: ResizeMode;
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface ServeOptions {
  models: ModelConfig[];
  host?: string;
  /** 0: any free port (the log line `listening` says which). */
  port?: number;
  /** Inference worker threads, one onnxruntime session per model each. */
  workers?: number;
  /** onnxruntime intra-op threads per worker; default cores / workers (at least 1). */
  threadsPerWorker?: number;
  /** Image decoding worker threads; default the number of cores. */
  decodeWorkers?: number;
  maxBatch?: number;
  maxQueueDelayMs?: number;
  /** Requests accepted and not yet answered, over all models; more get 429. */
  maxQueue?: number;
  /** A request still queued this long after it arrived gets 503. */
  timeoutMs?: number;
  bodyLimitBytes?: number;
  /** Images whose header declares more pixels are refused (422) without being decoded. */
  maxPixels?: number;
  /** Images one `:classify` request may carry (multipart). Default maxBatch. */
  maxImagesPerRequest?: number;
  /** Bearer token required on every route but health; undefined: no auth. */
  token?: string;
  /** How long SIGTERM waits for in-flight and queued requests before giving up. */
  drainTimeoutMs?: number;
  logLevel?: LogLevel;
}

export type ResolvedServeOptions = Required<Omit<ServeOptions, 'token'>> & { token?: string };

export const DEFAULTS = {
  host: '127.0.0.1',
  port: 8080,
  workers: 1,
  maxBatch: 32,
  maxQueueDelayMs: 2,
  maxQueue: 256,
  timeoutMs: 10_000,
  bodyLimitBytes: 16 * 1024 * 1024,
  maxPixels: 50e6,
  drainTimeoutMs: 30_000,
  logLevel: 'info' as LogLevel,
};

export function cores(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}

const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** `--model [name=]path.onnx` → { name, path }. */
export function parseModelArg(value: string): { name: string; path: string } {
  const eq = value.indexOf('=');
  const path = eq > 0 ? value.slice(eq + 1) : value;
  const name = eq > 0 ? value.slice(0, eq) : basename(path).replace(/\.onnx$/i, '');
  if (!path) throw invalidOption('--model', '[name=]path.onnx', value);
  if (!MODEL_NAME.test(name)) {
    throw invalidOption('--model', 'a model name of letters, digits, "_", "-" and "." (at most 128, as in [name=]path.onnx)', name);
  }
  return { name, path };
}

function int(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) throw invalidOption(name, `an integer between ${min} and ${max}`, value);
  return value;
}

function num(name: string, value: number, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) throw invalidOption(name, `a number between ${min} and ${max}`, value);
  return value;
}

/** `r,g,b` or a single value (repeated) → 3 finite numbers; undefined when `text` is not such a list. */
export function parseChannelValues(text: string): number[] | undefined {
  if (!/^\s*[-+0-9.eE]+(\s*,\s*[-+0-9.eE]+)*\s*$/.test(text)) return undefined;
  const values = text.split(',').map((s) => Number(s.trim()));
  if (values.some((v) => !Number.isFinite(v))) return undefined;
  if (values.length === 1) return [values[0], values[0], values[0]];
  return values.length === 3 ? values : undefined;
}

export function resolveServeOptions(options: ServeOptions): ResolvedServeOptions {
  if (!Array.isArray(options.models) || options.models.length === 0) throw new UsageError('give at least one --model [name=]path.onnx');
  const names = new Set<string>();
  for (const m of options.models) {
    if (!MODEL_NAME.test(m.name)) throw invalidOption('--model', 'a model name of letters, digits, "_", "-" and "."', m.name);
    if (names.has(m.name)) throw new UsageError(`two --model flags name the model "${m.name}": give each its own name (name=path.onnx)`);
    names.add(m.name);
    let s;
    try {
      s = statSync(m.path);
    } catch {
      throw new UsageError(`--model ${m.name}=${m.path}: no such file`);
    }
    if (!s.isFile()) throw new UsageError(`--model ${m.name}=${m.path}: not a file`);
    if (m.size !== undefined) int('--size', m.size, 1, 4096);
    if (m.resize !== undefined && !RESIZE_MODES.includes(m.resize)) throw invalidOption('--resize', RESIZE_MODES.join(' or '), m.resize);
    if (m.std !== undefined) {
      const std = parseChannelValues(m.std);
      if (!std || std.some((v) => v <= 0)) throw invalidOption('--std', 'one or three positive numbers (r,g,b, pixel units)', m.std);
    }
    if (m.mean !== undefined && !parseChannelValues(m.mean)) {
      try {
        if (!statSync(m.mean).isFile()) throw new Error();
      } catch {
        throw invalidOption('--mean', 'r,g,b (pixel units) or a mean image .npy file', m.mean);
      }
    }
  }
  const host = options.host ?? DEFAULTS.host;
  if (typeof host !== 'string' || host.length === 0) throw invalidOption('--host', 'a host name or address', host);
  const workers = int('--workers', options.workers ?? DEFAULTS.workers, 1, 64);
  const threadsPerWorker = int('--threads', options.threadsPerWorker ?? Math.max(1, Math.floor(cores() / workers)), 1, 256);
  const maxBatch = int('--max-batch', options.maxBatch ?? DEFAULTS.maxBatch, 1, 1024);
  const logLevel = options.logLevel ?? DEFAULTS.logLevel;
  if (!LOG_LEVELS.includes(logLevel)) throw invalidOption('--log-level', LOG_LEVELS.join(', '), logLevel);
  if (options.token !== undefined && (typeof options.token !== 'string' || options.token.length < 16)) {
    throw new UsageError('the token (--token-file) must be at least 16 characters');
  }
  return {
    models: options.models,
    host,
    port: int('--port', options.port ?? DEFAULTS.port, 0, 65535),
    workers,
    threadsPerWorker,
    decodeWorkers: int('--decode-workers', options.decodeWorkers ?? cores(), 1, 64),
    maxBatch,
    maxQueueDelayMs: num('--max-queue-delay-ms', options.maxQueueDelayMs ?? DEFAULTS.maxQueueDelayMs, 0, 60_000),
    maxQueue: int('--max-queue', options.maxQueue ?? DEFAULTS.maxQueue, 1, 1_000_000),
    timeoutMs: int('--timeout-ms', options.timeoutMs ?? DEFAULTS.timeoutMs, 1, 3_600_000),
    bodyLimitBytes: int('--body-limit-mb', options.bodyLimitBytes ?? DEFAULTS.bodyLimitBytes, 1024, 1 << 30),
    maxPixels: num('--max-pixels', options.maxPixels ?? DEFAULTS.maxPixels, 1, 1e10),
    maxImagesPerRequest: int('--max-images', options.maxImagesPerRequest ?? maxBatch, 1, 4096),
    token: options.token,
    drainTimeoutMs: int('--drain-timeout-ms', options.drainTimeoutMs ?? DEFAULTS.drainTimeoutMs, 0, 3_600_000),
    logLevel,
  };
}

/** The bearer token in `path` (surrounding whitespace trimmed); a clear UsageError otherwise. */
export function readTokenFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`--token-file ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const token = text.trim();
  if (token.length < 16 || /\s/.test(token)) throw new UsageError(`--token-file ${path}: expected one token of at least 16 characters without spaces`);
  return token;
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
