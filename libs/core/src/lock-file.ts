/**
 * A single-host lock file: who writes an output (`prepare --out`, a shard set's prefix, the
 * shard index) holds `<name>.lock`, created with O_EXCL, holding its owner as JSON (pid, host,
 * the process's start time, what for, since when).
 *
 * Why not proper-lockfile: its staleness is an mtime refreshed by a timer, so a lock left by a
 * `kill -9` blocks every rerun for the stale period (10 s by default), and a holder whose event
 * loop stalls past it loses a lock it still uses. Here staleness is exact on one host: a lock
 * is stale when its process is gone — no process with that pid, or a different process under
 * it (its start time in /proc differs: pids are reused) — and a stale lock is broken at once.
 * A lock from another host is never broken automatically (its process cannot be checked from
 * here); the message says which file to remove. So: correct for any number of processes on one
 * host (the project's case: a data dir is prepared on the machine that holds it); on a network
 * file system shared by several hosts, two hosts never break each other's locks, and a crashed
 * host's lock is removed by hand.
 */
import { randomBytes } from 'node:crypto';
import { link, open, rename, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { AlexnetStreamError, type MessageRender } from './errors';
import { processIsGone, processStartTime } from './process-liveness';
import { readRegularFileAsync } from './read-file';

export interface LockOwner {
  pid: number;
  host: string;
  /** The process's start time (Linux: /proc/<pid>/stat field 22, clock ticks since boot). */
  startTime?: string;
  /** What the lock is for ("prepare --out data"). */
  purpose: string;
  /** ISO time the lock was taken. */
  since: string;
}

/** The lock is held by a live process (or one on another host): the job cannot run, exit status 2. */
export class LockHeldError extends AlexnetStreamError {
  constructor(
    message: string | MessageRender,
    readonly owner: LockOwner | undefined,
  ) {
    super(message, { code: 'ERR_LOCK_HELD', exitCode: 2 });
  }
}

/** Whether the owner of a lock is certainly gone (same host, and its process is not running). */
export function ownerIsGone(owner: LockOwner): boolean {
  if (owner.host !== hostname()) return false;
  return processIsGone(owner.pid, owner.startTime);
}

/**
 * A lock file's text: undefined when there is no file; '' (no owner) when what is there is not
 * a small regular file (a FIFO, a device, a folder put in its place), which would otherwise
 * hang the read or fill memory; such a lock is reported as unreadable, never broken.
 */
async function readLockText(path: string): Promise<string | undefined> {
  try {
    return (await readRegularFileAsync(path, { maxBytes: 64 << 10 })).toString('utf8');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : '';
  }
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const o = JSON.parse(text) as LockOwner;
    return Number.isInteger(o.pid) && typeof o.host === 'string' ? o : undefined;
  } catch {
    return undefined;
  }
}

export interface Lock {
  path: string;
  owner: LockOwner;
  /** Remove the lock file (only if it is still ours). */
  release(): Promise<void>;
}

export interface AcquireOptions {
  /** What the lock protects, for the owner record and messages ("prepare --out data"). */
  purpose: string;
  /** Wait this long for a live holder to let go (default 0: fail at once). */
  waitMs?: number;
  /** What to tell a user who finds it held (default: wait for the other run or stop it); may name parameters. */
  advice?: string | MessageRender;
}

function describeOwner(owner: LockOwner | undefined): string {
  if (!owner) return 'another process (its lock file is unreadable or still being written)';
  return `process ${owner.pid} on ${owner.host} (${owner.purpose}, since ${owner.since})`;
}

/**
 * Take the lock file at `path`, breaking it when its owner is gone; throws `LockHeldError`
 * when a live owner (or one on another host) holds it longer than `waitMs`. Other errors (the
 * folder does not exist, is read-only) are the caller's to report.
 */
export async function acquireLock(path: string, options: AcquireOptions): Promise<Lock> {
  const owner: LockOwner = {
    pid: process.pid,
    host: hostname(),
    startTime: processStartTime(process.pid),
    purpose: options.purpose,
    since: new Date().toISOString(),
  };
  const text = `${JSON.stringify(owner)}\n`;
  const deadline = Date.now() + (options.waitMs ?? 0);
  let unreadableSince: number | undefined;
  for (;;) {
    try {
      const handle = await open(path, 'wx');
      try {
        await handle.writeFile(text);
      } finally {
        await handle.close();
      }
      return {
        path,
        owner,
        release: async () => {
          const now = await readLockText(path);
          if (now === text) await unlink(path).catch(() => undefined);
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const heldText = await readLockText(path);
    if (heldText === undefined) continue; // released between our open and read: try again
    const held = parseOwner(heldText);
    if (held && ownerIsGone(held)) {
      await breakStaleLock(path, heldText);
      continue;
    }
    if (!held) {
      // Being written by its owner (open, then write): give it a moment before calling it foreign.
      unreadableSince ??= Date.now();
      if (Date.now() - unreadableSince < 2000) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
    }
    if (Date.now() >= deadline) {
      const remote = held && held.host !== hostname();
      const advice = options.advice ?? 'wait for it to finish, or stop it';
      throw new LockHeldError(
        (name) =>
          `${path}: held by ${describeOwner(held)}; ` +
          (remote || !held ? `if no such run is alive any more, remove ${path}` : typeof advice === 'string' ? advice : advice(name)),
        held,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Remove a stale lock without removing a fresh one that another process took in between: the
 * lock is renamed aside first (atomic), and if what was renamed is not the stale lock judged,
 * it is put back (link fails if yet another lock appeared: then that one stands).
 */
async function breakStaleLock(path: string, staleText: string): Promise<void> {
  const aside = `${path}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await rename(path, aside);
  } catch {
    return; // already gone: someone else broke it
  }
  const moved = await readLockText(aside);
  if (moved !== staleText) await link(aside, path).catch(() => undefined);
  await unlink(aside).catch(() => undefined);
}
