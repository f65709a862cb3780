/**
 * Writing a shard set (shards.ts describes the directory and its index): `ShardWriter`, a sink
 * from a batch stream to shard files and the prefix's index entry.
 */
import { createHash } from 'node:crypto';
import { type FileHandle, open, readdir, rename, rm, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Writable } from 'node:stream';
import {
  acquireLock,
  AlexnetStreamError,
  check,
  checkOptional,
  describeWriteError,
  InputError,
  type Lock,
  makeDirectory,
  OutputError,
  isStaleTemp,
  type ParameterNamer,
  tempPathFor,
} from '@alexnet-stream/core';
import { recordPieces } from './framing';
import { makeHeader, makeTrailer, type StreamRecord } from './records';
import { checkPrefix, shardFileName, type ShardFileEntry, type ShardSetEntry, updateShardIndex } from './shards';
import { StreamTally } from './stream-check';

export interface ShardWriterOptions {
  dir: string;
  prefix: string;
  /** Images per full batch; recorded in the index (default: the first full batch's size). */
  batchSize?: number;
  /** Batches per shard file (default 1, as the seed: 256 images ≈ 50 MB per file). */
  batchesPerShard?: number;
  /** Class names for the index and shard headers (default: from the incoming stream header). */
  classNames?: string[];
  /** fsync each shard and the index before renaming (default true). */
  fsync?: boolean;
  producer?: string;
  /** Records buffered before backpressure applies. */
  highWaterMark?: number;
}

/** `pieces` without their first `count` bytes. */
function dropBytes(pieces: Uint8Array[], count: number): Uint8Array[] {
  const rest = [...pieces];
  while (count > 0 && rest.length > 0) {
    const first = rest[0];
    if (first.byteLength <= count) {
      count -= first.byteLength;
      rest.shift();
    } else {
      rest[0] = first.subarray(count);
      count = 0;
    }
  }
  return rest;
}

interface OpenShard {
  temp: string;
  final: string;
  handle: FileHandle;
  hash: ReturnType<typeof createHash>;
  bytes: number;
  batches: number;
  images: number;
}

/**
 * A sink: a batch stream (header, batch records, trailer) → shard files + the prefix's index
 * entry. Emits `written` (the batch record) once a batch's bytes are in its file, so that its
 * producer may reuse the buffer, and `shard` (a `ShardFileEntry`) after each shard file is
 * complete. `entry` holds the index entry once the stream has finished. The index entry is
 * written only after the input's trailer has arrived and agreed: an input that ends without
 * it (a producer killed upstream) leaves no entry, and the shards already renamed are removed.
 * An empty stream is an error (an empty dataset), so is a batch after a partial one, a
 * float32 batch, or a batch whose image shape differs from the first. While it writes, the
 * writer holds `<dir>/.<prefix>.lock`: a second writer of the same prefix is refused at once.
 */
export class ShardWriter extends Writable {
  entry: ShardSetEntry | undefined;
  private readonly files: ShardFileEntry[] = [];
  private current: OpenShard | undefined;
  private imageShape: [number, number, number] | undefined;
  private batchSize: number | undefined;
  private classNames: string[] | undefined;
  private maxLabel = -1;
  private images = 0;
  private batches = 0;
  private sawPartial = false;
  private recordIndex = 0;
  private readonly batchesPerShard: number;
  /** The write in flight, so that `_destroy` can wait for it before cleaning up. */
  private busy: Promise<void> = Promise.resolve();
  private oldEntryDropped = false;
  private readonly tally = new StreamTally('input', ['batch'], 'the shard writer');
  private lock: Lock | undefined;

  constructor(private readonly options: ShardWriterOptions) {
    super({ objectMode: true, highWaterMark: options.highWaterMark ?? 2 });
    checkPrefix(options.prefix);
    this.batchesPerShard = check.integer('batchesPerShard', options.batchesPerShard ?? 1, { min: 1 });
    checkOptional.integer('batchSize', options.batchSize, { min: 1 });
    this.batchSize = options.batchSize;
    this.classNames = options.classNames;
  }

  override _construct(callback: (err?: Error | null) => void): void {
    const { dir, prefix } = this.options;
    const start = async (): Promise<void> => {
      await makeDirectory(dir, 'shard directory');
      const advice = (name: ParameterNamer) => `another writer of prefix "${prefix}" runs; wait for it, or use another ${name('prefix')} or ${name('dir')}`;
      this.lock = await acquireLock(join(dir, `.${prefix}.lock`), { purpose: `writing shard set "${prefix}"`, advice }).catch((err: NodeJS.ErrnoException) => {
        if (err instanceof AlexnetStreamError) throw err;
        throw new OutputError(`${dir}: cannot write the shard directory: ${describeWriteError(err)}`, { cause: err });
      });
    };
    start().then(
      () => callback(),
      (err) => callback(err as Error),
    );
  }

  override _write(record: StreamRecord, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.busy = this.writeRecord(record);
    this.busy.then(
      () => callback(),
      (err) => callback(this.asOutputError(err)),
    );
  }

  /** A file-system error (ENOSPC, EIO, EROFS) as one line naming the set, exit 2; ours pass as they are. */
  private asOutputError(err: unknown): Error {
    if (err instanceof AlexnetStreamError || typeof (err as NodeJS.ErrnoException)?.code !== 'string') return err as Error;
    return new OutputError(
      `${this.options.dir}: cannot write shard set "${this.options.prefix}": ${describeWriteError(err)}; no index entry was written for it`,
      {
        cause: err,
      },
    );
  }

  private async writeRecord(record: StreamRecord): Promise<void> {
    if (this.destroyed) return;
    this.recordIndex += 1;
    const where = `record ${this.recordIndex}`;
    this.tally.see(record, where);
    if (record.type === 'header') {
      if (!this.classNames && record.classNames) this.classNames = record.classNames;
      return;
    }
    if (record.type === 'trailer') return; // checked by the tally; finish() requires it
    if (record.type !== 'batch') throw new InputError(`${where}: shards hold batch records, not ${record.type} records (run batch first)`);
    if (record.dtype !== 'uint8') throw new InputError(`${where}: shards hold uint8 batches, this one is ${record.dtype} (write shards before augment)`);
    const [n, c, h, w] = record.shape;
    const first = record.keys[0] ?? '(empty)';
    if (!this.imageShape) this.imageShape = [c, h, w];
    else if (this.imageShape[0] !== c || this.imageShape[1] !== h || this.imageShape[2] !== w) {
      throw new InputError(`${where} (batch starting with ${first}): ${c}x${h}x${w} images, but earlier batches hold ${this.imageShape.join('x')}`);
    }
    if (this.sawPartial) throw new InputError(`${where} (batch starting with ${first}): a batch after a partial batch; only the last batch may be partial`);
    if (this.batchSize === undefined && !record.partial) this.batchSize = n;
    if (this.batchSize !== undefined && (n > this.batchSize || (n < this.batchSize && !record.partial))) {
      throw new InputError(`${where} (batch starting with ${first}): ${n} images in a set of ${this.batchSize}-image batches`);
    }
    if (record.partial) this.sawPartial = true;
    for (const label of record.labels) if (label > this.maxLabel) this.maxLabel = label;

    if (!this.current) await this.openShard();
    const shard = this.current!;
    await this.writePieces(shard, recordPieces(record));
    this.emit('written', record);
    shard.batches += 1;
    shard.images += n;
    this.batches += 1;
    this.images += n;
    if (shard.batches >= this.batchesPerShard) await this.closeShard();
  }

  private async openShard(): Promise<void> {
    const final = join(this.options.dir, shardFileName(this.options.prefix, this.files.length));
    const temp = tempPathFor(final);
    const handle = await open(temp, 'wx');
    this.current = { temp, final, handle, hash: createHash('sha256'), bytes: 0, batches: 0, images: 0 };
    const header = makeHeader('batch', {
      producer: this.options.producer ?? 'alexnet-stream batch',
      shard: { prefix: this.options.prefix, index: this.files.length },
      ...(this.classNames ? { classNames: this.classNames } : {}),
    });
    await this.writePieces(this.current, recordPieces(header));
  }

  /** Append a record's pieces to the shard and its hash (one writev, nothing concatenated). */
  private async writePieces(shard: OpenShard, pieces: Uint8Array[]): Promise<void> {
    for (const piece of pieces) {
      shard.hash.update(piece);
      shard.bytes += piece.byteLength;
    }
    let rest = pieces.filter((p) => p.byteLength > 0);
    while (rest.length > 0) {
      // writev may write less than asked (a signal; more than 2 GB at once): go on from there
      const { bytesWritten } = await shard.handle.writev(rest);
      rest = dropBytes(rest, bytesWritten);
    }
  }

  private async closeShard(): Promise<void> {
    const shard = this.current!;
    this.current = undefined;
    // A shard file is a whole stream of its own (`augment < train-00000.msgpack` works).
    await this.writePieces(
      shard,
      recordPieces(makeTrailer({ records: shard.batches, images: shard.images, producer: this.options.producer ?? 'alexnet-stream batch' })),
    );
    if (this.options.fsync ?? true) await shard.handle.sync();
    await shard.handle.close();
    if (this.destroyed) {
      await unlink(shard.temp).catch(() => undefined);
      return;
    }
    if (!this.oldEntryDropped) {
      // The first rename replaces a file of the old set: drop its entry first. From now until
      // _final the prefix has no entry (incomplete); a run that fails earlier leaves the old set whole.
      await updateShardIndex(this.options.dir, this.options.prefix, null, this.options);
      this.oldEntryDropped = true;
    }
    await rename(shard.temp, shard.final);
    const file: ShardFileEntry = {
      file: basename(shard.final),
      batches: shard.batches,
      images: shard.images,
      bytes: shard.bytes,
      sha256: shard.hash.digest('hex'),
    };
    this.files.push(file);
    this.emit('shard', file);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.busy = this.finish();
    this.busy.then(
      () => callback(),
      (err) => callback(this.asOutputError(err)),
    );
  }

  private async finish(): Promise<void> {
    const trailer = this.tally.end(); // a cut-short input: no index entry (and _destroy removes the shards)
    if (this.current) await this.closeShard();
    if (this.batches === 0 || !this.imageShape) {
      throw new InputError(`no images to write under prefix "${this.options.prefix}": the dataset is empty`, { code: 'ERR_EMPTY_DATASET' });
    }
    const entry: ShardSetEntry = {
      dtype: 'uint8',
      layout: 'NCHW',
      batchSize: this.batchSize ?? this.images,
      imageShape: this.imageShape,
      labelCount: this.classNames ? this.classNames.length : this.maxLabel + 1,
      ...(this.classNames ? { classNames: this.classNames } : {}),
      images: this.images,
      batches: this.batches,
      partialBatches: this.sawPartial ? 1 : 0,
      batchesPerShard: this.batchesPerShard,
      checksum: 'sha256',
      shards: this.files,
      createdAt: new Date().toISOString(),
      producer: this.options.producer ?? 'alexnet-stream batch',
      ...(trailer.skipped !== undefined ? { skipped: trailer.skipped } : {}),
    };
    await updateShardIndex(this.options.dir, this.options.prefix, entry, this.options);
    this.entry = entry;
    await removeStaleFiles(this.options.dir, this.options.prefix, new Set(this.files.map((f) => f.file)));
    await this.lock?.release();
    this.lock = undefined;
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // Wait for the write in flight, then remove this run's temp file and, after a failure, the
    // shards it renamed: no index entry lists them, so they would only be litter.
    const cleanUp = async (): Promise<void> => {
      await this.busy.catch(() => undefined);
      const shard = this.current;
      this.current = undefined;
      if (shard) {
        await shard.handle.close().catch(() => undefined);
        await unlink(shard.temp).catch(() => undefined);
      }
      if (err && !this.entry) {
        for (const f of this.files) await unlink(join(this.options.dir, f.file)).catch(() => undefined);
      }
      await this.lock?.release();
      this.lock = undefined;
    };
    cleanUp().then(() => callback(err));
  }
}

/**
 * After a set is complete: delete `prefix-NNNNN.msgpack` files its entry does not list (left by
 * an earlier, larger run) and temp files of this prefix whose writer process is gone.
 */
async function removeStaleFiles(dir: string, prefix: string, keep: Set<string>): Promise<void> {
  const escaped = prefix.replace(/[.]/g, '\\.');
  const shardPattern = new RegExp(`^${escaped}-\\d{5,}\\.msgpack$`);
  const tempOf = new RegExp(`^\\.(${escaped}-\\d{5,}\\.msgpack)\\.tmp-`);
  for (const name of await readdir(dir)) {
    const temp = tempOf.exec(name);
    // A temp of this host whose writer is gone (atomic-file.ts: temp names carry a host tag).
    if ((shardPattern.test(name) && !keep.has(name)) || (temp && isStaleTemp(name, join(dir, temp[1])))) {
      await rm(join(dir, name), { force: true });
    }
  }
}
