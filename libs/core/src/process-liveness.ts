/**
 * "Is the process that left this behind still running?", asked by everything that finds a
 * lock file, a temp file or a half-written directory with a writer's pid in it (lock-file.ts,
 * stream-io's shard writer, model-alexnet's atomic-dir.ts). One answer for all of them, and a
 * conservative one: a process counts as gone only when this host says so for certain — no
 * process with that pid (ESRCH), a zombie that has exited, or a different process now under
 * that pid (its start time in /proc differs: pids are reused). A pid is only meaningful on the
 * host that wrote it: callers compare hosts first (a writer on another host may be alive).
 */
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';

/** Fields 3.. of /proc/<pid>/stat, or undefined where there is no /proc (or no such process). */
function procStat(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) is in parentheses and may contain spaces: split after it
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** A process's start time from /proc (field 22, clock ticks since boot), or undefined where there is no /proc (or no such process). */
export function processStartTime(pid: number): string | undefined {
  return procStat(pid)?.[19];
}

/** Whether a process with this pid exists on this host (signal 0; EPERM: it exists, it is not ours). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Whether the process `pid` of this host is certainly gone: no such process, a zombie, or (when
 * `startTime` is known) another process that has since taken the pid. This process is never gone.
 */
export function processIsGone(pid: number, startTime?: string): boolean {
  if (pid === process.pid) return false;
  if (!processExists(pid)) return true;
  const stat = procStat(pid);
  if (stat && (stat[0] === 'Z' || stat[0] === 'X')) return true; // exited, not yet reaped by its parent
  const now = stat?.[19];
  return startTime !== undefined && now !== undefined && now !== startTime;
}

/** A short tag of this host (8 hex digits of a hash of its name), for names of files other hosts may see. */
export const HOST_TAG = createHash('sha256').update(hostname()).digest('hex').slice(0, 8);
