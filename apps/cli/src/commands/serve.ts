/**
 * `serve --model [name=]model.onnx ...`: the inference server (libs/serve). This file only maps
 * flags to `ServeOptions`; the library checks them, and runs until SIGTERM/SIGINT (exit 0 once
 * drained), reloading on SIGHUP.
 */
import type { Command } from 'commander';
import { RESIZE_MODES, type ResizeMode } from '@alexnet-stream/stream-io';
import { action, flagNamer, parseInteger, parseNumber } from '../cli-support';

interface ServeFlags {
  model: string[];
  host: string;
  port: number;
  workers?: number;
  threads?: number;
  decodeWorkers?: number;
  maxBatch: number;
  maxQueueDelayMs: number;
  maxQueue: number;
  timeoutMs: number;
  bodyLimitMb: number;
  maxPixels: number;
  maxImages?: number;
  tokenFile?: string;
  drainTimeoutMs: number;
  logLevel: string;
  labels?: string;
  mean?: string;
  std?: string;
  size?: number;
  resize?: ResizeMode;
}

/**
 * serve's parameters named by this command's flags where the names differ: a model's own
 * fields (`models[0].size`) are the shared flags (`--size`), `models` is `--model`.
 */
function serveNames(parameter: string): string | undefined {
  const field = /^models\[\d+\]\.(\w+)$/.exec(parameter)?.[1];
  if (field) return field === 'name' || field === 'path' ? '--model' : `--${field}`;
  const names: Record<string, string> = {
    models: '--model',
    threadsPerWorker: '--threads',
    maxImagesPerRequest: '--max-images',
    bodyLimitBytes: '--body-limit-mb',
    token: '--token-file',
    tokenFile: '--token-file',
  };
  return Object.hasOwn(names, parameter) ? names[parameter] : undefined;
}

/** The options the running server names in answers, logs and load errors. */
const RUNTIME_OPTIONS = ['maxQueue', 'bodyLimitBytes', 'token', 'maxBatch', 'maxPixels', 'timeoutMs', 'labels', 'mean', 'std', 'size'];

export function register(program: Command): void {
  program
    .command('serve')
    .summary('serve ONNX models over HTTP (KServe v2, :classify, Prometheus metrics)')
    .description(
      'An inference server for exported models: KServe v2 REST (health, metadata, infer with JSON or\n' +
        'binary tensors), POST /v1/models/{m}:classify for images (raw body or multipart, ?topk=), and\n' +
        'GET /metrics. Requests are batched dynamically (--max-batch, --max-queue-delay-ms) and run in\n' +
        'worker threads; images are decoded in others. SIGHUP (or POST /v2/repository/models/{m}/load)\n' +
        'reloads the model files beside the running ones and swaps when ready; SIGTERM/SIGINT drain and\n' +
        'stop. Logs are JSON lines on stderr.\n\n' +
        'A model exported by alexnet-stream carries its classes, mean and input size; for another ONNX\n' +
        'image classifier (one float32 [N,3,S,S] input) give --mean/--std/--size/--labels, which then\n' +
        'apply to every --model that does not carry its own.\n\n' +
        'Example: alexnet-stream serve --model alexnet=model.onnx --port 8080\n' +
        '         curl --data-binary @cat.jpg -H "Content-Type: image/jpeg" localhost:8080/v1/models/alexnet:classify',
    )
    .requiredOption('--model <[name=]path.onnx>', 'a model to serve (repeat for several); name defaults to the file name', (v: string, prev: string[] = []) => [
      ...prev,
      v,
    ])
    .option('--host <address>', 'address to bind (a non-loopback one warns unless --token-file is given)', '127.0.0.1')
    .option('--port <n>', 'port (0: any free port, logged)', parseInteger('--port'), 8080)
    .option('--workers <n>', 'inference worker threads (default 1)', parseInteger('--workers'))
    .option('--threads <n>', 'onnxruntime intra-op threads per worker (default: cores / workers)', parseInteger('--threads'))
    .option('--decode-workers <n>', 'image decoding worker threads (default: cores)', parseInteger('--decode-workers'))
    .option('--max-batch <n>', 'most images per onnxruntime run', parseInteger('--max-batch'), 32)
    .option('--max-queue-delay-ms <ms>', 'longest a request waits for a batch to fill', parseNumber('--max-queue-delay-ms'), 2)
    .option('--max-queue <n>', 'requests in progress at once; more get 429', parseInteger('--max-queue'), 256)
    .option('--timeout-ms <ms>', 'a request still queued this long after arriving gets 503', parseInteger('--timeout-ms'), 10_000)
    .option('--body-limit-mb <mb>', 'largest request body', parseNumber('--body-limit-mb', 0.001, 1024), 16)
    .option('--max-pixels <n>', 'images declaring more pixels are refused (422) undecoded', parseNumber('--max-pixels'), 50e6)
    .option('--max-images <n>', 'images per :classify request (default --max-batch)', parseInteger('--max-images'))
    .option('--token-file <file>', 'require Authorization: Bearer <the token in this file> (health excepted)')
    .option('--drain-timeout-ms <ms>', 'on SIGTERM, how long to finish requests in progress', parseInteger('--drain-timeout-ms'), 30_000)
    .option('--log-level <level>', 'fatal, error, warn, info, debug (one line per request), trace, silent', 'info')
    .option('--labels <classes.txt>', 'class names for models without them in their metadata')
    .option('--mean <r,g,b|mean.npy>', 'per-channel means (pixel units) or a mean image, for models without one')
    .option('--std <r,g,b>', 'per-channel standard deviations (pixel units), for models without metadata')
    .option('--size <n>', "side images are resized to before the center crop (default: the model's, else 256)", parseInteger('--size'))
    .option('--resize <mode>', `how images are resized: ${RESIZE_MODES.join(' or ')} (default squash)`)
    .action(
      action(
        'serve',
        async (flags: ServeFlags, command: Command) => {
          // Loaded here: other commands do not pay for fastify and the worker pools.
          const { parseModelArg, readTokenFile, runServer } = require('@alexnet-stream/serve') as typeof import('@alexnet-stream/serve');
          const models = flags.model.map((spec) => {
            const { name, path } = parseModelArg(spec);
            return { name, path, labels: flags.labels, mean: flags.mean, std: flags.std, size: flags.size, resize: flags.resize };
          });
          const code = await runServer({
            models,
            host: flags.host,
            port: flags.port,
            workers: flags.workers,
            threadsPerWorker: flags.threads,
            decodeWorkers: flags.decodeWorkers,
            maxBatch: flags.maxBatch,
            maxQueueDelayMs: flags.maxQueueDelayMs,
            maxQueue: flags.maxQueue,
            timeoutMs: flags.timeoutMs,
            bodyLimitBytes: Math.round(flags.bodyLimitMb * 1024 * 1024),
            maxPixels: flags.maxPixels,
            maxImagesPerRequest: flags.maxImages,
            token: flags.tokenFile ? readTokenFile(flags.tokenFile) : undefined,
            drainTimeoutMs: flags.drainTimeoutMs,
            logLevel: flags.logLevel as never,
            // What the running server tells clients and logs names its options by these flags.
            optionNames: Object.fromEntries(RUNTIME_OPTIONS.map((key) => [key, flagNamer(command, serveNames)(key)])),
          });
          return code;
        },
        serveNames,
      ),
    );
}
