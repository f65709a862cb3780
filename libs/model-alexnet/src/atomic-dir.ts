/**
 * A directory of files that appears, or replaces an existing one, as one unit: what a
 * checkpoint needs (weights, momentum and state must never mix two epochs' files, and a
 * checkpoint must never vanish).
 *
 * POSIX renames a directory atomically, but cannot swap two: replacing `epoch-0007` takes two
 * renames (the old one aside, the new one in), and a process killed between them leaves no
 * `epoch-0007`. So the write is a small journal whose every state a reader can finish:
 *
 *   1. write every file into `.epoch-0007.tmp-<writer>` (fsynced; the last file, the *marker*,
 *      via a temp name and a rename, so that its presence means every file is whole);
 *   2. if `epoch-0007` exists: rename it to `.epoch-0007.old-<writer>`   <- the commit point
 *   3. rename `.epoch-0007.tmp-<writer>` to `epoch-0007`;
 *   4. delete `.epoch-0007.old-<writer>` file by file.
 *
 * `<writer>` is `<host>-<pid>-<random>`: it names one write, and tells whether its writer is
 * still alive. `recoverDirectory` finishes what a dead writer left: after the commit point
 * (an `.old-W` exists and `epoch-0007` does not) it rolls forward, renaming the whole
 * `.tmp-W` into place; otherwise it rolls back, deleting the writer's leftovers. A kill at any
 * instant therefore leaves, once recovered, either the previous directory or the new one,
 * whole. Until something recovers it, `findDirectory` still finds the committed version where
 * it lies (read-only, e.g. on a read-only mount).
 *
 * What a live writer (this host, its pid alive) is doing is never touched; the host is part of
 * the name so that a directory shared over a network file system is not "recovered" from
 * another host while its writer runs there.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, renameSync, rmdirSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fsyncDir, HOST_TAG, makeDirectorySync, processIsGone, writeFileSynced } from '@alexnet-stream/core';

/** The steps of a write, in order; a hook sees each just before it happens (tests kill there). */
export type DirectoryWriteStep =
  | 'mkdir-temp'
  | 'write-file'
  | 'write-marker'
  | 'rename-marker'
  | 'fsync-temp'
  | 'move-old-aside'
  | 'rename-into-place'
  | 'fsync-parent'
  | 'unlink-old-file'
  | 'rmdir-old';

export interface DirectoryWriteOptions {
  /** Called before each step with what it touches (tests inject kills and faults here). */
  beforeStep?(step: DirectoryWriteStep, path: string): void;
}

/** One file of the directory. */
export interface DirectoryFile {
  name: string;
  data: Uint8Array | string;
}

/** `.<name>.tmp-<host>-<pid>-<hex>` / `.old-…`; older versions wrote `.<name>.tmp-<pid>-<hex>` (no host). */
const LEFTOVER = /^\.(.+)\.(tmp|old)-(?:([0-9a-f]{8})-)?(\d+)-([0-9a-f]+)$/;

interface Leftover {
  kind: 'tmp' | 'old';
  /** Identifies one write: the tmp and old dirs of a write share it. */
  writer: string;
  host: string;
  pid: number;
  path: string;
}

function leftoversOf(target: string): Leftover[] {
  const parent = dirname(target);
  const name = basename(target);
  let entries: string[];
  try {
    entries = readdirSync(parent);
  } catch {
    return [];
  }
  const out: Leftover[] = [];
  for (const entry of entries) {
    const m = LEFTOVER.exec(entry);
    if (!m || m[1] !== name) continue;
    const host = m[3] ?? HOST_TAG;
    out.push({ kind: m[2] as 'tmp' | 'old', writer: `${host}-${m[4]}-${m[5]}`, host, pid: Number(m[4]), path: join(parent, entry) });
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : 1));
}

/** Names of the hidden leftovers in `parent` (for listings: which visible names they belong to). */
export function leftoverTargets(parent: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(parent);
  } catch {
    return [];
  }
  const names = new Set<string>();
  for (const entry of entries) {
    const m = LEFTOVER.exec(entry);
    if (m) names.add(m[1]);
  }
  return [...names].sort();
}

/** Is the writer of a leftover possibly still at work? Another host's, our own, or a pid not certainly gone: yes. */
function writerMayBeAlive(l: Leftover): boolean {
  return l.host !== HOST_TAG || !processIsGone(l.pid);
}

/** A whole version: a directory holding the marker (written last, and deleted first). */
const hasMarker = (dir: string, marker: string): boolean => {
  try {
    return lstatSync(dir).isDirectory() && existsSync(join(dir, marker));
  } catch {
    return false;
  }
};

/**
 * Where the committed version of `target` is: `target` itself, or, while a write that passed its
 * commit point has not been finished, that write's temp dir. Undefined when there is none.
 * Read-only: it renames and deletes nothing.
 */
export function findDirectory(target: string, marker: string): string | undefined {
  const path = resolve(target);
  if (existsSync(path)) return path;
  const leftovers = leftoversOf(path);
  for (const old of leftovers.filter((l) => l.kind === 'old')) {
    const tmp = leftovers.find((l) => l.kind === 'tmp' && l.writer === old.writer);
    if (tmp && hasMarker(tmp.path, marker)) return tmp.path;
    if (hasMarker(old.path, marker)) return old.path;
  }
  return undefined;
}

export interface RecoveryReport {
  /** 'forward': a committed replacement was finished; 'restored': the previous version was put back. */
  finished?: 'forward' | 'restored';
  /** Leftovers of dead writers that were deleted. */
  removed: string[];
}

/**
 * Finish or roll back whatever dead writers left for `target` (see the file comment). Leftovers
 * of writers that may be alive are left alone. Errors (a read-only directory) propagate: callers
 * that only read catch them and use `findDirectory`.
 */
export function recoverDirectory(target: string, marker: string): RecoveryReport {
  const path = resolve(target);
  const report: RecoveryReport = { removed: [] };
  const dead = leftoversOf(path).filter((l) => !writerMayBeAlive(l));
  if (dead.length === 0) return report;
  if (!existsSync(path)) {
    // A write past its commit point: its `old` exists and the target does not.
    for (const old of dead.filter((l) => l.kind === 'old')) {
      const tmp = dead.find((l) => l.kind === 'tmp' && l.writer === old.writer);
      const source = tmp && hasMarker(tmp.path, marker) ? tmp.path : hasMarker(old.path, marker) ? old.path : undefined;
      if (!source) continue;
      try {
        renameSync(source, path);
      } catch (err) {
        // Another process recovered it first.
        if (!existsSync(path)) throw err;
      }
      fsyncDir(dirname(path));
      report.finished = source === old.path ? 'restored' : 'forward';
      break;
    }
  }
  for (const l of dead) {
    if (!existsSync(l.path)) continue;
    rmSync(l.path, { recursive: true, force: true });
    report.removed.push(l.path);
  }
  return report;
}

/**
 * Write `files` as the directory `target`, replacing an existing one, in one atomic step (see the
 * file comment). The last file is the marker. `target`'s parent is created if needed. On an error
 * before the new directory is in place (disk full, permission) the temp dir is removed, the
 * previous `target` is where it was, and the error propagates.
 */
export function writeDirectoryAtomic(target: string, files: DirectoryFile[], options: DirectoryWriteOptions = {}): string {
  if (files.length === 0) throw new RangeError('writeDirectoryAtomic: no files (the last one is the marker)');
  const path = resolve(target);
  const step = (s: DirectoryWriteStep, p: string) => options.beforeStep?.(s, p);
  const parent = dirname(path);
  makeDirectorySync(parent, 'checkpoint folder'); // not Node's recursive mkdir: it loops forever under /proc
  const writer = `${HOST_TAG}-${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmp = join(parent, `.${basename(path)}.tmp-${writer}`);
  const old = join(parent, `.${basename(path)}.old-${writer}`);
  const marker = files[files.length - 1];
  let replacing = false;
  try {
    step('mkdir-temp', tmp);
    mkdirSync(tmp);
    for (const file of files.slice(0, -1)) {
      step('write-file', join(tmp, file.name));
      writeFileSynced(join(tmp, file.name), file.data, 'wx');
    }
    const markerTemp = join(tmp, `.${marker.name}.partial`);
    step('write-marker', markerTemp);
    writeFileSynced(markerTemp, marker.data, 'wx');
    step('rename-marker', join(tmp, marker.name));
    renameSync(markerTemp, join(tmp, marker.name));
    step('fsync-temp', tmp);
    fsyncDir(tmp);
    replacing = existsSync(path);
    if (replacing) {
      step('move-old-aside', old);
      renameSync(path, old);
    }
    step('rename-into-place', path);
    renameSync(tmp, path);
  } catch (err) {
    // Nothing new is in place: put the previous version back (if it was moved aside) and drop
    // the temp dir. Should that fail too, the leftovers are a state recoverDirectory finishes.
    try {
      if (!existsSync(path) && existsSync(old)) renameSync(old, path);
      rmSync(tmp, { recursive: true, force: true });
    } catch {
      // left for recovery
    }
    throw err;
  }
  // The new directory is in place: the write has succeeded. Making the rename durable and
  // deleting the previous version are best effort (a later recovery deletes what is left).
  try {
    step('fsync-parent', parent);
    fsyncDir(parent);
    if (replacing) {
      // The marker first: a half-deleted old version is then never taken for a whole one.
      const names = readdirSync(old).sort((a, b) => Number(b === marker.name) - Number(a === marker.name));
      for (const name of names) {
        step('unlink-old-file', join(old, name));
        rmSync(join(old, name), { recursive: true, force: true });
      }
      step('rmdir-old', old);
      rmdirSync(old);
    }
  } catch {
    // left for recovery
  }
  return path;
}
