/**
 * The server's options, checked once here; errors name these options (`maxBatch`,
 * `models[0].size`), and the CLI says the same in terms of its flags. What the running server
 * tells clients and logs names them as `optionNames` says (the CLI passes its flags).
 * Defaults follow the command line and Triton's dynamic batcher.
 */
import * as os from 'node:os';
import { statSync } from 'node:fs';
import { basename } from 'node:path';
import { check, checkOptional, describeReadError, InvalidParameterError, readRegularFileSync, UsageError } from '@alexnet-stream/core';
import { RESIZE_MODES, type ResizeMode } from '@alexnet-stream/stream-io';

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
  /** How messages name these fields (set by the server from `ServeOptions.optionNames`). */
  optionNames?: OptionNames;
}

/** How the running server's messages (HTTP answers, logs, load errors) name its options: `{ maxQueue: '--max-queue' }`. */
export type OptionNames = Partial<Record<string, string>>;

/** The name messages use for option `key`: from `names`, else the key itself. */
export function optionName(names: OptionNames | undefined, key: string): string {
  return (names && Object.hasOwn(names, key) ? names[key] : undefined) ?? key;
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
  /** How the running server's messages name these options (the CLI: its flags); default: as named here. */
  optionNames?: OptionNames;
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

/** `[name=]path.onnx` (the CLI's `--model`) → { name, path }. */
export function parseModelArg(value: string): { name: string; path: string } {
  const eq = value.indexOf('=');
  const path = eq > 0 ? value.slice(eq + 1) : value;
  const name = eq > 0 ? value.slice(0, eq) : basename(path).replace(/\.onnx$/i, '');
  if (!path) throw new InvalidParameterError('models', '[name=]path.onnx', value);
  if (!MODEL_NAME.test(name)) {
    throw new InvalidParameterError('models', 'a model name of letters, digits, "_", "-" and "." (at most 128, as in [name=]path.onnx)', name);
  }
  return { name, path };
}

const int = (name: string, value: number, min: number, max: number): number => check.integer(name, value, { min, max });
const num = (name: string, value: number, min: number, max: number): number => check.number(name, value, { min, max });

/** `r,g,b` or a single value (repeated) → 3 finite numbers; undefined when `text` is not such a list. */
export function parseChannelValues(text: string): number[] | undefined {
  if (!/^\s*[-+0-9.eE]+(\s*,\s*[-+0-9.eE]+)*\s*$/.test(text)) return undefined;
  const values = text.split(',').map((s) => Number(s.trim()));
  if (values.some((v) => !Number.isFinite(v))) return undefined;
  if (values.length === 1) return [values[0], values[0], values[0]];
  return values.length === 3 ? values : undefined;
}

export function resolveServeOptions(options: ServeOptions): ResolvedServeOptions {
  if (!Array.isArray(options.models) || options.models.length === 0) {
    throw new UsageError((name) => `give at least one model: ${name('models')} [name=]path.onnx`);
  }
  const optionNames: OptionNames = { ...options.optionNames };
  const names = new Set<string>();
  options.models.forEach((m, i) => {
    const at = `models[${i}]`;
    check.string(`${at}.name`, m.name, { pattern: MODEL_NAME, expected: 'a model name of letters, digits, "_", "-" and "."' });
    if (names.has(m.name)) throw new UsageError((name) => `two ${name('models')} entries name the model "${m.name}": give each its own name (name=path.onnx)`);
    names.add(m.name);
    let s;
    try {
      s = statSync(m.path);
    } catch {
      throw new UsageError((name) => `${name('models')} ${m.name}=${m.path}: no such file`);
    }
    if (!s.isFile()) throw new UsageError((name) => `${name('models')} ${m.name}=${m.path}: not a file`);
    checkOptional.integer(`${at}.size`, m.size, { min: 1, max: 4096 });
    checkOptional.oneOf(`${at}.resize`, m.resize, RESIZE_MODES);
    if (m.std !== undefined) {
      const std = parseChannelValues(m.std);
      if (!std || std.some((v) => v <= 0)) throw new InvalidParameterError(`${at}.std`, 'one or three positive numbers (r,g,b, pixel units)', m.std);
    }
    if (m.mean !== undefined && !parseChannelValues(m.mean)) {
      let isFile = false;
      try {
        isFile = statSync(m.mean).isFile();
      } catch {
        // not a file either: refused below
      }
      if (!isFile) throw new InvalidParameterError(`${at}.mean`, 'r,g,b (pixel units) or a mean image .npy file', m.mean);
    }
  });
  const host = options.host ?? DEFAULTS.host;
  check.string('host', host, { nonEmpty: true, expected: 'a host name or address' });
  const workers = int('workers', options.workers ?? DEFAULTS.workers, 1, 64);
  const threadsPerWorker = int('threadsPerWorker', options.threadsPerWorker ?? Math.max(1, Math.floor(cores() / workers)), 1, 256);
  const maxBatch = int('maxBatch', options.maxBatch ?? DEFAULTS.maxBatch, 1, 1024);
  const logLevel = check.oneOf('logLevel', options.logLevel ?? DEFAULTS.logLevel, LOG_LEVELS);
  if (options.token !== undefined && (typeof options.token !== 'string' || options.token.length < 16)) {
    throw new UsageError((name) => `the token (${name('token')}) must be at least 16 characters`);
  }
  return {
    models: options.models.map((m) => ({ ...m, optionNames })),
    host,
    port: int('port', options.port ?? DEFAULTS.port, 0, 65535),
    workers,
    threadsPerWorker,
    decodeWorkers: int('decodeWorkers', options.decodeWorkers ?? cores(), 1, 64),
    maxBatch,
    maxQueueDelayMs: num('maxQueueDelayMs', options.maxQueueDelayMs ?? DEFAULTS.maxQueueDelayMs, 0, 60_000),
    maxQueue: int('maxQueue', options.maxQueue ?? DEFAULTS.maxQueue, 1, 1_000_000),
    timeoutMs: int('timeoutMs', options.timeoutMs ?? DEFAULTS.timeoutMs, 1, 3_600_000),
    bodyLimitBytes: int('bodyLimitBytes', options.bodyLimitBytes ?? DEFAULTS.bodyLimitBytes, 1024, 1 << 30),
    maxPixels: num('maxPixels', options.maxPixels ?? DEFAULTS.maxPixels, 1, 1e10),
    maxImagesPerRequest: int('maxImagesPerRequest', options.maxImagesPerRequest ?? maxBatch, 1, 4096),
    token: options.token,
    drainTimeoutMs: int('drainTimeoutMs', options.drainTimeoutMs ?? DEFAULTS.drainTimeoutMs, 0, 3_600_000),
    logLevel,
    optionNames,
  };
}

/** A token file holds one token: a few hundred bytes; 64 KiB is far more than any. */
const MAX_TOKEN_FILE_BYTES = 64 << 10;

/** The bearer token in `path` (a regular file; surrounding whitespace trimmed); a clear UsageError (naming `tokenFile`) otherwise. */
export function readTokenFile(path: string): string {
  let text: string;
  try {
    text = readRegularFileSync(path, { maxBytes: MAX_TOKEN_FILE_BYTES, limitName: 'the 64 KiB a token file may take' }).toString('utf8');
  } catch (err) {
    throw new UsageError((name) => `${name('tokenFile')} ${path}: cannot read it (${describeReadError(err)})`, { cause: err });
  }
  const token = text.trim();
  if (token.length < 16 || /\s/.test(token)) {
    throw new UsageError((name) => `${name('tokenFile')} ${path}: expected one token of at least 16 characters without spaces`);
  }
  return token;
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
