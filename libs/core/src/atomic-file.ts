/**
 * Atomic file writes, shared by every writer of the project (shards, mean.npy, checkpoints,
 * .onnx files, reports): data goes to a hidden temp file beside the target, is fsynced, then
 * renamed over it, so a reader sees the old file or the whole new one, never a half-written
 * file that looks whole — even when the writer is killed with SIGKILL.
 *
 * Only regular files (and new paths) are replaced: a symbolic link is followed to its target,
 * a device or a FIFO is written through, a folder or block device is refused (output-file.ts).
 * A failed write (no space left, read-only) is an `OutputError` naming the file; the previous
 * file, if any, is left as it was.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import { type FileHandle, open, readdir, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { AlexnetStreamError, OutputError } from './errors';
import { describeWriteError, resolveOutputTarget, writeThrough, writeThroughSync } from './output-file';
import { HOST_TAG, processIsGone } from './process-liveness';

/**
 * A hidden temp name beside `path`, unique to this process and call (`tag` says what it is):
 * `.<name>.<tag>-<host>-<pid>-<hex>`, so that a later writer can tell a dead writer's leftovers.
 */
export function tempPathFor(path: string, tag = 'tmp'): string {
  return join(dirname(path), `.${basename(path)}.${tag}-${HOST_TAG}-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/**
 * Whether `name` (in the folder of `path`) is a temp file of a write of `path` whose writer is
 * gone: written on this host (or by a version that named no host) by a process that no longer
 * runs. A live writer's temp file, or another host's, is never one.
 */
export function isStaleTemp(name: string, path: string, tag = 'tmp'): boolean {
  const prefix = `.${basename(path)}.${tag}-`;
  if (!name.startsWith(prefix)) return false;
  const m = /^(?:([0-9a-f]{8})-)?(\d+)-[0-9a-f]+$/.exec(name.slice(prefix.length));
  if (!m || (m[1] !== undefined && m[1] !== HOST_TAG)) return false;
  // HOST_TAG tells other hosts' temps apart: they are never removed (their writers may be alive).
  return processIsGone(Number(m[2]));
}

/**
 * Remove the temp files of earlier writes of `path` whose writers were killed (a `kill -9` or a
 * Ctrl-C in the middle of an export leaves a hidden copy the size of the model): called after a
 * write of `path` has succeeded, so that each target has at most its live writers' temps.
 */
async function removeStaleTemps(path: string): Promise<void> {
  const names = await readdir(dirname(path)).catch(() => [] as string[]);
  for (const name of names) if (isStaleTemp(name, path)) await unlink(join(dirname(path), name)).catch(() => undefined);
}

function removeStaleTempsSync(path: string): void {
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return;
  }
  for (const name of names) if (isStaleTemp(name, path)) rmSync(join(dirname(path), name), { force: true });
}

/** Write `data` to `path` via a temp file + fsync + rename: readers see the old file or the whole new one. */
export async function writeFileAtomic(path: string, data: Uint8Array | string, options: { fsync?: boolean } = {}): Promise<void> {
  const target = resolveOutputTarget(path);
  if (target.mode === 'write-through') return writeThrough(target, data, path);
  const temp = tempPathFor(target.path);
  let handle: FileHandle | undefined;
  try {
    handle = await open(temp, 'wx');
    await handle.writeFile(data);
    if (options.fsync ?? true) await handle.sync();
    await handle.close();
    handle = undefined;
    await rename(temp, target.path);
  } catch (err) {
    await handle?.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    throw asOutputError(path, err);
  }
  await removeStaleTemps(target.path);
}

function asOutputError(path: string, err: unknown): Error {
  if (err instanceof AlexnetStreamError) return err;
  return new OutputError(`${path}: cannot write: ${describeWriteError(err)}; ${path} was not changed`, { cause: err });
}

/**
 * Write a whole file and fsync it (no rename: for files inside a temp dir that is renamed later).
 * `flags` 'wx' refuses a path that exists (a name that must be new).
 */
export function writeFileSynced(path: string, data: Uint8Array | string, flags: 'w' | 'wx' = 'w'): void {
  const fd = openSync(path, flags);
  try {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** fsync a directory so that a rename inside it survives a crash. */
export function fsyncDir(path: string): void {
  try {
    const fd = openSync(path, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Some platforms (Windows) cannot open or fsync a directory; the rename is still atomic.
  }
}

/**
 * Synchronous `writeFileAtomic` (temp file beside it, fsync, rename, fsync the directory). Like
 * `cp`, it does not create the directory: a missing one is the caller's ENOENT to report.
 */
export function writeFileAtomicSync(path: string, data: Uint8Array | string): void {
  const target = resolveOutputTarget(path);
  if (target.mode === 'write-through') {
    writeThroughSync(target, data, path);
    return;
  }
  const temp = tempPathFor(target.path);
  try {
    writeFileSynced(temp, data);
    renameSync(temp, target.path);
  } catch (err) {
    rmSync(temp, { force: true });
    throw asOutputError(path, err);
  }
  fsyncDir(dirname(resolve(target.path)));
  removeStaleTempsSync(target.path);
}
