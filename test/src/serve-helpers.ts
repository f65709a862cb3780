/**
 * Shared by the serve tests: a small exported model (the export path: lowerInference + writeOnnx
 * of a theano-alexnet with widths / 8, fc 64, 6 classes, He-scaled so that predictions depend on
 * the image), a server process started through the CLI on a loopback port, and HTTP helpers.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import type { NamedTensors } from '@alexnet-stream/core';
import { alexnetSpec, inferShapes, initParameters, type ModelSpec, parameterList } from '@alexnet-stream/model-alexnet';
import { lowerInference, writeOnnx } from '@alexnet-stream/onnx-export';
import { resolve } from 'node:path';

export const CLI = resolve(__dirname, '../../apps/cli/bin/alexnet-stream.js');
export const CLASS_NAMES = ['apple', 'bear', 'car', 'dog', 'egg', 'fern'];
export const MEAN_CHANNELS = [121.5, 113.25, 100.75];

export function smallSpec(): ModelSpec {
  const spec = alexnetSpec('theano-alexnet', { numClasses: 6 });
  spec.layers = spec.layers.map((l) =>
    l.kind === 'conv' ? { ...l, outChannels: l.outChannels / 8 } : l.kind === 'fc' && l.name !== 'fc8' ? { ...l, outFeatures: 64 } : l,
  );
  inferShapes(spec);
  return spec;
}

export function smallWeights(spec: ModelSpec, seed: number): NamedTensors {
  const weights = initParameters(spec, seed);
  for (const p of parameterList(spec)) {
    if (p.role === 'weight') {
      const scale = Math.sqrt(2 / p.shape.slice(1).reduce((a, b) => a * b, 1)) / (p.init.dist === 'normal' ? p.init.std : 1);
      weights[p.name] = weights[p.name].map((v) => v * scale);
    }
  }
  return weights;
}

/** Write a small model with class names and channel means in its metadata; `seed` picks the weights. */
export function writeSmallModel(path: string, seed = 3): void {
  const spec = smallSpec();
  writeOnnx(path, lowerInference(spec, smallWeights(spec, seed), { classNames: CLASS_NAMES, meanChannels: MEAN_CHANNELS }));
}

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  /** Every stderr line so far (JSON log lines). */
  log: string[];
  exited: Promise<number | null>;
  stop(): Promise<number | null>;
}

/** Start `alexnet-stream serve --port 0 ...args` and wait for its `listening` log line. */
export async function startServe(args: string[], cwd?: string): Promise<ServerProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  let url: string | undefined;
  let buffered = '';
  const listening = new Promise<string>((resolveUrl, reject) => {
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        log.push(line);
        if (!url && line.includes('"msg":"listening"')) {
          url = JSON.parse(line).url as string;
          resolveUrl(url);
        }
      }
    });
    exited.then((code) => reject(new Error(`serve exited with ${code} before listening:\n${log.join('\n')}${buffered}`)));
  });
  const u = await listening;
  return {
    child,
    url: u,
    log,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

/** The value of one sample line of a Prometheus text body (labels given as a substring). */
export function metric(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.split(/[{ ]/)[0] === name && (labels === '' || l.includes(labels)));
  if (!line) return NaN;
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Mean batch size from the batch-size histogram's _sum / _count for a model. */
export function meanBatch(text: string, model: string): number {
  return metric(text, 'alexnet_serve_batch_size_sum', `model="${model}"`) / metric(text, 'alexnet_serve_batch_size_count', `model="${model}"`);
}

/** Binary-extension infer body: JSON header + raw bytes. */
export function binaryInferBody(
  inputName: string,
  shape: number[],
  data: Float32Array,
  extra: Record<string, unknown> = {},
): { body: Buffer; headerLength: number } {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const header = Buffer.from(
    JSON.stringify({ inputs: [{ name: inputName, shape, datatype: 'FP32', parameters: { binary_data_size: bytes.length } }], ...extra }),
  );
  return { body: Buffer.concat([header, bytes]), headerLength: header.length };
}

/** Split a binary-extension response into its JSON header and binary part. */
export function splitBinaryResponse(
  body: Buffer,
  headerLength: number,
): { header: { outputs: { name: string; parameters: { binary_data_size: number } }[] }; binary: Buffer } {
  return { header: JSON.parse(body.subarray(0, headerLength).toString('utf8')), binary: body.subarray(headerLength) };
}
