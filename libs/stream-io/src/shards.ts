/**
 * Shard directories (DESIGN §4): `train-00000.msgpack` … plus `index.json`.
 *
 * A shard file is itself a record stream: a header (kind `batch`, with `shard: {prefix, index}`
 * and the class names) followed by uint8 NCHW batch records, so `cat train-00000.msgpack |
 * alexnet-stream augment …` works. `index.json` is keyed by prefix, so `--prefix train` and
 * `--prefix val` writers share one directory:
 *
 * ```json
 * { "schema": "alexnet-stream/shards/1",
 *   "prefixes": { "train": { "batchSize": 256, "imageShape": [3, 256, 256], "labelCount": 1000,
 *                            "classNames": [...], "images": 1281167, "batches": 5005, "partialBatches": 1,
 *                            "batchesPerShard": 1, "checksum": "sha256",
 *                            "shards": [{ "file": "train-00000.msgpack", "batches": 1, "images": 256,
 *                                         "bytes": 50331900, "sha256": "…" }, …] } } }
 * ```
 *
 * Atomicity: every shard is written to a hidden temp file (`.train-00000.msgpack.tmp-PID-…`)
 * and renamed when complete; a writer removes its prefix's entry from `index.json` before its
 * first rename and adds the new entry only after its last shard is renamed (index updates are serialised by an
 * `index.json.lock` file and are themselves temp + rename). Readers read only the files an
 * index entry lists and verify each one's sha256, so a killed writer, a leftover temp file or a
 * damaged shard is never taken as whole.
 *
 * Pure parts for the training loader: `readShardIndex`, `shardSet`, `planShardOrder`,
 * `decodeShard`, `verifyShard`, `readShard`. Streams: `ShardWriter` (batches → dir) and
 * `ShardReader` (dir → header + batches).
 */
import { createHash } from 'node:crypto';
import { type FileHandle, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { Unpackr } from 'msgpackr';
import {
  acquireLock,
  AlexnetStreamError,
  check,
  checkOptional,
  describeReadError,
  describeWriteError,
  InputError,
  Lock,
  makeDirectory,
  OutputError,
  type ParameterNamer,
  processIsGone,
  readRegularFileAsync,
  Rng,
  tempPathFor,
  writeFileAtomic,
} from '@alexnet-stream/core';
import { decodeRecord, recordPieces } from './framing';
import { BatchRecord, LEGACY_SCHEMA, makeHeader, makeTrailer, SCHEMA, StreamHeader, StreamRecord } from './records';
import { StreamTally } from './stream-check';

export const SHARD_INDEX_SCHEMA = 'alexnet-stream/shards/1';
export const SHARD_INDEX_FILE = 'index.json';

/** One shard file as listed in the index. */
export interface ShardFileEntry {
  file: string;
  batches: number;
  images: number;
  bytes: number;
  sha256: string;
}

/** Everything written under one prefix (`train`, `val`, …). */
export interface ShardSetEntry {
  dtype: 'uint8';
  layout: 'NCHW';
  batchSize: number;
  /** [channels, height, width] of every image. */
  imageShape: [number, number, number];
  /** Number of classes: class names' count when known, else the largest label + 1. */
  labelCount: number;
  classNames?: string[];
  images: number;
  batches: number;
  /** 1 when the last batch is smaller than `batchSize` (kept, marked `partial`), else 0. */
  partialBatches: number;
  batchesPerShard: number;
  checksum: 'sha256';
  shards: ShardFileEntry[];
  createdAt: string;
  producer?: string;
  /**
   * Source items that did not become images of this set (undecodable files, images dropped
   * by --drop-last), as the input stream's trailer counted them; absent in older indexes.
   */
  skipped?: number;
}

export interface ShardIndex {
  schema: typeof SHARD_INDEX_SCHEMA;
  prefixes: Record<string, ShardSetEntry>;
}

// ---------------------------------------------------------------------------------------------
// Names and the index

/** `train`, 0 → `train-00000.msgpack`. */
export function shardFileName(prefix: string, index: number): string {
  return `${prefix}-${String(index).padStart(5, '0')}.msgpack`;
}

/** A prefix must be a plain file-name part: letters, digits, `_`, `-`, `.`; not starting with `.`. */
export function checkPrefix(prefix: string): string {
  return check.string('prefix', prefix, {
    pattern: /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/,
    expected: 'a shard prefix of letters, digits, "_", "-" or "." (not starting with ".")',
  });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function validateEntry(entry: unknown, where: string): ShardSetEntry {
  const fail = (what: string): never => {
    throw new InputError(`${where}: ${what}; the index is damaged or was not written by alexnet-stream`, { code: 'ERR_SHARD_INDEX' });
  };
  if (!isObject(entry)) return fail('entry is not an object');
  const e = entry;
  if (e.dtype !== 'uint8' || e.layout !== 'NCHW') fail(`dtype/layout ${JSON.stringify(e.dtype)}/${JSON.stringify(e.layout)} (expected uint8/NCHW)`);
  for (const name of ['batchSize', 'labelCount', 'images', 'batches', 'partialBatches', 'batchesPerShard']) {
    if (!Number.isInteger(e[name]) || (e[name] as number) < 0) fail(`"${name}" is not a non-negative integer`);
  }
  const shape = e.imageShape;
  if (!Array.isArray(shape) || shape.length !== 3 || !shape.every((d) => Number.isInteger(d) && d >= 1)) fail('"imageShape" is not [C, H, W]');
  if (e.classNames !== undefined && !(Array.isArray(e.classNames) && e.classNames.every((n) => typeof n === 'string'))) fail('"classNames" is not a list of strings');
  if (e.skipped !== undefined && (!Number.isInteger(e.skipped) || (e.skipped as number) < 0)) fail('"skipped" is not a non-negative integer');
  if (!Array.isArray(e.shards)) fail('"shards" is not a list');
  let images = 0;
  let batches = 0;
  for (const s of e.shards as unknown[]) {
    if (!isObject(s) || typeof s.file !== 'string' || typeof s.sha256 !== 'string' || !Number.isInteger(s.bytes) || !Number.isInteger(s.images) || !Number.isInteger(s.batches)) {
      fail(`shard entry ${JSON.stringify(s)} lacks file/bytes/images/batches/sha256`);
    }
    const file = (s as Record<string, unknown>).file as string;
    if (file !== basename(file) || file.startsWith('.')) fail(`shard file name ${JSON.stringify(file)} is not a plain file name`);
    images += (s as Record<string, number>).images;
    batches += (s as Record<string, number>).batches;
  }
  if (images !== e.images || batches !== e.batches) fail(`shards hold ${images} images in ${batches} batches but the entry says ${e.images} in ${e.batches}`);
  return e as unknown as ShardSetEntry;
}

/** Parse and validate the text of an `index.json`; `name` appears in errors. */
export function parseShardIndex(text: string, name: string): ShardIndex {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new InputError(`${name}: not valid JSON (${(err as Error).message}); the index is damaged`, { code: 'ERR_SHARD_INDEX', cause: err });
  }
  if (!isObject(raw) || raw.schema !== SHARD_INDEX_SCHEMA || !isObject(raw.prefixes)) {
    throw new InputError(
      `${name}: not an alexnet-stream shard index (expected "schema": ${JSON.stringify(SHARD_INDEX_SCHEMA)} and "prefixes")`,
      { code: 'ERR_SHARD_INDEX' },
    );
  }
  // No prototype: a prefix named `__proto__` is an ordinary key here, never the object's prototype.
  const prefixes: Record<string, ShardSetEntry> = Object.create(null) as Record<string, ShardSetEntry>;
  for (const [prefix, entry] of Object.entries(raw.prefixes)) prefixes[prefix] = validateEntry(entry, `${name} prefix "${prefix}"`);
  return { schema: SHARD_INDEX_SCHEMA, prefixes };
}

/** The largest index.json read (a million shards' entries fit). */
const MAX_INDEX_BYTES = 256 << 20;

/** Read and validate `<dir>/index.json`. A missing dir or index is an `InputError` that says so. */
export async function readShardIndex(dir: string): Promise<ShardIndex> {
  const path = join(dir, SHARD_INDEX_FILE);
  let text: string;
  try {
    text = (await readRegularFileAsync(path, { maxBytes: MAX_INDEX_BYTES })).toString('utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') {
      const dirExists = await stat(dir).then((s) => s.isDirectory(), () => false);
      throw new InputError(
        dirExists
          ? `${dir}: no ${SHARD_INDEX_FILE}: not a shard directory, or its writer did not finish (shards count only once the index lists them)`
          : `${dir}: no such directory`,
        { code: 'ERR_NO_SHARD_INDEX', cause: err },
      );
    }
    throw new InputError(`${path}: cannot read the shard index: ${describeReadError(err)}`, { code: 'ERR_SHARD_INDEX', cause: err });
  }
  return parseShardIndex(text, path);
}

/** The entry for `prefix`, or an error that lists the prefixes the index does have. */
export function shardSet(index: ShardIndex, prefix: string, dir = '.'): ShardSetEntry {
  // Own keys only: `--prefix constructor` names no set.
  const entry = Object.hasOwn(index.prefixes, prefix) ? index.prefixes[prefix] : undefined;
  if (!entry) {
    const have = Object.keys(index.prefixes).sort();
    throw new InputError(
      `${join(dir, SHARD_INDEX_FILE)}: no complete shard set with prefix "${prefix}" ` +
        `(${have.length ? `it has ${have.map((p) => `"${p}"`).join(', ')}` : 'it lists none'}; an interrupted writer leaves no entry)`,
      { code: 'ERR_NO_SHARD_SET' },
    );
  }
  return entry;
}

/** Run `fn` holding `<dir>/index.json.lock` (lock-file.ts: a lock whose process is gone is broken). */
async function withIndexLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = await acquireLock(join(dir, `${SHARD_INDEX_FILE}.lock`), { purpose: 'updating the shard index', waitMs: 60_000 });
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}

/**
 * Set (or with `entry === null`, remove) the entry for `prefix` in `<dir>/index.json`, keeping
 * the other prefixes' entries. Serialised across processes by a lock file; written atomically.
 */
export async function updateShardIndex(dir: string, prefix: string, entry: ShardSetEntry | null, options: { fsync?: boolean } = {}): Promise<void> {
  await withIndexLock(dir, async () => {
    const path = join(dir, SHARD_INDEX_FILE);
    let index: ShardIndex = { schema: SHARD_INDEX_SCHEMA, prefixes: Object.create(null) as ShardIndex['prefixes'] };
    const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (text !== undefined) index = parseShardIndex(text, path);
    if (entry === null) {
      if (!(prefix in index.prefixes)) return;
      delete index.prefixes[prefix];
    } else index.prefixes[prefix] = entry;
    await writeFileAtomic(path, `${JSON.stringify(index, null, 1)}\n`, options);
  });
}

// ---------------------------------------------------------------------------------------------
// Reading shards (pure parts first)

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
    throw new InputError(
      `${name}: ${bytes.byteLength} bytes but the index says ${entry.bytes}: the shard is truncated or was replaced; regenerate it`,
      { code: 'ERR_SHARD_SIZE' },
    );
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
    throw new InputError(
      `${path}: holds ${images} images in ${shard.batches.length} batches but the index says ${file.images} in ${file.batches}`,
      { code: 'ERR_SHARD_COUNTS' },
    );
  }
  const [c, h, w] = set.imageShape;
  for (const b of shard.batches) {
    if (b.shape[1] !== c || b.shape[2] !== h || b.shape[3] !== w) {
      throw new InputError(
        `${path}: a batch of ${b.shape.slice(1).join('x')} images in a set of ${set.imageShape.join('x')} images`,
        { code: 'ERR_SHARD_CORRUPT' },
      );
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
}

/**
 * Shard directory → a batch stream: a header (class names, `prefix`) then the uint8 batches of
 * the selected shards. Holds one shard (plus `highWaterMark` records) in memory. With `shuffle`,
 * the order of batches inside each shard is shuffled too (with one batch per shard, the default,
 * that is simply a shuffled batch order).
 */
export class ShardReader extends Readable {
  /** The set being read (after the index is read). */
  set: ShardSetEntry | undefined;
  /** How many shards the order/selection kept (after the index is read). */
  get selectedShards(): number {
    return this.order?.length ?? 0;
  }
  private order: number[] | undefined;
  private position = 0;
  private queue: BatchRecord[] = [];
  private rng: Rng | undefined;
  private reading = false;
  private readAgain = false;
  private exhausted = false;
  private batchesOut = 0;
  private imagesOut = 0;

  constructor(private readonly options: ShardReaderOptions) {
    super({ objectMode: true, highWaterMark: options.highWaterMark ?? 2 });
    checkPrefix(options.prefix);
    checkOptional.seed('seed', options.seed);
    if (options.shard) check.shard('shard', options.shard);
  }

  override _read(): void {
    if (this.reading) {
      this.readAgain = true; // asked for more while a pump runs: pump again when it ends
      return;
    }
    this.reading = true;
    this.readAgain = false;
    this.pump().then(
      () => {
        this.reading = false;
        if (this.readAgain && !this.destroyed && !this.exhausted) this._read();
      },
      (err) => this.destroy(err as Error),
    );
  }

  private async pump(): Promise<void> {
    const o = this.options;
    if (!this.order) {
      const index = await readShardIndex(o.dir);
      this.set = shardSet(index, o.prefix, o.dir);
      this.order = planShardOrder(this.set.shards.length, o);
      if (o.shuffle) this.rng = new Rng(((o.seed ?? 0) ^ 0x5bd1e995) >>> 0);
      const [, height, width] = this.set.imageShape;
      const header = makeHeader('batch', {
        producer: 'alexnet-stream read',
        prefix: o.prefix,
        ...(this.set.classNames ? { classNames: this.set.classNames } : {}),
        batchSize: Math.max(this.set.batchSize, 1),
        dtype: 'uint8',
        ...(height === width ? { imageSize: height } : {}),
      });
      if (!this.push(header)) return;
    }
    for (;;) {
      while (this.queue.length > 0) {
        const batch = this.queue.shift()!;
        this.batchesOut += 1;
        this.imagesOut += batch.shape[0];
        if (!this.push(batch)) return;
      }
      if (this.position >= this.order.length) {
        this.exhausted = true;
        // The whole set read: what its writer counted as skipped belongs to this stream too.
        const whole = this.order.length === this.set!.shards.length;
        this.push(makeTrailer({ records: this.batchesOut, images: this.imagesOut, skipped: whole ? this.set!.skipped : undefined, producer: 'alexnet-stream read' }));
        this.push(null);
        return;
      }
      const file = this.set!.shards[this.order[this.position++]];
      const shard = await readShard(o.dir, this.set!, file, { verify: o.verify });
      this.queue = this.rng ? this.rng.shuffle(shard.batches) : shard.batches;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Writing shards

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
    start().then(() => callback(), (err) => callback(err as Error));
  }

  override _write(record: StreamRecord, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.busy = this.writeRecord(record);
    this.busy.then(() => callback(), (err) => callback(err as Error));
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
    await this.writePieces(shard, recordPieces(makeTrailer({ records: shard.batches, images: shard.images, producer: this.options.producer ?? 'alexnet-stream batch' })));
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
    const file: ShardFileEntry = { file: basename(shard.final), batches: shard.batches, images: shard.images, bytes: shard.bytes, sha256: shard.hash.digest('hex') };
    this.files.push(file);
    this.emit('shard', file);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.busy = this.finish();
    this.busy.then(() => callback(), (err) => callback(err as Error));
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
  const tempPattern = new RegExp(`^\\.${escaped}-\\d{5,}\\.msgpack\\.tmp-(\\d+)-`);
  for (const name of await readdir(dir)) {
    const temp = tempPattern.exec(name);
    if ((shardPattern.test(name) && !keep.has(name)) || (temp && processIsGone(Number(temp[1])))) {
      await rm(join(dir, name), { force: true });
    }
  }
}
