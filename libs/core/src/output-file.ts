/**
 * Where a file output goes, decided once for every writer of the project (mean.npy, contact
 * sheets, .onnx files, val_record, imported weights: all go through writeFileAtomic/Sync).
 *
 * - A regular file, or a path that does not exist yet: replaced atomically (temp file beside
 *   it, fsync, rename), so a reader sees the old file or the whole new one.
 * - A symbolic link: followed (to its final target, which may not exist yet), and the target
 *   written by the same rules; the link stays a link. Writing "to a link" means writing to
 *   what it points at, as `cp`, `tee` and shell redirection do.
 * - A character device or a FIFO (`/dev/null`, `/dev/full`, a named pipe): written through,
 *   opened as it is, never replaced by a file; its errors (ENOSPC from /dev/full) are the
 *   write's errors. A FIFO waits for its reader, as `cat > fifo` does.
 * - A folder, a block device or a socket: refused. So is the file this process's stdout
 *   writes to (its records and the output would overwrite each other).
 *
 * And folders: `makeDirectory` creates missing parents one level at a time, so that any
 * error (EACCES, EROFS, ENOENT under /proc) is reported at once; Node's recursive mkdir loops
 * forever on /proc (it keeps retrying the ENOENT a parent that exists answers with).
 */
import { closeSync, fstatSync, lstatSync, mkdirSync, openSync, readlinkSync, realpathSync, type Stats, statSync, writeSync, constants } from 'node:fs';
import { mkdir, open, stat } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { type AlexnetStreamError, InputError, OutputError } from './errors';
import { fileKind } from './read-file';

/** A file system error on an output, in a few words. */
export function describeWriteError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOSPC':
      return 'no space left on device (ENOSPC)';
    case 'EDQUOT':
      return 'disk quota exceeded (EDQUOT)';
    case 'EROFS':
      return 'read-only file system (EROFS)';
    case 'EACCES':
    case 'EPERM':
      return `permission denied (${e.code})`;
    case 'ENOENT':
      return 'its folder does not exist (ENOENT)';
    case 'ENOTDIR':
      return 'a part of the path is not a folder (ENOTDIR)';
    case 'EISDIR':
      return 'is a folder (EISDIR)';
    case 'EIO':
      return 'input/output error (EIO)';
    case 'EFBIG':
      return 'file too large for the file system (EFBIG)';
    case 'ELOOP':
      return 'a loop of symbolic links (ELOOP)';
    case 'ENAMETOOLONG':
      return 'name too long (ENAMETOOLONG)';
    default:
      return e?.code ? `${e.message} (${e.code})` : e instanceof Error ? e.message : String(err);
  }
}

export type OutputTarget =
  /** Write a temp file beside `path` and rename it over `path`. */
  | { mode: 'replace'; path: string }
  /** Open `path` as it is and write into it (a device or a FIFO). */
  | { mode: 'write-through'; path: string; kind: string };

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new OutputError(`${path}: cannot write: ${describeWriteError(err)}`, { cause: err });
  }
}

/** The dev/ino of this process's stdout, when it is a file or a pipe. */
function stdoutIdentity(): { dev: number; ino: number } | undefined {
  try {
    const st = fstatSync(1);
    return st.isFile() || st.isFIFO() || st.isSocket() ? { dev: st.dev, ino: st.ino } : undefined;
  } catch {
    return undefined;
  }
}

function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

/** Where a dangling symbolic link points (the file to create), following a chain of links. */
function danglingTarget(path: string): string {
  let current = resolve(path);
  for (let hops = 0; hops < 40; hops++) {
    const st = lstatOrUndefined(current);
    if (!st) return current;
    if (!st.isSymbolicLink()) break;
    const link = readlinkSync(current);
    current = isAbsolute(link) ? link : resolve(dirname(current), link);
  }
  throw new InputError(`${path}: a loop of symbolic links, or a link to something that is not a file; give another output path`);
}

function sameAsStdout(st: Stats): boolean {
  const out = stdoutIdentity();
  return out !== undefined && st.dev === out.dev && st.ino === out.ino;
}

/**
 * Decide how to write the output `path` (see the file comment). Throws an `InputError` for a
 * target that must not be written (a folder, a block device, this process's stdout).
 */
export function resolveOutputTarget(path: string): OutputTarget {
  const own = lstatOrUndefined(path);
  if (!own) return { mode: 'replace', path: resolve(path) };
  // What the path names once links are followed (/dev/stdout → /proc/self/fd/1 → a pipe).
  const st = own.isSymbolicLink() ? statOrUndefined(path) : own;
  if (!st) return { mode: 'replace', path: danglingTarget(path) };
  if (sameAsStdout(st) && (st.isFile() || st.isFIFO() || st.isSocket())) {
    throw new InputError(`${path}: is where this command's stdout goes; an output file there would be mixed into it; give another path`);
  }
  if (st.isFile()) return { mode: 'replace', path: own.isSymbolicLink() ? realpathSync(path) : resolve(path) };
  if (st.isCharacterDevice() || st.isFIFO()) return { mode: 'write-through', path, kind: fileKind(st) };
  throw new InputError(`${path}: is ${fileKind(st)}; an output file is not written over it`);
}

function checkOpened(fdStats: Stats, _target: OutputTarget & { mode: 'write-through' }, path: string): void {
  if (!fdStats.isCharacterDevice() && !fdStats.isFIFO()) {
    throw new InputError(`${path}: changed while being opened (now ${fileKind(fdStats)}); not written`);
  }
}

/** Write `data` into a device or FIFO as it is (no temp file, no rename). */
export async function writeThrough(target: OutputTarget & { mode: 'write-through' }, data: Uint8Array | string, path: string): Promise<void> {
  // No O_CREAT: if the node vanished since it was looked at, fail rather than create a file.
  const handle = await open(target.path, constants.O_WRONLY).catch((err) => {
    throw new OutputError(`${path}: cannot open ${target.kind} for writing: ${describeWriteError(err)}`, { cause: err });
  });
  try {
    checkOpened(await handle.stat(), target, path);
    await handle.writeFile(data).catch((err) => {
      throw new OutputError(`${path}: cannot write to ${target.kind}: ${describeWriteError(err)}`, { cause: err });
    });
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** `writeThrough` on the calling thread. */
export function writeThroughSync(target: OutputTarget & { mode: 'write-through' }, data: Uint8Array | string, path: string): void {
  let fd: number;
  try {
    fd = openSync(target.path, constants.O_WRONLY);
  } catch (err) {
    throw new OutputError(`${path}: cannot open ${target.kind} for writing: ${describeWriteError(err)}`, { cause: err });
  }
  try {
    checkOpened(fstatSync(fd), target, path);
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let done = 0;
    try {
      while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
    } catch (err) {
      throw new OutputError(`${path}: cannot write to ${target.kind}: ${describeWriteError(err)}`, { cause: err });
    }
  } finally {
    closeSync(fd);
  }
}

function folderError(path: string, err: unknown, what: string): AlexnetStreamError {
  return new OutputError(`${path}: cannot create the ${what}: ${describeWriteError(err)}`, { cause: err });
}

/** The folders from the first missing ancestor of `path` down to `path` itself. */
function missingChain(path: string, exists: (p: string) => boolean): string[] {
  const chain: string[] = [];
  let current = resolve(path);
  while (!exists(current)) {
    chain.unshift(current);
    const parent = dirname(current);
    if (parent === current) break;
    current = parent;
  }
  return chain;
}

/**
 * Create folder `path` and any missing parents, one level at a time; a path that exists must
 * be a folder. Any error is an `OutputError` at once, naming the path (`what` says which output).
 */
export async function makeDirectory(path: string, what = 'output folder'): Promise<void> {
  const existing = await stat(path).catch(() => undefined);
  if (existing) {
    if (!existing.isDirectory()) throw new OutputError(`${path}: cannot create the ${what}: it exists and is ${fileKind(existing)}`);
    return;
  }
  const chain: string[] = [];
  for (let current = resolve(path); ; ) {
    const st = await stat(current).catch(() => undefined);
    if (st) {
      if (!st.isDirectory()) throw new OutputError(`${path}: cannot create the ${what}: ${current} is ${fileKind(st)}`);
      break;
    }
    chain.unshift(current);
    const parent = dirname(current);
    if (parent === current) break;
    current = parent;
  }
  for (const dir of chain) {
    await mkdir(dir).catch(async (err: NodeJS.ErrnoException) => {
      if (
        err.code === 'EEXIST' &&
        (await stat(dir).then(
          (s) => s.isDirectory(),
          () => false,
        ))
      )
        return;
      throw folderError(path, err, what);
    });
  }
}

/** `makeDirectory` on the calling thread. */
export function makeDirectorySync(path: string, what = 'output folder'): void {
  const isDir = (p: string): boolean | undefined => {
    try {
      return statSync(p).isDirectory();
    } catch {
      return undefined;
    }
  };
  const chain = missingChain(path, (p) => isDir(p) !== undefined);
  const top = chain.length ? dirname(chain[0]) : resolve(path);
  if (isDir(top) === false) throw new OutputError(`${path}: cannot create the ${what}: ${top} is not a folder`);
  for (const dir of chain) {
    try {
      mkdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && isDir(dir)) continue;
      throw folderError(path, err, what);
    }
  }
}
