import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic, writeFileAtomicSync } from './atomic-file';
import { acquireLock, LockHeldError } from './lock-file';
import { processStartTime } from './process-liveness';
import { OutputError } from './errors';
import { makeDirectory, makeDirectorySync, resolveOutputTarget } from './output-file';
import { readRegularFileAsync, readRegularFileSync } from './read-file';

function withDir(fn: (dir: string) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'output-file-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test(
  'resolveOutputTarget: files and new paths are replaced, links followed, devices written through, folders refused',
  withDir((dir) => {
    writeFileSync(join(dir, 'file'), 'x');
    mkdirSync(join(dir, 'sub'));
    symlinkSync('file', join(dir, 'link'));
    symlinkSync('sub/new', join(dir, 'dangling'));
    assert.deepEqual(resolveOutputTarget(join(dir, 'file')), { mode: 'replace', path: join(dir, 'file') });
    assert.deepEqual(resolveOutputTarget(join(dir, 'new')), { mode: 'replace', path: join(dir, 'new') });
    assert.deepEqual(resolveOutputTarget(join(dir, 'link')), { mode: 'replace', path: join(dir, 'file') });
    assert.deepEqual(resolveOutputTarget(join(dir, 'dangling')), { mode: 'replace', path: join(dir, 'sub', 'new') });
    assert.deepEqual(resolveOutputTarget('/dev/null'), { mode: 'write-through', path: '/dev/null', kind: 'a character device' });
    assert.throws(() => resolveOutputTarget(join(dir, 'sub')), /is a folder; an output file is not written over it/);
  }),
);

test(
  'writeFileAtomic: through a link the target changes and the link stays; a device stays a device; ENOSPC is an OutputError',
  withDir(async (dir) => {
    writeFileSync(join(dir, 'target'), 'old');
    symlinkSync('target', join(dir, 'link'));
    await writeFileAtomic(join(dir, 'link'), 'new');
    assert.ok(lstatSync(join(dir, 'link')).isSymbolicLink());
    assert.equal(readFileSync(join(dir, 'target'), 'utf8'), 'new');
    writeFileAtomicSync(join(dir, 'link'), 'newer');
    assert.equal(readFileSync(join(dir, 'target'), 'utf8'), 'newer');
    await writeFileAtomic('/dev/null', 'nothing');
    assert.ok(statSync('/dev/null').isCharacterDevice());
    await assert.rejects(
      writeFileAtomic('/dev/full', 'x'),
      (e: Error) => e instanceof OutputError && /\/dev\/full: cannot write to a character device: no space left on device \(ENOSPC\)/.test(e.message),
    );
    assert.throws(() => writeFileAtomicSync('/dev/full', 'x'), /no space left on device \(ENOSPC\)/);
    await assert.rejects(writeFileAtomic(join(dir, 'missing', 'x'), 'x'), /cannot write: its folder does not exist \(ENOENT\)/);
  }),
);

test(
  "makeDirectory creates parents one level at a time and fails at once where Node's recursive mkdir spins (/proc)",
  withDir(async (dir) => {
    await makeDirectory(join(dir, 'a', 'b', 'c'));
    makeDirectorySync(join(dir, 'x', 'y'));
    assert.ok(statSync(join(dir, 'a', 'b', 'c')).isDirectory() && statSync(join(dir, 'x', 'y')).isDirectory());
    writeFileSync(join(dir, 'f'), '');
    await assert.rejects(makeDirectory(join(dir, 'f', 'g')), /is a regular file/);
    const started = Date.now();
    await assert.rejects(
      makeDirectory('/proc/alexnet-stream-test/x'),
      (e: Error) => e instanceof OutputError && /cannot create the output folder/.test(e.message),
    );
    assert.throws(() => makeDirectorySync('/proc/alexnet-stream-test/x'), OutputError);
    assert.ok(Date.now() - started < 5000);
  }),
);

test(
  'readRegularFile: regular files only (a FIFO does not block, /dev/zero is not read), at most maxBytes',
  withDir(async (dir) => {
    writeFileSync(join(dir, 'f'), 'hello');
    assert.equal((await readRegularFileAsync(join(dir, 'f'), { maxBytes: 5 })).toString(), 'hello');
    assert.equal(readRegularFileSync(join(dir, 'f'), { maxBytes: 5 }).toString(), 'hello');
    await assert.rejects(readRegularFileAsync(join(dir, 'f'), { maxBytes: 4 }), /file is 5 bytes, more than the 4 bytes limit/);
    assert.throws(() => readRegularFileSync(join(dir, 'f'), { maxBytes: 4 }), { code: 'ERR_FILE_TOO_LARGE' });
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    await assert.rejects(readRegularFileAsync(join(dir, 'fifo'), { maxBytes: 100 }), /not a regular file \(a FIFO \(named pipe\)\)/);
    assert.throws(() => readRegularFileSync(join(dir, 'fifo'), { maxBytes: 100 }), { code: 'ERR_NOT_REGULAR_FILE' });
    await assert.rejects(readRegularFileAsync('/dev/zero', { maxBytes: 100 }), /a character device/);
    // a regular file whose size fstat reports as 0 (/proc) is read to its end, still bounded
    assert.match((await readRegularFileAsync('/proc/self/status', { maxBytes: 1 << 20 })).toString(), /^Name:/);
    await assert.rejects(readRegularFileAsync('/proc/self/status', { maxBytes: 10 }), /more than the 10 bytes limit/);
  }),
);

test(
  "lock files: a live holder is refused, a released or dead one is not; another host's lock is never broken",
  withDir(async (dir) => {
    const path = join(dir, 'out.lock');
    const lock = await acquireLock(path, { purpose: 'test' });
    await assert.rejects(
      acquireLock(path, { purpose: 'second' }),
      (e: Error) => e instanceof LockHeldError && new RegExp(`held by process ${process.pid} on .* \\(test, since`).test(e.message),
    );
    // waitMs: the second waits while the first finishes
    const waiting = acquireLock(path, { purpose: 'patient', waitMs: 5000 });
    setTimeout(() => void lock.release(), 100);
    const second = await waiting;
    await second.release();
    // a lock of a process that has exited is broken at once
    const child = spawn('true');
    const startTime = processStartTime(child.pid!);
    await new Promise((r) => child.once('exit', r));
    writeFileSync(path, JSON.stringify({ pid: child.pid, host: hostname(), startTime, purpose: 'dead', since: '' }));
    const third = await acquireLock(path, { purpose: 'after the dead' });
    await third.release();
    // a pid reused by another process (a different start time) is not the owner
    const other = spawn('sleep', ['30']);
    try {
      writeFileSync(path, JSON.stringify({ pid: other.pid, host: hostname(), startTime: '1', purpose: 'reused', since: '' }));
      await (await acquireLock(path, { purpose: 'after reuse' })).release();
      // the same process with its own start time is a live owner
      writeFileSync(path, JSON.stringify({ pid: other.pid, host: hostname(), startTime: processStartTime(other.pid!), purpose: 'alive', since: '' }));
      await assert.rejects(acquireLock(path, { purpose: 'refused' }), LockHeldError);
    } finally {
      other.kill('SIGKILL');
    }
    // another host: never broken, the message says which file to remove
    writeFileSync(path, JSON.stringify({ pid: 1, host: 'elsewhere.example', purpose: 'remote', since: '' }));
    await assert.rejects(
      acquireLock(path, { purpose: 'local' }),
      new RegExp(`held by process 1 on elsewhere\\.example .*remove ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
    );
  }),
);
