/**
 * Reading a shard set (shards.ts describes the directory): the pure parts the training loader
 * uses (`decodeShard`, `verifyShard`, `readShard`, `planShardOrder`) and `ShardReader`, the
 * stream stage (dir → header + batches + trailer).
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Unpackr } from 'msgpackr';
import { check, checkOptional, describeReadError, InputError, readRegularFileAsync, Rng } from '@alexnet-stream/core';
import { decodeRecord } from './framing';
import { type BatchRecord, LEGACY_SCHEMA, makeHeader, makeTrailer, SCHEMA, type StreamHeader, type StreamRecord } from './records';
import { checkPrefix, readShardIndex, type ShardFileEntry, shardSet, type ShardSetEntry } from './shards';
import { StreamTally } from './stream-check';

const unpackr = new Unpackr({ useRecords: false });

/** A decoded shard file. */
export interface DecodedShard {
  header: StreamHeader;
  batches: BatchRecord[];
}

/**
 * Decode the bytes of one shard file: a header, uint8 batch records and the trailer that
 * counts them (each record validated like any stream's). A shard of an older data dir (schema
 * "alexnet-stream/1", written before streams had trailers) is read without one: its index
 * entry (size, sha256, counts) is what proves it whole. A truncated or foreign file is an
 * `InputError` naming `name`.
 */
export function decodeShard(bytes: Uint8Array, name: string): DecodedShard {
  const values: unknown[] = [];
  let consumed = 0;
  try {
    unpackr.unpackMultiple(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), (value: unknown, _start?: number, end?: number) => {
      values.push(value);
      consumed = end ?? bytes.byteLength;
      return true;
    });
  } catch (err) {
    const e = err as Error & { incomplete?: boolean };
    throw new InputError(`${name}: ${e.incomplete ? 'truncated' : 'corrupt'} shard: record ${values.length + 1} cannot be read (${e.message})`, {
      code: e.incomplete ? 'ERR_SHARD_TRUNCATED' : 'ERR_SHARD_CORRUPT',
      cause: err,
    });
  }
  if (consumed !== bytes.byteLength) {
    throw new InputError(`${name}: truncated shard (${bytes.byteLength - consumed} trailing bytes)`, { code: 'ERR_SHARD_TRUNCATED' });
  }
  if (values.length === 0) throw new InputError(`${name}: empty shard file`, { code: 'ERR_SHARD_TRUNCATED' });
  const first = values[0] as Record<string, unknown> | null;
  const legacy = first !== null && typeof first === 'object' && first.type === 'header' && first.schema === LEGACY_SCHEMA;
  if (legacy) values[0] = { ...first, schema: SCHEMA };
  const tally = new StreamTally(name, ['batch']);
  const batches: BatchRecord[] = [];
  for (let i = 0; i < values.length; i++) {
    const where = `${name} record ${i + 1}`;
    const record = decodeRecord(values[i], where, tally.header);
    if (i === 0 && record.type !== 'header') {
      throw new InputError(`${name}: not a shard file (it does not start with a batch stream header)`, { code: 'ERR_SHARD_CORRUPT' });
    }
    tally.see(record, where);
    if (record.type === 'batch') {
      if (record.dtype !== 'uint8') {
        throw new InputError(`${where}: a shard holds uint8 batch records, this is a ${record.dtype} batch`, { code: 'ERR_SHARD_CORRUPT' });
      }
      batches.push(record);
    }
  }
  if (!legacy) tally.end();
  return { header: tally.header!, batches };
}

/** Check `bytes` against the index entry's size and sha256; a mismatch is an `InputError` naming `name`. */
export function verifyShard(bytes: Uint8Array, entry: ShardFileEntry, name: string): void {
  if (bytes.byteLength !== entry.bytes) {
    throw new InputError(`${name}: ${bytes.byteLength} bytes but the index says ${entry.bytes}: the shard is truncated or was replaced; regenerate it`, {
      code: 'ERR_SHARD_SIZE',
    });
  }
  const digest = createHash('sha256').update(bytes).digest('hex');
  if (digest !== entry.sha256) {
    throw new InputError(
      `${name}: sha256 checksum mismatch (file ${digest.slice(0, 12)}…, index ${entry.sha256.slice(0, 12)}…): the shard is corrupt; regenerate it`,
      { code: 'ERR_SHARD_CHECKSUM' },
    );
  }
}

/**
 * Read one shard of a set: the whole file (one shard is the unit of memory: `batchesPerShard`
 * batches), verified against the index (unless `verify: false`), decoded and checked against the
 * entry's counts and image shape.
 */
export async function readShard(dir: string, set: ShardSetEntry, file: ShardFileEntry, options: { verify?: boolean } = {}): Promise<DecodedShard> {
  const path = join(dir, file.file);
  let bytes: Buffer;
  try {
    // No more than the index says the file holds: a larger file is not read into memory.
    bytes = await readRegularFileAsync(path, { maxBytes: file.bytes, limitName: `the ${file.bytes} bytes the index lists` });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new InputError(
      `${path}: cannot read shard (${e.code === 'ENOENT' ? 'missing; the directory is incomplete' : `${describeReadError(err)}; the shard was replaced or damaged, regenerate it`})`,
      { code: e.code === 'ENOENT' ? 'ERR_SHARD_MISSING' : 'ERR_SHARD_UNREADABLE', cause: err },
    );
  }
  if (options.verify ?? true) verifyShard(bytes, file, path);
  const shard = decodeShard(bytes, path);
  const images = shard.batches.reduce((n, b) => n + b.shape[0], 0);
  if (shard.batches.length !== file.batches || images !== file.images) {
    throw new InputError(`${path}: holds ${images} images in ${shard.batches.length} batches but the index says ${file.images} in ${file.batches}`, {
      code: 'ERR_SHARD_COUNTS',
    });
  }
  const [c, h, w] = set.imageShape;
  for (const b of shard.batches) {
    if (b.shape[1] !== c || b.shape[2] !== h || b.shape[3] !== w) {
      throw new InputError(`${path}: a batch of ${b.shape.slice(1).join('x')} images in a set of ${set.imageShape.join('x')} images`, {
        code: 'ERR_SHARD_CORRUPT',
      });
    }
  }
  return shard;
}

export interface ShardOrderOptions {
  /** Shuffle the shard order (and `shuffleWithin` the batches of each shard) with `seed`. */
  shuffle?: boolean;
  seed?: number;
  /** Keep only shards at positions p (after shuffling) with p % count === index. */
  shard?: { index: number; count: number };
}

/**
 * The order in which to read a set's shards: indices into `set.shards`. Shuffled with the seed
 * first, then taken every `count`-th from `index`, so workers that use the same seed and
 * different `index` read disjoint shards that together cover the set.
 */
export function planShardOrder(shardCount: number, options: ShardOrderOptions = {}): number[] {
  const order = Array.from({ length: shardCount }, (_, i) => i);
  if (options.shuffle) new Rng(options.seed ?? 0).shuffle(order);
  const part = options.shard;
  return part ? order.filter((_, position) => position % part.count === part.index) : order;
}

export interface ShardReaderOptions extends ShardOrderOptions {
  dir: string;
  prefix: string;
  /** Verify sha256 checksums (default true). */
  verify?: boolean;
  /** Records buffered before backpressure applies. */
  highWaterMark?: number;
  /** Injectable for tests: how one shard is read (default `readShard`). */
  readShard?: typeof readShard;
}

/**
 * Shard directory → a batch stream: a header (class names, `prefix`) then the uint8 batches of
 * the selected shards, then the trailer. Holds one shard (plus `highWaterMark` records) in
 * memory. With `shuffle`, the order of batches inside each shard is shuffled too (with one batch
 * per shard, the default, that is simply a shuffled batch order).
 *
 * The records come from an async generator (`records()`), pulled as `Readable.from` pulls one:
 * the stream is a class only so that it can say what it read (`set`, `selectedShards`). It emits
 * `backpressure` each time its buffer is full and it stops reading until the consumer takes
 * records: with a stalled consumer it holds the header, `highWaterMark` records and one shard.
 */
export class ShardReader extends Readable {
  /** The set being read (after the index is read). */
  set: ShardSetEntry | undefined;
  /** How many shards the order/selection kept (after the index is read). */
  get selectedShards(): number {
    return this.order?.length ?? 0;
  }
  private order: number[] | undefined;
  private readonly source: AsyncGenerator<StreamRecord>;
  private pulling = false;

  constructor(private readonly options: ShardReaderOptions) {
    super({ objectMode: true, highWaterMark: options.highWaterMark ?? 2 });
    checkPrefix(options.prefix);
    checkOptional.seed('seed', options.seed);
    if (options.shard) check.shard('shard', options.shard);
    this.source = this.records();
  }

  /** Readable.from's loop: pull records until the buffer is full; the next _read goes on. */
  override _read(): void {
    if (this.pulling) return;
    this.pulling = true;
    void (async () => {
      try {
        for (;;) {
          const { value, done } = await this.source.next();
          if (done) {
            this.push(null);
            return;
          }
          if (!this.push(value)) {
            this.emit('backpressure');
            return;
          }
        }
      } catch (err) {
        this.destroy(err as Error);
      } finally {
        this.pulling = false;
      }
    })();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // Ends the generator (a shard being read is dropped) unless it is running: it then stops at its next yield.
    this.source.return(undefined).then(
      () => callback(err),
      () => callback(err),
    );
  }

  private async *records(): AsyncGenerator<StreamRecord> {
    const o = this.options;
    const index = await readShardIndex(o.dir);
    const set = shardSet(index, o.prefix, o.dir);
    this.set = set;
    const order = planShardOrder(set.shards.length, o);
    this.order = order;
    const rng = o.shuffle ? new Rng(((o.seed ?? 0) ^ 0x5bd1e995) >>> 0) : undefined;
    const [, height, width] = set.imageShape;
    yield makeHeader('batch', {
      producer: 'alexnet-stream read',
      prefix: o.prefix,
      ...(set.classNames ? { classNames: set.classNames } : {}),
      batchSize: Math.max(set.batchSize, 1),
      dtype: 'uint8',
      ...(height === width ? { imageSize: height } : {}),
    });
    let batches = 0;
    let images = 0;
    for (const position of order) {
      const shard = await (o.readShard ?? readShard)(o.dir, set, set.shards[position], { verify: o.verify });
      for (const batch of rng ? rng.shuffle(shard.batches) : shard.batches) {
        batches += 1;
        images += batch.shape[0];
        yield batch;
      }
    }
    // The whole set read: what its writer counted as skipped belongs to this stream too.
    const whole = order.length === set.shards.length;
    yield makeTrailer({ records: batches, images, skipped: whole ? set.skipped : undefined, producer: 'alexnet-stream read' });
  }
}
