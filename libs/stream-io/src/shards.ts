/**
 * Shard directories (DESIGN §4): `train-00000.msgpack` … plus `index.json`. This module is the
 * index: its format, its validation, and its updates under a lock; `shard-reader.ts` reads a
 * set, `shard-writer.ts` writes one.
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
 * Atomicity: every shard is written to a hidden temp file (`.train-00000.msgpack.tmp-HOST-PID-…`)
 * and renamed when complete; a writer removes its prefix's entry from `index.json` before its
 * first rename and adds the new entry only after its last shard is renamed (index updates are
 * serialised by an `index.json.lock` file and are themselves temp + rename). Readers read only
 * the files an index entry lists and verify each one's sha256, so a killed writer, a leftover
 * temp file or a damaged shard is never taken as whole.
 *
 * The lock (core's lock-file.ts) is a single-host lock: a lock whose process is gone on this
 * host is broken at once; one from another host is never broken automatically (its process
 * cannot be checked from here) and its message says which file to remove. A shard directory on
 * a network file system written from several hosts at once is not supported.
 */
import { stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { acquireLock, check, describeReadError, InputError, readRegularFileAsync, writeFileAtomic } from '@alexnet-stream/core';
import { MAX_BATCH_SIZE, MAX_IMAGE_SIDE, MAX_LABEL } from './record-validation';

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
  // The bounds of the stream format (record-validation): what `read` puts in a header from here
  // must be a header every reader takes (a batchSize of 1e9 was passed on and refused downstream).
  if ((e.batchSize as number) < 1 || (e.batchSize as number) > MAX_BATCH_SIZE) fail(`"batchSize" ${e.batchSize} is not from 1 to ${MAX_BATCH_SIZE}`);
  if ((e.labelCount as number) > MAX_LABEL + 1) fail(`"labelCount" ${e.labelCount} is more than int32 labels can name`);
  const shape = e.imageShape;
  if (!Array.isArray(shape) || shape.length !== 3 || !shape.every((d) => Number.isInteger(d) && d >= 1 && d <= MAX_IMAGE_SIDE))
    fail(`"imageShape" is not [C, H, W] with sides from 1 to ${MAX_IMAGE_SIDE}`);
  if (e.classNames !== undefined && !(Array.isArray(e.classNames) && e.classNames.every((n) => typeof n === 'string')))
    fail('"classNames" is not a list of strings');
  if (e.skipped !== undefined && (!Number.isInteger(e.skipped) || (e.skipped as number) < 0)) fail('"skipped" is not a non-negative integer');
  if (!Array.isArray(e.shards)) fail('"shards" is not a list');
  let images = 0;
  let batches = 0;
  const files = new Set<string>();
  for (const s of e.shards as unknown[]) {
    if (
      !isObject(s) ||
      typeof s.file !== 'string' ||
      typeof s.sha256 !== 'string' ||
      !Number.isInteger(s.bytes) ||
      !Number.isInteger(s.images) ||
      !Number.isInteger(s.batches)
    ) {
      fail(`shard entry ${JSON.stringify(s)} lacks file/bytes/images/batches/sha256`);
    }
    const file = (s as Record<string, unknown>).file as string;
    if (file !== basename(file) || file.startsWith('.')) fail(`shard file name ${JSON.stringify(file)} is not a plain file name`);
    // Listed twice, one shard would be read twice and the file meant in its place never.
    if (files.has(file)) fail(`shard file ${JSON.stringify(file)} is listed twice`);
    files.add(file);
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
    throw new InputError(`${name}: not an alexnet-stream shard index (expected "schema": ${JSON.stringify(SHARD_INDEX_SCHEMA)} and "prefixes")`, {
      code: 'ERR_SHARD_INDEX',
    });
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
      const dirExists = await stat(dir).then(
        (s) => s.isDirectory(),
        () => false,
      );
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
    const text = await readRegularFileAsync(path, { maxBytes: MAX_INDEX_BYTES }).then(
      (bytes) => bytes.toString('utf8'),
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined;
        throw new InputError(`${path}: cannot read the shard index: ${describeReadError(err)}`, { code: 'ERR_SHARD_INDEX', cause: err });
      },
    );
    if (text !== undefined) index = parseShardIndex(text, path);
    if (entry === null) {
      if (!(prefix in index.prefixes)) return;
      delete index.prefixes[prefix];
    } else index.prefixes[prefix] = entry;
    await writeFileAtomic(path, `${JSON.stringify(index, null, 1)}\n`, options);
  });
}
