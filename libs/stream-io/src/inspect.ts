/**
 * A human (or `--json`) summary of any record stream or shard directory: record counts,
 * shapes, label histogram, per-channel pixel statistics (mean, std, min, max).
 *
 * `StreamInspector` is the pure accumulator (memory: one counter per distinct shape and label);
 * `formatSummary` renders its `summary()` as text; `inspectShardDir` runs it over every (or one)
 * prefix of a shard directory.
 */
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { InputError } from '@alexnet-stream/core';
import type { StreamRecord } from './records';
import { ShardReader } from './shard-reader';
import { readShardIndex, type ShardSetEntry } from './shards';
import { StreamTally } from './stream-check';

export interface ChannelStats {
  mean: number;
  std: number;
  min: number;
  max: number;
}

export interface InspectSummary {
  /** Stream kind from the header (`item`, `image`, `batch`), when there was a header. */
  kind?: string;
  producer?: string;
  classNames?: string[];
  /** Records after the header. */
  records: number;
  /** Items or images (the images inside batches counted one by one). */
  images: number;
  /** Distinct record shapes and how many records had each ("3x256x256", "256x3x256x256 uint8"). */
  shapes: Record<string, number>;
  partialBatches: number;
  /** Label → count, in label order. */
  labels: Record<string, number>;
  /** Per channel over every pixel of every image (absent for item streams). */
  channels: ChannelStats[];
  /** Whether the stream ended with its trailer (every summary of a stream read to its end does). */
  complete: boolean;
  /** Source items dropped upstream, as the trailer counts them (when it says). */
  skipped?: number;
}

interface ChannelAccumulator {
  count: number;
  sum: number;
  sumSquares: number;
  min: number;
  max: number;
}

/**
 * Accumulates a summary record by record. The stream's order is checked as it goes; `end()`
 * (the sink calls it) fails on a stream that stopped without its trailer, so no summary of a
 * cut-short stream is printed as if it were the whole.
 */
export class StreamInspector {
  private readonly tally: StreamTally;
  /** Records seen, header and trailer included (for messages). */
  private seen = 0;
  private records = 0;
  private images = 0;
  private partialBatches = 0;
  private readonly shapes = new Map<string, number>();
  private readonly labels = new Map<number, number>();
  private readonly channels: ChannelAccumulator[] = [];

  constructor(source = 'input') {
    this.tally = new StreamTally(source, ['item', 'image', 'batch'], 'inspect');
  }

  add(record: StreamRecord): void {
    this.tally.see(record, `record ${++this.seen}`);
    if (record.type === 'header' || record.type === 'trailer') return;
    this.records += 1;
    if (record.type === 'item') {
      this.count(this.shapes, 'item');
      this.count(this.labels, record.label);
      this.images += 1;
    } else if (record.type === 'image') {
      this.count(this.shapes, `${record.channels}x${record.height}x${record.width}`);
      this.count(this.labels, record.label);
      this.images += 1;
      this.addPixels(record.data, 1, record.channels, record.height * record.width);
    } else {
      this.count(this.shapes, `${record.shape.join('x')} ${record.dtype}`);
      for (const label of record.labels) this.count(this.labels, label);
      const [n, c, h, w] = record.shape;
      this.images += n;
      if (record.partial) this.partialBatches += 1;
      this.addPixels(record.data, n, c, h * w);
    }
  }

  private count<K>(map: Map<K, number>, key: K): void {
    map.set(key, (map.get(key) ?? 0) + 1);
  }

  private addPixels(data: Uint8Array | Float32Array, n: number, channels: number, plane: number): void {
    for (let c = 0; c < channels; c++) {
      // Sums per record in locals (fast), folded into float64 totals.
      let sum = 0;
      let sumSquares = 0;
      let min = Infinity;
      let max = -Infinity;
      for (let i = 0; i < n; i++) {
        const base = (i * channels + c) * plane;
        for (let p = base; p < base + plane; p++) {
          const v = data[p];
          sum += v;
          sumSquares += v * v;
          if (v < min) min = v;
          if (v > max) max = v;
        }
      }
      const acc = (this.channels[c] ??= { count: 0, sum: 0, sumSquares: 0, min: Infinity, max: -Infinity });
      acc.count += n * plane;
      acc.sum += sum;
      acc.sumSquares += sumSquares;
      if (min < acc.min) acc.min = min;
      if (max > acc.max) acc.max = max;
    }
  }

  /** At the end of the input: throws unless the stream ended with its trailer. */
  end(): void {
    this.tally.end();
  }

  private get header() {
    return this.tally.header;
  }

  summary(): InspectSummary {
    const labels: Record<string, number> = {};
    for (const label of [...this.labels.keys()].sort((a, b) => a - b)) labels[String(label)] = this.labels.get(label)!;
    return {
      ...(this.header ? { kind: this.header.kind } : {}),
      ...(this.header?.producer ? { producer: this.header.producer } : {}),
      ...(this.header?.classNames ? { classNames: this.header.classNames } : {}),
      records: this.records,
      images: this.images,
      shapes: Object.fromEntries(this.shapes),
      partialBatches: this.partialBatches,
      labels,
      channels: this.channels.map((a) => {
        const mean = a.sum / a.count;
        // population std; max(0, …) guards the tiny negative a rounding difference can give
        return { mean, std: Math.sqrt(Math.max(0, a.sumSquares / a.count - mean * mean)), min: a.min, max: a.max };
      }),
      complete: this.tally.complete,
      ...(this.tally.trailer?.skipped !== undefined ? { skipped: this.tally.trailer.skipped } : {}),
    };
  }
}

/** Inspect an in-memory list of records (tests, small streams). */
export function inspectRecords(records: Iterable<StreamRecord>): InspectSummary {
  const inspector = new StreamInspector();
  for (const r of records) inspector.add(r);
  return inspector.summary();
}

/** A sink that feeds every record to `inspector` (and to `onRecord`, e.g. for a contact sheet). */
export function inspectorSink(inspector: StreamInspector, onRecord?: (record: StreamRecord) => void | Promise<void>): Writable {
  return new Writable({
    objectMode: true,
    highWaterMark: 2,
    write(record: StreamRecord, _enc, callback) {
      try {
        inspector.add(record);
        Promise.resolve(onRecord?.(record)).then(() => callback(), callback);
      } catch (err) {
        callback(err as Error);
      }
    },
    final(callback) {
      try {
        inspector.end();
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
  });
}

const fmt = (v: number, digits = 2): string => (Number.isInteger(v) ? String(v) : v.toFixed(digits));

/** Render a summary as indented text, one fact per line. `title` heads it (a prefix, "stdin"). */
export function formatSummary(summary: InspectSummary, title: string, indent = ''): string {
  const lines: string[] = [`${title}:`];
  lines.push(`  stream: ${summary.kind ?? 'unknown'} records${summary.producer ? ` (from ${summary.producer})` : ''}`);
  lines.push(
    `  records: ${summary.records}, images: ${summary.images}${summary.partialBatches ? `, partial batches: ${summary.partialBatches}` : ''}${summary.skipped ? `, ${summary.skipped} source items skipped upstream` : ''}`,
  );
  lines.push(
    `  shapes: ${
      Object.entries(summary.shapes)
        .map(([s, n]) => `${s} (x${n})`)
        .join(', ') || 'none'
    }`,
  );
  const names = summary.classNames;
  const labelEntries = Object.entries(summary.labels);
  lines.push(`  labels: ${labelEntries.length} distinct${names ? ` of ${names.length} classes` : ''}`);
  const shown = labelEntries.slice(0, 20);
  const width = Math.max(1, ...shown.map(([, n]) => n));
  for (const [label, n] of shown) {
    const name = names?.[Number(label)];
    lines.push(`    ${label.padStart(5)} ${(name ?? '').padEnd(20).slice(0, 20)} ${String(n).padStart(8)} ${'#'.repeat(Math.round((30 * n) / width))}`);
  }
  if (labelEntries.length > shown.length) lines.push(`    … ${labelEntries.length - shown.length} more labels (--json lists all)`);
  summary.channels.forEach((c, i) => {
    lines.push(`  channel ${i}: mean ${fmt(c.mean, 3)}, std ${fmt(c.std, 3)}, min ${fmt(c.min)}, max ${fmt(c.max)}`);
  });
  return lines.map((l) => `${indent}${l}\n`).join('');
}

export interface ShardDirSummary {
  dir: string;
  /** Whether shard checksums were verified while reading. */
  verified: boolean;
  prefixes: Record<string, { index: Omit<ShardSetEntry, 'shards' | 'classNames'> & { shardFiles: number }; summary: InspectSummary }>;
}

/**
 * Summarise a shard directory: every prefix (or only `prefix`), reading and verifying every
 * shard. `onRecord` sees each record (progress, contact sheet).
 */
export async function inspectShardDir(
  dir: string,
  options: { prefix?: string; verify?: boolean; onRecord?: (record: StreamRecord, prefix: string) => void | Promise<void> } = {},
): Promise<ShardDirSummary> {
  const index = await readShardIndex(dir);
  const prefixes = options.prefix ? [options.prefix] : Object.keys(index.prefixes).sort();
  if (prefixes.length === 0) throw new InputError(`${dir}: the shard index lists no complete shard sets`);
  const result: ShardDirSummary = { dir, verified: options.verify ?? true, prefixes: {} };
  for (const prefix of prefixes) {
    const inspector = new StreamInspector();
    const reader = new ShardReader({ dir, prefix, verify: options.verify });
    await pipeline(
      reader,
      inspectorSink(inspector, (r) => options.onRecord?.(r, prefix)),
    );
    const { shards, classNames: _names, ...rest } = reader.set!;
    result.prefixes[prefix] = { index: { ...rest, shardFiles: shards.length }, summary: inspector.summary() };
  }
  return result;
}

/** Text for a shard directory summary: the index facts, then each prefix's stream summary. */
export function formatShardDirSummary(result: ShardDirSummary): string {
  let text = `${result.dir}: shard directory\n`;
  for (const [prefix, { index, summary }] of Object.entries(result.prefixes)) {
    text +=
      `  ${prefix}: ${index.images} images in ${index.batches} batches of ${index.batchSize} (${index.partialBatches} partial), ` +
      `${index.shardFiles} shard files, images ${index.imageShape.join('x')}, ${index.labelCount} labels, ` +
      `${result.verified ? `all ${index.checksum} checksums verified` : 'checksums not verified'}\n`;
    text += formatSummary(summary, `${prefix} contents`, '  ');
  }
  return text;
}
