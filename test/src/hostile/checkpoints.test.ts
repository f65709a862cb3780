/**
 * Hostile cases for checkpoints (issue 11, items 2 and 4): a writer killed at every step of a
 * checkpoint write (each file write, rename and unlink), a disk that fills up at every step, a
 * writer that is alive in the middle of its write, and `import --force` over things that are
 * not checkpoints. What must hold: every checkpoint written before is whole and findable (even
 * read-only, before anything recovers it), recovery keeps the newest whole version, and nothing
 * this project did not write is ever deleted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { encodeNpy, type NamedTensors } from '@alexnet-stream/core';
import {
  decodeSafetensors,
  findDirectory,
  initParameters,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  saveCheckpoint,
  STATE_FILE,
  WEIGHTS_FILE,
  MOMENTUM_FILE,
} from '@alexnet-stream/model-alexnet';
import { lowerInference, writeOnnx } from '@alexnet-stream/onnx-export';
import { tinySpec } from '@alexnet-stream/trainer-multigpu/testing';
import { checkpointVersion } from './checkpoint-fixtures';

const WRITER = join(__dirname, 'checkpoint-writer.js');
const root = mkdtempSync(join(tmpdir(), 'hostile-ckpt-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (): string => {
  const dir = join(root, `w${dirCount++}`);
  mkdirSync(dir);
  return dir;
};

function sameWeights(a: NamedTensors, b: NamedTensors): boolean {
  return Object.keys(b).every(
    (n) => a[n] !== undefined && Buffer.from(a[n].buffer, a[n].byteOffset, a[n].byteLength).equals(Buffer.from(b[n].buffer, b[n].byteOffset, b[n].byteLength)),
  );
}

/** The version a checkpoint directory holds, read without any recovery, checking that every file is whole and of that version. */
function versionReadOnly(dir: string): number {
  const state = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as { version: number };
  const expected = checkpointVersion(state.version);
  const tensors = (file: string) =>
    Object.fromEntries(Object.entries(decodeSafetensors(readFileSync(join(dir, file)), file).tensors).map(([n, t]) => [n, t.data as Float32Array]));
  assert.ok(sameWeights(tensors(WEIGHTS_FILE), expected.weights), `${dir}: weights are not those of version ${state.version}`);
  assert.ok(sameWeights(tensors(MOMENTUM_FILE), expected.momentum!), `${dir}: momentum is not that of version ${state.version}`);
  return state.version;
}

function runWriter(target: string, version: number, killAt: number) {
  return spawnSync(process.execPath, [WRITER, target, String(version), String(killAt)], { encoding: 'utf8' });
}

for (const scenario of ['a new checkpoint', 'replacing a checkpoint'] as const) {
  test(`${scenario}: a writer killed before each of its steps leaves every earlier checkpoint whole and findable, and recovery keeps the newest whole one`, () => {
    const replacing = scenario === 'replacing a checkpoint';
    const setup = (): string => {
      const dir = freshDir();
      saveCheckpoint(join(dir, 'epoch-0001'), checkpointVersion(1));
      if (replacing) saveCheckpoint(join(dir, 'epoch-0002'), checkpointVersion(2));
      return dir;
    };
    const counted = runWriter(join(setup(), 'epoch-0002'), 3, -1);
    assert.equal(counted.status, 0, counted.stderr);
    const steps = JSON.parse(counted.stdout) as string[];
    // The write's steps: every rename and unlink is among them.
    for (const s of [
      'mkdir-temp',
      'write-file',
      'rename-marker',
      'rename-into-place',
      ...(replacing ? ['move-old-aside', 'unlink-old-file', 'rmdir-old'] : []),
    ]) {
      assert.ok(steps.includes(s), `step ${s} in ${steps.join(', ')}`);
    }
    // The first step after which the new version is the committed one.
    const commit = steps.indexOf(replacing ? 'move-old-aside' : 'rename-into-place');
    for (let k = 0; k < steps.length; k++) {
      const dir = setup();
      const target = join(dir, 'epoch-0002');
      const r = runWriter(target, 3, k);
      assert.equal(r.signal, 'SIGKILL', `killed before step ${k} (${steps[k]}): ${r.stderr}`);
      const newest = k <= commit ? (replacing ? 2 : undefined) : 3;
      const where = `killed before step ${k} (${steps[k]})`;
      // Read-only, before any recovery: epoch 1 untouched, epoch 2 found whole where it lies.
      assert.equal(versionReadOnly(join(dir, 'epoch-0001')), 1, where);
      const found = findDirectory(target, STATE_FILE);
      assert.equal(found === undefined ? undefined : versionReadOnly(found), newest, `${where}: the committed epoch 2 (read-only)`);
      // What --resume does: the latest checkpoint, loaded (this recovers the directory).
      const latest = latestCheckpoint(dir)!;
      assert.equal(latest.epoch, newest === undefined ? 1 : 2, where);
      const loaded = loadCheckpoint(latest.path);
      assert.equal(loaded.state.version, newest ?? 1, where);
      assert.ok(sameWeights(loaded.weights, checkpointVersion(newest ?? 1).weights), `${where}: weights whole`);
      assert.ok(sameWeights(loaded.momentum!, checkpointVersion(newest ?? 1).momentum!), `${where}: momentum whole`);
      // Recovered: the visible checkpoints only, nothing left behind.
      assert.deepEqual(readdirSync(dir).sort(), newest === undefined ? ['epoch-0001'] : ['epoch-0001', 'epoch-0002'], where);
      assert.deepEqual(
        listCheckpoints(dir).map((c) => c.path),
        [join(dir, 'epoch-0001'), ...(newest === undefined ? [] : [target])],
        where,
      );
    }
  });
}

test('a disk that fills up at any step of a replacement: the save fails with the error and the previous checkpoint stays, or the new one is whole', () => {
  const dir = freshDir();
  const target = join(dir, 'epoch-0002');
  saveCheckpoint(target, checkpointVersion(2));
  const steps: string[] = [];
  saveCheckpoint(target, checkpointVersion(3), { beforeStep: (s) => void steps.push(s) });
  let previous = 3;
  for (let k = 0; k < steps.length; k++) {
    let seen = 0;
    const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    const version = 10 + k;
    const save = () =>
      saveCheckpoint(target, checkpointVersion(version), {
        beforeStep: () => {
          if (seen++ === k) throw full;
        },
      });
    const where = `disk full at step ${k} (${steps[k]})`;
    if (k <= steps.indexOf('rename-into-place')) {
      assert.throws(save, /ENOSPC/, where);
      assert.equal(versionReadOnly(target), previous, `${where}: the previous checkpoint is in place`);
      assert.deepEqual(readdirSync(dir), ['epoch-0002'], `${where}: no temp dir left`);
    } else {
      save(); // the new checkpoint is in place: cleaning up after it is not the save's failure
      assert.equal(versionReadOnly(target), version, where);
      previous = version;
    }
    // Leftovers of this (live) process are for a later process to recover: clear them here.
    for (const name of readdirSync(dir)) if (name !== 'epoch-0002') rmSync(join(dir, name), { recursive: true });
  }
});

test('leftovers of a writer that is still alive are never touched; once it is dead they are recovered', async () => {
  const dir = freshDir();
  const target = join(dir, 'epoch-0002');
  saveCheckpoint(target, checkpointVersion(2));
  const other = join(freshDir(), 'epoch-0002');
  saveCheckpoint(other, checkpointVersion(2));
  const steps = JSON.parse(runWriter(other, 3, -1).stdout) as string[];
  // Stop a live writer between its two renames: no epoch-0002 in place while it is alive.
  const child = spawn(process.execPath, [WRITER, target, '3', String(steps.indexOf('rename-into-place')), 'pause']);
  await new Promise<void>((res, rej) => {
    child.stdout.on('data', (d: Buffer) => d.toString().includes('paused') && res());
    child.on('exit', (code) => rej(new Error(`writer exited ${code}`)));
  });
  try {
    assert.equal(existsSync(target), false, 'the live writer moved the old version aside');
    const before = readdirSync(dir).sort();
    // Readers find the committed version where it lies, and move nothing.
    const listed = listCheckpoints(dir);
    assert.equal(listed.length, 1);
    assert.equal(loadCheckpoint(listed[0].path).state.version, 3);
    assert.equal(loadCheckpoint(target).state.version, 3, 'loading by its usual name finds it too');
    assert.deepEqual(readdirSync(dir).sort(), before, 'nothing of the live writer was renamed or deleted');
  } finally {
    child.kill('SIGKILL');
    await new Promise((res) => child.on('exit', res));
  }
  assert.deepEqual(
    listCheckpoints(dir).map((c) => c.path),
    [target],
  );
  assert.deepEqual(readdirSync(dir), ['epoch-0002'], 'recovered once the writer is dead');
  assert.equal(versionReadOnly(target), 3);
});

test('saving over a directory that is not a checkpoint of ours is refused, and nothing in it is deleted', () => {
  const dir = freshDir();
  const notes = join(dir, 'epoch-0003');
  mkdirSync(notes);
  writeFileSync(join(notes, 'notes.txt'), 'mine');
  assert.throws(
    () => saveCheckpoint(notes, checkpointVersion(3)),
    /epoch-0003: holds a file a checkpoint does not \(notes\.txt\); only a checkpoint directory written by alexnet-stream is replaced/,
  );
  const ours = join(dir, 'epoch-0004');
  saveCheckpoint(ours, checkpointVersion(4));
  writeFileSync(join(ours, 'notes.txt'), 'added by the user');
  assert.throws(() => saveCheckpoint(ours, checkpointVersion(5)), /holds a file a checkpoint does not \(notes\.txt\)/);
  assert.equal(readFileSync(join(notes, 'notes.txt'), 'utf8'), 'mine');
  assert.equal(versionReadOnly(ours), 4);
  assert.deepEqual(readdirSync(dir).sort(), ['epoch-0003', 'epoch-0004']);
});

const CLI = resolve(__dirname, '../../../apps/cli/bin/alexnet-stream.js');

test('import --force replaces only a checkpoint directory this project wrote, in one step, never by deleting first', () => {
  const dir = freshDir();
  // An ONNX model to import (the trainer's tiny AlexNet-shaped test model: import recognises it).
  const model = join(dir, 'm.onnx');
  const spec = tinySpec(3, 35);
  writeOnnx(model, lowerInference(spec, initParameters(spec, 1)));
  const imp = (out: string, ...extra: string[]) =>
    spawnSync(process.execPath, [CLI, 'import', model, '--from', 'onnx', '--out', out, ...extra], { encoding: 'utf8' });

  // A weights dir with its logs and checkpoints, a folder of notes, a file, a symlink: all refused, all intact.
  const weightsDir = join(dir, 'weights');
  saveCheckpoint(join(weightsDir, 'epoch-0001'), checkpointVersion(1));
  writeFileSync(join(weightsDir, 'train_log.jsonl'), '{"iteration":1}\n');
  const notes = join(dir, 'notes');
  mkdirSync(notes);
  writeFileSync(join(notes, 'todo.txt'), 'keep me');
  const file = join(dir, 'file.txt');
  writeFileSync(file, 'a file');
  for (const [out, why] of [
    [weightsDir, /holds files a checkpoint does not \((epoch-0001, train_log\.jsonl|train_log\.jsonl, epoch-0001)\)/],
    [notes, /holds a file a checkpoint does not \(todo\.txt\)/],
    [file, /not a directory/],
  ] as const) {
    const r = imp(out, '--force');
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, why);
    assert.match(r.stderr, /only a checkpoint directory written by alexnet-stream is replaced/);
    assert.doesNotMatch(r.stderr, /at .*\.js:\d+/);
  }
  assert.equal(readFileSync(join(weightsDir, 'train_log.jsonl'), 'utf8'), '{"iteration":1}\n');
  assert.equal(versionReadOnly(join(weightsDir, 'epoch-0001')), 1);
  assert.equal(readFileSync(join(notes, 'todo.txt'), 'utf8'), 'keep me');
  assert.equal(readFileSync(file, 'utf8'), 'a file');

  // A checkpoint it wrote: replaced (with --force only), and the mean image goes in with it.
  const ckpt = join(dir, 'imported');
  assert.equal(imp(ckpt).status, 0);
  const again = imp(ckpt);
  assert.equal(again.status, 2);
  assert.match(again.stderr, /exists; choose another --out or add --force/);
  const mean = join(dir, 'mean.npy');
  writeFileSync(mean, encodeNpy(new Float32Array(3 * 80 * 80).fill(100), [3, 80, 80]));
  const forced = imp(ckpt, '--force', '--mean', mean);
  assert.equal(forced.status, 0, forced.stderr);
  assert.deepEqual(readdirSync(ckpt).sort(), ['mean.npy', 'state.json', 'weights.safetensors']);
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.startsWith('.')),
    [],
    'no temp or old dir left',
  );
});
