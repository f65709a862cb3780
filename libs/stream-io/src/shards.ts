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
import type { z } from 'zod';
import {
  acquireLock,
  check,
  describeReadError,
  InputError,
  type KnownFields,
  lazySchema,
  parseWithSchema,
  readRegularFileAsync,
  statementIssue,
  writeFileAtomic,
  type Zod,
} from '@alexnet-stream/core';
import { MAX_BATCH_SIZE, MAX_IMAGE_SIDE, MAX_LABEL } from './record-validation';

export const SHARD_INDEX_SCHEMA = 'alexnet-stream/shards/1';
export const SHARD_INDEX_FILE = 'index.json';

/**
 * An index entry: everything written under one prefix (`train`, `val`, …) and its shard files.
 * The schema describes what a reader relies on, with the bounds of the stream format
 * (record-validation): what `read` puts in a header from here must be a header every reader
 * takes (a batchSize of 1e9 was passed on and refused downstream). Entries are loose objects:
 * fields this version does not know are kept when the index is rewritten for another prefix.
 */
function buildShardSetSchema(z: Zod) {
  const COUNT = 'an integer >= 0';
  const count = z.int({ error: COUNT }).min(0, { error: COUNT });
  const between = (min: number, max: number) => {
    const expected = `an integer from ${min} to ${max}`;
    return z.int({ error: expected }).min(min, { error: expected }).max(max, { error: expected });
  };
  const SHAPE = `[C, H, W] with sides from 1 to ${MAX_IMAGE_SIDE}`;
  const SIDE = `an image side from 1 to ${MAX_IMAGE_SIDE}`;
  const side = z.int({ error: SIDE }).min(1, { error: SIDE }).max(MAX_IMAGE_SIDE, { error: SIDE });
  const PLAIN = 'a plain file name (no folder, not starting with ".")';
  const shardFile = z.looseObject({
    file: z.string({ error: PLAIN }).refine((f) => f !== '' && f === basename(f) && !f.startsWith('.'), { error: PLAIN }),
    batches: count,
    images: count,
    bytes: count,
    sha256: z.string({ error: 'a sha256 digest (a string)' }),
  });
  return z
    .looseObject(
      {
        dtype: z.literal('uint8', { error: '"uint8"' }),
        layout: z.literal('NCHW', { error: '"NCHW"' }),
        batchSize: between(1, MAX_BATCH_SIZE),
        /** [channels, height, width] of every image. */
        imageShape: z.tuple([side, side, side], { error: SHAPE }),
        /** Number of classes: class names' count when known, else the largest label + 1 (int32 labels). */
        labelCount: between(0, MAX_LABEL + 1),
        classNames: z.array(z.string({ error: 'a list of strings' }), { error: 'a list of strings' }).optional(),
        images: count,
        batches: count,
        /** 1 when the last batch is smaller than `batchSize` (kept, marked `partial`), else 0. */
        partialBatches: count,
        batchesPerShard: count,
        checksum: z.literal('sha256', { error: '"sha256"' }),
        shards: z.array(shardFile, { error: 'a list of shard files' }),
        createdAt: z.string({ error: 'a date (ISO 8601 text)' }),
        producer: z.string({ error: 'a string' }).optional(),
        /**
         * Source items that did not become images of this set (undecodable files, images dropped
         * by --drop-last), as the input stream's trailer counted them; absent in older indexes.
         */
        skipped: count.optional(),
      },
      { error: 'a shard set entry (an object)' },
    )
    .superRefine((entry, ctx) => {
      const files = new Set<string>();
      let images = 0;
      let batches = 0;
      for (const shard of entry.shards) {
        // Listed twice, one shard would be read twice and the file meant in its place never.
        if (files.has(shard.file)) return ctx.addIssue(statementIssue(`shard file ${JSON.stringify(shard.file)} is listed twice`));
        files.add(shard.file);
        images += shard.images;
        batches += shard.batches;
      }
      if (images !== entry.images || batches !== entry.batches) {
        ctx.addIssue(statementIssue(`shards hold ${images} images in ${batches} batches but the entry says ${entry.images} in ${entry.batches}`));
      }
    });
}

/** The schema of an index entry (built on first use: core's schema.ts says why). */
export const shardSetSchema = lazySchema(buildShardSetSchema);

/** Everything written under one prefix (`train`, `val`, …). */
export type ShardSetEntry = KnownFields<z.output<ReturnType<typeof buildShardSetSchema>>>;
/** One shard file as listed in the index. */
export type ShardFileEntry = ShardSetEntry['shards'][number];

/** `index.json`: the schema tag and an entry per prefix (checked by parseShardIndex, each entry by shardSetSchema). */
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
  return parseWithSchema(shardSetSchema(), entry, {
    where,
    errorClass: InputError,
    code: 'ERR_SHARD_INDEX',
    hint: 'the index is damaged or was not written by alexnet-stream',
  });
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
  // No prototype: a prefix named `__proto__` is an ordinary key here, never the object's prototype
  // (and each entry is parsed on its own: a zod record would drop that key without a word).
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
