/**
 * `prepare`: the seed's whole `generate_data.sh` in one in-process pipeline. From a class-folder
 * training set (and a validation set, or a deterministic split of the training set) to a data
 * dir with shuffled train shards, val shards, `mean.npy` (of the training images), `classes.txt`
 * and `prepare.json`:
 *
 *   items ─▶ DecodeStage ─▶ MeanStage (train only) ─▶ BatchStage ─▶ ShardWriter
 *
 * the same stages as the CLI's `scan | decode | mean | batch`, joined by `stream.pipeline` so
 * backpressure bounds memory (decode concurrency + a few records per stage + one batch + one
 * float64 mean image), never the dataset size.
 *
 * Completeness: everything is written into `<out>.partial/` (marked by a `.prepare-partial`
 * file) and renamed to `<out>` only when finished, with `prepare.json` (the manifest) written
 * last inside it. A rerun finds either a complete `<out>` (and says so; `force` rebuilds it) or
 * a leftover `<out>.partial/` from an interrupted run, which it removes and starts over (shard
 * order depends on every earlier image, so a clean restart is the simple, safe form of resume).
 */
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  acquireLock,
  AlexnetStreamError,
  check,
  checkOptional,
  describeWriteError,
  InputError,
  makeDirectory,
  OutputError,
  UsageError,
  readRegularFileAsync,
  Rng,
  writeFileAtomic,
} from '@alexnet-stream/core';
import { BatchStage, checkBatchSize } from './batch';
import { type ResizeMode, validateDecodeOptions } from './decode';
import { DecodeStage } from './decode-stage';
import { MeanStage, writeMeanNpy } from './mean';
import { type ItemRecord, makeHeader, wholeStream } from './records';
import { listClassFolders, readCaffeList, selectItems } from './scan';
import { ShardWriter } from './shard-writer';
import type { ShardSetEntry } from './shards';

export const PREPARE_MANIFEST = 'prepare.json';
const PARTIAL_MARKER = '.prepare-partial';

export interface PrepareOptions {
  /** Training set: one folder per class (sorted names are labels 0..K-1). */
  train: string;
  /** Validation images folder: with `valList`, the root of its paths; alone, class folders like `train`. */
  val?: string;
  /** Caffe-style `relative/path label` list of the validation images (relative to `val`). */
  valList?: string;
  /** Instead of `val`: this fraction of the training items (a seeded, deterministic choice) validates. */
  valSplit?: number;
  /** The data dir to create. */
  out: string;
  batchSize?: number;
  /** Decoded image side (default 256). */
  size?: number;
  resize?: ResizeMode;
  /** Seed of the train shuffle and the val split (default 0). */
  seed?: number;
  /** Decode concurrency (default: the decode stage's). */
  concurrency?: number;
  /** At most this many train items (and val items), for trials. */
  limit?: number;
  batchesPerShard?: number;
  /** fsync shards and files before renaming (default true). */
  fsync?: boolean;
  /** Rebuild even if `out` is already complete. */
  force?: boolean;
  /** Called after each decoded image (phase, images done, items in the phase). */
  onProgress?: (phase: 'train' | 'val', done: number, total: number) => void;
  /** Called for each file that cannot be decoded (it is skipped). */
  onSkip?: (key: string, reason: string, path: string) => void;
  /** Things the user should know (a leftover partial dir removed, …). */
  onNotice?: (message: string) => void;
}

export interface PrepareSetSummary {
  images: number;
  batches: number;
  skipped: number;
}

/** Written last as `<out>/prepare.json`; its presence marks a complete data dir. */
export interface PrepareManifest {
  schema: 'alexnet-stream/prepare/1';
  complete: true;
  classNames: string[];
  imageSize: number;
  resize: ResizeMode;
  batchSize: number;
  seed: number;
  train: PrepareSetSummary;
  val?: PrepareSetSummary;
  sources: { train: string; val?: string; valList?: string; valSplit?: number; limit?: number };
  seconds: number;
  createdAt: string;
}

export interface PrepareResult {
  out: string;
  /** True when `out` was already complete and nothing was done. */
  alreadyComplete: boolean;
  manifest: PrepareManifest;
}

/**
 * Split items deterministically for validation: a seeded shuffle of the indices, the first
 * round(n · fraction) (at least 1) validate, the rest train; each part keeps the input order.
 */
export function splitForValidation<T>(items: readonly T[], fraction: number, seed: number): { train: T[]; val: T[] } {
  check.number('valSplit', fraction, { min: 0, max: 1, minExclusive: true, maxExclusive: true });
  const order = new Rng((seed ^ 0x2545f491) >>> 0).shuffle(Array.from({ length: items.length }, (_, i) => i));
  const valCount = Math.min(items.length - 1, Math.max(1, Math.round(items.length * fraction)));
  const isVal = new Uint8Array(items.length);
  for (let i = 0; i < valCount; i++) isVal[order[i]] = 1;
  return { train: items.filter((_, i) => !isVal[i]), val: items.filter((_, i) => isVal[i]) };
}

function checkOptions(o: PrepareOptions): void {
  if (o.valSplit !== undefined && (o.val || o.valList)) {
    throw new UsageError((name) => `give either ${name('val')} (with ${name('valList')}) or ${name('valSplit')}, not both`);
  }
  if (o.valList && !o.val) throw new UsageError((name) => `${name('valList')} needs ${name('val')}, the folder its paths are relative to`);
  checkOptional.number('valSplit', o.valSplit, { min: 0, max: 1, minExclusive: true, maxExclusive: true });
  checkBatchSize(o.batchSize ?? 256);
  validateDecodeOptions({ size: o.size ?? 256, resize: o.resize ?? 'squash' });
  checkOptional.seed('seed', o.seed);
  checkOptional.integer('concurrency', o.concurrency, { min: 1, max: 1024 });
  checkOptional.integer('limit', o.limit, { min: 1 });
  checkOptional.integer('batchesPerShard', o.batchesPerShard, { min: 1 });
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** The manifest of a complete data dir, or undefined when `dir` is not one. */
export async function readPrepareManifest(dir: string): Promise<PrepareManifest | undefined> {
  const bytes = await readRegularFileAsync(join(dir, PREPARE_MANIFEST), { maxBytes: 64 << 20 }).catch(() => undefined);
  if (bytes === undefined) return undefined;
  const text = bytes.toString('utf8');
  try {
    const manifest = JSON.parse(text) as PrepareManifest;
    return manifest.schema === 'alexnet-stream/prepare/1' && manifest.complete === true ? manifest : undefined;
  } catch {
    return undefined;
  }
}

async function listSets(o: PrepareOptions): Promise<{ classNames: string[]; train: ItemRecord[]; val: ItemRecord[] | undefined }> {
  const listing = { onWarning: (message: string) => o.onNotice?.(`warning: ${message}`) };
  const train = await listClassFolders(o.train, listing);
  if (train.classNames.length === 0) throw new InputError(`${o.train}: no class folders (expected one sub-folder of images per class)`);
  if (train.items.length === 0) throw new InputError(`${o.train}: no images found in its ${train.classNames.length} class folders`);
  const classNames = train.classNames;
  let trainItems = train.items;
  let valItems: ItemRecord[] | undefined;
  if (o.valSplit !== undefined) {
    if (trainItems.length < 2) throw new InputError(`${o.train}: ${trainItems.length} image cannot be split into train and val`);
    ({ train: trainItems, val: valItems } = splitForValidation(trainItems, o.valSplit, o.seed ?? 0));
  } else if (o.val && o.valList) {
    valItems = (await readCaffeList(o.valList, o.val, classNames)).items;
    if (valItems.length === 0) throw new InputError(`${o.valList}: lists no images`);
  } else if (o.val) {
    const val = await listClassFolders(o.val, listing);
    if (val.classNames.join('\n') !== classNames.join('\n')) {
      throw new InputError(
        (name) =>
          `${o.val}: its class folders (${val.classNames.length}) differ from ${o.train}'s (${classNames.length}); labels would not match (use ${name('valList')} for a flat folder)`,
      );
    }
    valItems = val.items;
    if (valItems.length === 0) throw new InputError(`${o.val}: no images found`);
  }
  return {
    classNames,
    train: selectItems(trainItems, { shuffle: true, seed: o.seed ?? 0, limit: o.limit }),
    val: valItems && selectItems(valItems, { limit: o.limit }),
  };
}

async function writeSet(
  o: PrepareOptions,
  dir: string,
  prefix: 'train' | 'val',
  items: ItemRecord[],
  classNames: string[],
  mean?: MeanStage,
): Promise<{ entry: ShardSetEntry; skipped: number }> {
  let done = 0;
  const decode = new DecodeStage({
    size: o.size ?? 256,
    resize: o.resize ?? 'squash',
    concurrency: o.concurrency,
    onImage: () => o.onProgress?.(prefix, ++done, items.length),
    onSkip: o.onSkip,
  });
  const batchSize = o.batchSize ?? 256;
  const writer = new ShardWriter({
    dir,
    prefix,
    batchSize,
    batchesPerShard: o.batchesPerShard,
    classNames,
    fsync: o.fsync,
    producer: 'alexnet-stream prepare',
  });
  const source = Readable.from(wholeStream(makeHeader('item', { classNames, producer: 'alexnet-stream prepare' }), items), {
    objectMode: true,
    highWaterMark: 16,
  });
  const batch = new BatchStage({ batchSize });
  try {
    if (mean) await pipeline(source, decode, mean, batch, writer);
    else await pipeline(source, decode, batch, writer);
  } catch (err) {
    if (err instanceof InputError && /the dataset is empty/.test(err.message)) {
      throw new InputError(`${prefix}: none of the ${items.length} images could be decoded (${decode.skipped} skipped); nothing to write`);
    }
    throw err;
  }
  return { entry: writer.entry!, skipped: decode.skipped };
}

/**
 * Run the whole preparation. Resolves with the manifest; `alreadyComplete` when `out` was
 * complete before (and not `force`). Throws `UsageError`/`InputError` (exit 2) for bad options,
 * a missing or empty dataset, or an `out` that exists but is not a complete data dir.
 */
export async function prepareDataDir(o: PrepareOptions): Promise<PrepareResult> {
  checkOptions(o);
  const out = o.out.replace(/[\\/]+$/, '') || o.out;
  // The folder that will hold <out>, <out>.partial and <out>.lock; any error creating or
  // locking there (a read-only or virtual file system such as /proc) is reported at once.
  await makeDirectory(dirname(resolve(out)), 'folder for --out');
  const lock = await acquireLock(`${out}.lock`, {
    purpose: `prepare --out ${o.out}`,
    advice: `another prepare is building ${o.out}; wait for it to finish, or stop it (its ${out}.partial is then cleared by the next run)`,
  }).catch((err: unknown) => {
    if (err instanceof AlexnetStreamError) throw err;
    throw new OutputError(`${o.out}: cannot take the lock ${out}.lock: ${describeWriteError(err)}`, { cause: err });
  });
  try {
    return await prepareLocked({ ...o, out });
  } finally {
    await lock.release();
  }
}

/**
 * `--force` over a complete `<out>` swaps two folders: `<out>` to `<out>.partial.old-<pid>`, then
 * `<out>.partial` (complete: its manifest is written last) to `<out>`. A kill between the two
 * renames left no `<out>`; the next run then deleted the new data as "left by an interrupted
 * run" while the old stayed hidden, so the user's complete data dir was gone. Run under the
 * lock (no other prepare is writing), first: roll forward when `<out>.partial` is complete, else
 * back to the old copy; then remove old copies a kill left during their removal.
 */
async function finishInterruptedReplace(out: string, onNotice: ((message: string) => void) | undefined): Promise<void> {
  const partial = `${out}.partial`;
  const parent = dirname(resolve(out));
  const prefix = `${basename(partial)}.old-`;
  const olds = (await readdir(parent).catch(() => [] as string[]))
    .filter((name) => name.startsWith(prefix) && /^\d+$/.test(name.slice(prefix.length)))
    .map((name) => join(parent, name));
  if (olds.length === 0) return;
  if (!(await exists(out))) {
    if (await readPrepareManifest(partial)) {
      await rename(partial, out);
      await rm(join(out, PARTIAL_MARKER), { force: true });
      onNotice?.(`finished replacing ${out} with its rebuilt data (a prepare --force was stopped between two renames)`);
    } else {
      for (const old of olds) {
        if (!(await readPrepareManifest(old))) continue;
        await rename(old, out);
        onNotice?.(`restored ${out} from ${old} (a prepare --force was stopped while replacing it)`);
        break;
      }
    }
  }
  for (const old of olds) await rm(old, { recursive: true, force: true });
}

/** The work of `prepareDataDir`, run while holding `<out>.lock`: no other prepare writes `out`. */
async function prepareLocked(o: PrepareOptions): Promise<PrepareResult> {
  const startMs = Date.now();
  await finishInterruptedReplace(o.out, o.onNotice);
  const existing = await readPrepareManifest(o.out);
  if (existing && !o.force) {
    // A rebuild (--force) killed before it finished leaves its work folder beside the complete
    // data: ours (marked) and, under the lock, nobody's; not kept for ever.
    const stale = `${o.out}.partial`;
    if (await exists(join(stale, PARTIAL_MARKER))) {
      o.onNotice?.(`removing ${stale} left by an interrupted run`);
      await rm(stale, { recursive: true, force: true });
    }
    return { out: o.out, alreadyComplete: true, manifest: existing };
  }
  if (!existing && (await exists(o.out))) {
    throw new InputError((name) => `${o.out} exists and is not a complete prepare output (no ${PREPARE_MANIFEST}); remove it or choose another ${name('out')}`);
  }
  const partial = `${o.out}.partial`;
  if (await exists(partial)) {
    if (!(await exists(join(partial, PARTIAL_MARKER)))) {
      throw new InputError((name) => `${partial} exists but was not made by prepare (no ${PARTIAL_MARKER}); remove it or choose another ${name('out')}`);
    }
    // Ours to remove: made by prepare, and (we hold the lock) no prepare is writing it now.
    o.onNotice?.(`removing ${partial} left by an interrupted run; starting over`);
    await rm(partial, { recursive: true, force: true });
  }

  const sets = await listSets(o);
  await mkdir(partial).catch((err) => {
    throw new OutputError(`${partial}: cannot create the work folder: ${describeWriteError(err)}`, { cause: err });
  });

  let manifest: PrepareManifest;
  try {
    await writeFile(join(partial, PARTIAL_MARKER), `${process.pid}\n`);
    const mean = new MeanStage();
    const train = await writeSet(o, partial, 'train', sets.train, sets.classNames, mean);
    const val = sets.val ? await writeSet(o, partial, 'val', sets.val, sets.classNames) : undefined;
    const fsyncOption = { fsync: o.fsync };
    await writeMeanNpy(join(partial, 'mean.npy'), mean.accumulator.mean());
    await writeFileAtomic(join(partial, 'classes.txt'), `${sets.classNames.join('\n')}\n`, fsyncOption);
    const summary = (s: { entry: ShardSetEntry; skipped: number }): PrepareSetSummary => ({
      images: s.entry.images,
      batches: s.entry.batches,
      skipped: s.skipped,
    });
    manifest = {
      schema: 'alexnet-stream/prepare/1',
      complete: true,
      classNames: sets.classNames,
      imageSize: o.size ?? 256,
      resize: o.resize ?? 'squash',
      batchSize: o.batchSize ?? 256,
      seed: o.seed ?? 0,
      train: summary(train),
      ...(val ? { val: summary(val) } : {}),
      sources: {
        train: o.train,
        ...(o.val ? { val: o.val } : {}),
        ...(o.valList ? { valList: o.valList } : {}),
        ...(o.valSplit !== undefined ? { valSplit: o.valSplit } : {}),
        ...(o.limit ? { limit: o.limit } : {}),
      },
      seconds: (Date.now() - startMs) / 1000,
      createdAt: new Date().toISOString(),
    };
    await writeFileAtomic(join(partial, PREPARE_MANIFEST), `${JSON.stringify(manifest, null, 1)}\n`, fsyncOption);
  } catch (err) {
    // A run that failed (rather than was killed) removes its own work folder: nothing
    // half-written stays behind for a rerun to find.
    await rm(partial, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }

  if (existing) {
    // --force over a complete dir: swap, then remove the old one (a kill between the renames is
    // finished by the next run: finishInterruptedReplace).
    const old = `${partial}.old-${process.pid}`;
    await rename(o.out, old);
    await rename(partial, o.out);
    await rm(old, { recursive: true, force: true });
  } else {
    await rename(partial, o.out);
  }
  // Removed only now: until the rename, a crash leaves a marked partial dir that a rerun clears.
  await rm(join(o.out, PARTIAL_MARKER), { force: true });
  return { out: o.out, alreadyComplete: false, manifest };
}

/** A one-paragraph, human summary of a prepare result (for stderr). */
export function formatPrepareSummary(result: PrepareResult): string {
  const m = result.manifest;
  const set = (name: string, s: PrepareSetSummary) =>
    `${name} ${s.images} images in ${s.batches} batch${s.batches === 1 ? '' : 'es'}${s.skipped ? ` (${s.skipped} skipped)` : ''}`;
  if (result.alreadyComplete) {
    return `${result.out} is already complete (${set('train', m.train)}${m.val ? `, ${set('val', m.val)}` : ''}; made ${m.createdAt}); nothing to do (--force rebuilds it)`;
  }
  return (
    `${result.out}: ${set('train', m.train)}${m.val ? `, ${set('val', m.val)}` : ', no val set'}, ` +
    `${m.classNames.length} classes, ${m.imageSize}x${m.imageSize} images, mean.npy, classes.txt; ${m.seconds.toFixed(1)} s`
  );
}
