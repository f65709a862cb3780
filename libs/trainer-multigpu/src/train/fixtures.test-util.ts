/**
 * Test fixtures for the trainer: a small, learnable shard data dir written with stream-io's own
 * writers (so tests read what `prepare` writes), and a tiny model spec that trains in
 * milliseconds per step. Used by this package's tests and by test/src/train*.test.ts.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Rng } from '@alexnet-stream/core';
import { type BatchRecord, makeHeader, MeanAccumulator, ShardWriter, type StreamRecord, wholeStream, writeMeanNpy } from '@alexnet-stream/stream-io';
import type { ModelSpec } from '@alexnet-stream/model-alexnet';

export interface FixtureOptions {
  dir: string;
  classes?: number;
  trainPerClass?: number;
  valPerClass?: number;
  /** Stored image side. */
  size?: number;
  /** Stored batch size. */
  batchSize?: number;
  batchesPerShard?: number;
  seed?: number;
}

/**
 * Image of class c: a bright square in one of `classes` positions on a noisy dark background.
 * Learnable by a tiny convnet in a few epochs, and not by chance.
 */
function makeImage(label: number, classes: number, size: number, rng: Rng): Uint8Array {
  const data = new Uint8Array(3 * size * size);
  for (let i = 0; i < data.length; i++) data[i] = 20 + rng.nextInt(40);
  const cols = Math.ceil(Math.sqrt(classes));
  const cell = Math.floor(size / cols);
  const cx = (label % cols) * cell;
  const cy = Math.floor(label / cols) * cell;
  const jitter = Math.max(1, Math.floor(cell / 4));
  const ox = cx + rng.nextInt(jitter);
  const oy = cy + rng.nextInt(jitter);
  const side = Math.max(2, Math.floor(cell * 0.6));
  for (let c = 0; c < 3; c++) {
    for (let y = oy; y < Math.min(size, oy + side); y++) {
      for (let x = ox; x < Math.min(size, ox + side); x++) data[c * size * size + y * size + x] = 200 + rng.nextInt(50);
    }
  }
  return data;
}

function batches(labels: number[], classes: number, size: number, batchSize: number, rng: Rng, prefix: string): BatchRecord[] {
  const out: BatchRecord[] = [];
  const image = 3 * size * size;
  for (let start = 0; start < labels.length; start += batchSize) {
    const part = labels.slice(start, start + batchSize);
    const data = new Uint8Array(part.length * image);
    part.forEach((label, i) => data.set(makeImage(label, classes, size, rng), i * image));
    const record: BatchRecord = {
      type: 'batch',
      dtype: 'uint8',
      shape: [part.length, 3, size, size],
      layout: 'NCHW',
      data,
      labels: Int32Array.from(part),
      keys: part.map((_, i) => `${prefix}/${start + i}`),
    };
    if (part.length < batchSize) record.partial = true;
    out.push(record);
  }
  return out;
}

/** Write `<dir>` with train/val shard sets, mean.npy and classes.txt. Returns the class names. */
export async function writeFixtureDataDir(options: FixtureOptions): Promise<string[]> {
  const classes = options.classes ?? 4;
  const size = options.size ?? 40;
  const batchSize = options.batchSize ?? 8;
  const rng = new Rng(options.seed ?? 7);
  const classNames = Array.from({ length: classes }, (_, i) => `class${i}`);
  mkdirSync(options.dir, { recursive: true });
  const trainLabels = rng.shuffle(Array.from({ length: classes * (options.trainPerClass ?? 10) }, (_, i) => i % classes));
  const valLabels = Array.from({ length: classes * (options.valPerClass ?? 3) }, (_, i) => i % classes);
  const mean = new MeanAccumulator();
  for (const [prefix, labels] of [
    ['train', trainLabels],
    ['val', valLabels],
  ] as const) {
    const records: StreamRecord[] = [...wholeStream(makeHeader('batch', { classNames }), batches(labels, classes, size, batchSize, rng, prefix))];
    if (prefix === 'train') for (const r of records) if (r.type === 'batch') mean.addBatch(r);
    const writer = new ShardWriter({ dir: options.dir, prefix, batchSize, batchesPerShard: options.batchesPerShard ?? 1, fsync: false, classNames });
    await pipeline(Readable.from(records), writer);
  }
  await writeMeanNpy(join(options.dir, 'mean.npy'), mean.mean());
  writeFileSync(join(options.dir, 'classes.txt'), `${classNames.join('\n')}\n`);
  return classNames;
}

/**
 * A tiny network with every kind of layer AlexNet has (grouped conv, LRN, overlapping pool,
 * dropout, fc): ~10k parameters, a few ms per step on onnxruntime.
 */
export function tinySpec(numClasses = 4, inputSize = 35): ModelSpec {
  const n = (std: number) => ({ dist: 'normal' as const, std });
  const c = (value: number) => ({ dist: 'constant' as const, value });
  return {
    specVersion: 1,
    preset: 'theano-alexnet',
    inputChannels: 3,
    inputSize,
    numClasses,
    layers: [
      { kind: 'conv', name: 'conv1', outChannels: 8, kernel: 5, stride: 2, pad: 0, group: 1, weightInit: n(0.05), biasInit: c(0) },
      { kind: 'relu', name: 'relu1' },
      { kind: 'maxpool', name: 'pool1', kernel: 3, stride: 2, pad: 0 },
      { kind: 'lrn', name: 'norm1', size: 5, alpha: 5e-4, beta: 0.75, bias: 2 },
      { kind: 'conv', name: 'conv2', outChannels: 16, kernel: 3, stride: 1, pad: 1, group: 2, weightInit: n(0.05), biasInit: c(0.1) },
      { kind: 'relu', name: 'relu2' },
      { kind: 'maxpool', name: 'pool2', kernel: 3, stride: 2, pad: 0 },
      { kind: 'flatten', name: 'flatten' },
      { kind: 'fc', name: 'fc6', outFeatures: 32, weightInit: n(0.05), biasInit: c(0.1) },
      { kind: 'relu', name: 'relu6' },
      { kind: 'dropout', name: 'drop6', rate: 0.5 },
      { kind: 'fc', name: 'fc8', outFeatures: numClasses, weightInit: n(0.05), biasInit: c(0) },
    ],
  };
}

export function writeSpecFile(path: string, spec: ModelSpec): string {
  writeFileSync(path, JSON.stringify(spec));
  return path;
}
