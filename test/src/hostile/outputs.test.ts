/**
 * Hostile and careless outputs (issue 11, items 10, 11, 13, 14, 21): `--out` naming a device,
 * a FIFO, a symbolic link, a folder or this command's own stdout; stdout closed early (EPIPE)
 * or full (ENOSPC); an output under /proc; two `prepare` runs on one `--out`; `prepare`
 * killed at several points and rerun. A device or link is never replaced by a file, a write
 * error is one clear line, and a second writer never deletes the first one's work.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { processStartTime } from '@alexnet-stream/core';
import { readShardIndex } from '@alexnet-stream/stream-io';
import { A, CLI, clearError, cli, demoData, scratch, sh } from './stream-fixtures';

const dir = scratch('outputs');
const file = (name: string) => join(dir, name);
let demo: string;

before(() => {
  demo = demoData(dir);
  const r = sh(
    dir,
    `${A} scan ${demo}/train > items.msgpack && ${A} decode --size 32 < items.msgpack > images.msgpack && ${A} mean --out mean.npy < images.msgpack | ${A} batch --size 8 --out-dir data`,
  );
  assert.deepEqual(r.status, [0, 0], r.stderr);
});

test('--out /dev/full: the device stays a device and the error is one line (ENOSPC), exit 2', () => {
  for (const script of [
    `${A} mean --out /dev/full < images.msgpack > /dev/null`,
    `${A} mean --out /dev/full data`,
    `${A} inspect data --contact-sheet /dev/full > /dev/null`,
  ]) {
    const r = sh(dir, script);
    assert.deepEqual(r.status, [2], `${script}: ${r.stderr}`);
    clearError(r.stderr, /\/dev\/full: cannot write to a character device: no space left on device \(ENOSPC\)/, script);
    assert.ok(statSync('/dev/full').isCharacterDevice(), '/dev/full is still a device');
  }
  const nul = sh(dir, `${A} mean --out /dev/null data && ${A} inspect data --contact-sheet /dev/null > /dev/null`);
  assert.deepEqual(nul.status, [0], nul.stderr);
  assert.ok(statSync('/dev/null').isCharacterDevice(), '/dev/null is still a device');
});

test('--out a symbolic link writes its target (the link stays); a dangling link creates its target', () => {
  mkdirSync(file('targets'), { recursive: true });
  writeFileSync(file('targets/old.npy'), 'old');
  symlinkSync('targets/old.npy', file('link.npy'));
  symlinkSync('targets/new.npy', file('dangling.npy'));
  const r = sh(dir, `${A} mean --out link.npy data && ${A} mean --out dangling.npy data`);
  assert.deepEqual(r.status, [0], r.stderr);
  assert.ok(lstatSync(file('link.npy')).isSymbolicLink() && readlinkSync(file('link.npy')) === 'targets/old.npy');
  assert.ok(lstatSync(file('dangling.npy')).isSymbolicLink());
  const expected = readFileSync(file('mean.npy'));
  assert.deepEqual(readFileSync(file('targets/old.npy')), expected);
  assert.deepEqual(readFileSync(file('targets/new.npy')), expected);
});

test("--out a FIFO is written through to its reader; a folder or this command's stdout is refused", async () => {
  execFileSync('mkfifo', [file('out.fifo')]);
  const r = sh(dir, `(cat out.fifo > from-fifo.npy &) ; ${A} mean --out out.fifo data`);
  assert.deepEqual(r.status, [0], r.stderr);
  assert.ok(lstatSync(file('out.fifo')).isFIFO(), 'still a FIFO');
  const expected = readFileSync(file('mean.npy'));
  for (let i = 0; i < 500 && readFileSync(file('from-fifo.npy')).length < expected.length; i++) await new Promise((res) => setTimeout(res, 10));
  assert.deepEqual(readFileSync(file('from-fifo.npy')), expected);
  mkdirSync(file('a-folder'));
  const folder = sh(dir, `${A} mean --out a-folder data`);
  assert.deepEqual(folder.status, [2]);
  clearError(folder.stderr, /a-folder: is a folder; an output file is not written over it/);
  assert.ok(statSync(file('a-folder')).isDirectory());
  const self = sh(dir, `${A} mean --out /dev/stdout < images.msgpack | cat > /dev/null`);
  assert.deepEqual(self.status, [2, 0]);
  clearError(self.stderr, /\/dev\/stdout: is where this command's stdout goes/);
});

test('stdout closed early (EPIPE) is a quiet stop; stdout full (ENOSPC) is one clear line, exit 2', () => {
  for (const script of [
    `${A} read data | true`,
    `${A} scan ${demo}/train | true`,
    `${A} decode --size 32 < items.msgpack | true`,
    `${A} read data | head -c 10 > /dev/null`,
  ]) {
    const r = sh(dir, script);
    assert.equal(r.status[0], 0, `${script}: ${r.stderr}`);
    assert.equal(r.stderr.replace(/alexnet-stream scan: \d+ of \d+ items, \d+ classes\n/, ''), '', script);
  }
  for (const script of [
    `${A} read data > /dev/full`,
    `${A} inspect data > /dev/full`,
    `${A} read data | ${A} inspect --json > /dev/full`,
    `${A} scan ${demo}/train > /dev/full`,
  ]) {
    const r = sh(dir, script);
    assert.equal(r.status[r.status.length - 1], 2, `${script}: ${r.stderr}`);
    clearError(r.stderr, /cannot write to stdout: no space left on device \(ENOSPC\)/, script);
  }
});

test('read DATA | mean --out m.npy | head -c 100: the mean stage says m.npy was not written, exit 2', () => {
  const r = sh(dir, `${A} read data | ${A} mean --out cut.npy | head -c 100 > /dev/null`);
  assert.equal(r.status[1], 2, r.stderr);
  clearError(r.stderr, /mean: stdout was closed by the next stage before the stream ended \(EPIPE\); cut\.npy was not written/);
  assert.ok(!existsSync(file('cut.npy')));
});

test('an output under /proc (or any folder that cannot be created) is a clear error at once, not a spin', () => {
  for (const args of [
    ['prepare', '--train', `${demo}/train`, '--out', '/proc/foo', '--size', '16'],
    ['mean', '--out', '/proc/foo/m.npy', 'data'],
    ['make-demo-data', '--out', '/proc/foo/demo'],
  ]) {
    const started = Date.now();
    const r = cli(dir, args, { timeoutMs: 30_000 });
    assert.equal(r.signal, null, `${args[0]} did not finish`);
    assert.ok(Date.now() - started < 20_000);
    assert.equal(r.status, 2);
    clearError(r.stderr, /\/proc\/foo/, args[0]);
  }
  const batch = sh(dir, `${A} batch --size 8 --out-dir /proc/foo < images.msgpack`);
  assert.equal(batch.status[0], 2, batch.stderr);
  clearError(batch.stderr, /\/proc\/foo: cannot create the shard directory/);
});

/** 300 training images: a prepare of them at 128 px, one image at a time, takes a few seconds. */
function bigData(): string {
  const big = join(dir, 'big');
  if (!existsSync(join(big, 'classes.txt'))) {
    const made = cli(dir, ['make-demo-data', '--out', big, '--train-per-class', '50', '--val-per-class', '1', '--seed', '5']);
    assert.equal(made.status, 0, made.stderr);
  }
  return big;
}

test('a second prepare on the same --out is refused while the first runs; the first completes', async () => {
  const big = bigData();
  const out = file('raced');
  const first = spawn(process.execPath, [CLI, 'prepare', '--train', `${big}/train`, '--out', out, '--size', '128', '--batch-size', '8', '--concurrency', '1'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let firstErr = '';
  first.stderr!.on('data', (d) => (firstErr += d));
  const firstExit = new Promise<number | null>((r) => first.once('exit', r));
  for (let i = 0; i < 2000 && !existsSync(`${out}.partial`); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(existsSync(`${out}.partial`), 'the first run started');
  const second = spawnSync(process.execPath, [CLI, 'prepare', '--train', `${big}/train`, '--out', out, '--size', '128', '--batch-size', '8'], {
    encoding: 'utf8',
  });
  assert.equal(second.status, 2, second.stderr);
  clearError(second.stderr, new RegExp(`raced\\.lock: held by process ${first.pid} on .*prepare --out .*raced.*; another prepare is building`));
  assert.equal(await firstExit, 0, firstErr);
  assert.doesNotMatch(firstErr, /ENOENT/);
  const index = await readShardIndex(out);
  assert.equal(index.prefixes.train.images, 300);
  assert.ok(!existsSync(`${out}.lock`), 'the lock is released');
});

test('a lock of a live process is respected (its partial dir kept); a lock of a dead one is broken at once', async () => {
  const out = file('locked');
  const holder = spawn('sleep', ['60'], { stdio: 'ignore' });
  try {
    writeFileSync(
      `${out}.lock`,
      JSON.stringify({
        pid: holder.pid,
        host: hostname(),
        startTime: processStartTime(holder.pid!),
        purpose: 'prepare --out locked',
        since: new Date().toISOString(),
      }),
    );
    mkdirSync(`${out}.partial`);
    writeFileSync(`${out}.partial/.prepare-partial`, `${holder.pid}\n`);
    const r = cli(dir, ['prepare', '--train', `${demo}/train`, '--out', out, '--size', '16', '--batch-size', '8']);
    assert.equal(r.status, 2, r.stderr);
    clearError(r.stderr, new RegExp(`held by process ${holder.pid}`));
    assert.ok(existsSync(`${out}.partial/.prepare-partial`), "the live run's work is not deleted");
  } finally {
    holder.kill('SIGKILL');
  }
  await new Promise((r) => holder.once('exit', r));
  const r = cli(dir, ['prepare', '--train', `${demo}/train`, '--out', out, '--size', '16', '--batch-size', '8']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /removing \S*locked\.partial left by an interrupted run/);
  assert.ok(existsSync(join(out, 'prepare.json')) && !existsSync(`${out}.lock`));
});

test('prepare killed with SIGKILL at four points: every rerun breaks the stale lock at once and completes', async () => {
  const big = bigData();
  for (const [k, delayMs] of [300, 1000, 2000, 3000].entries()) {
    const out = file(`killed-${k}`);
    const child = spawn(
      process.execPath,
      [CLI, 'prepare', '--train', `${big}/train`, '--val-split', '0.2', '--out', out, '--size', '128', '--batch-size', '4', '--concurrency', '1'],
      { stdio: 'ignore' },
    );
    const exited = new Promise((r) => child.once('exit', r));
    await new Promise((r) => setTimeout(r, delayMs));
    child.kill('SIGKILL'); // no effect if it already finished
    await exited;
    // whatever the point: <out> is absent or complete, never half
    if (existsSync(out)) assert.ok(existsSync(join(out, 'prepare.json')), `killed at ${delayMs} ms: ${out} is complete`);
    const started = Date.now();
    const rerun = cli(dir, ['prepare', '--train', `${big}/train`, '--val-split', '0.2', '--out', out, '--size', '128', '--batch-size', '4']);
    assert.equal(rerun.status, 0, `killed at ${delayMs} ms: ${rerun.stderr}`);
    assert.ok(Date.now() - started < 120_000);
    const index = await readShardIndex(out);
    assert.equal(index.prefixes.train.images + index.prefixes.val.images, 300);
    assert.ok(!existsSync(`${out}.lock`) && !existsSync(`${out}.partial`));
  }
});
