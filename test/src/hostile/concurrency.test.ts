/**
 * Two writers on one output at once. Two `train` runs on one weights_dir (a second started by
 * mistake, or a `--resume` of a run that is still going) interleaved their checkpoints, and the
 * second truncated the first's train_log.jsonl to its own start and rewrote its val_record.json:
 * the second is now refused while the first runs (exit 2, naming it), and a trainer killed with
 * SIGKILL does not block the next one. Concurrent exports and imports to one path each write a
 * whole file or checkpoint (the last rename wins), never a mix.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initParameters, loadCheckpoint, saveCheckpoint } from '@alexnet-stream/model-alexnet';
import { decodeModel } from '@alexnet-stream/onnx-export';
import { readConfigFile } from '@alexnet-stream/trainer-multigpu';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';
import { CLI, clearError, cli, scratch } from './stream-fixtures';

/** runTraining in a child process that can be held inside a checkpoint write (train-child.ts). */
const TRAIN_CHILD = join(__dirname, 'train-child.js');

const dir = scratch('concurrency');
const p = (name: string) => join(dir, name);
const spec = tinySpec(4, 35);

before(async () => {
  await writeFixtureDataDir({ dir: p('data'), classes: 4, trainPerClass: 10, valPerClass: 3, size: 40, batchSize: 8 });
  writeSpecFile(p('tiny.json'), spec);
  saveCheckpoint(p('ckpt'), { spec, weights: initParameters(spec, 1), state: {} });
});

function config(name: string, epochs: number): string {
  const path = p(`${name}.yaml`);
  writeFileSync(
    path,
    `${[`data_dir: ${p('data')}`, `weights_dir: ${p(name)}`, `spec_file: ${p('tiny.json')}`, 'batch_size: 8', `n_epochs: ${epochs}`, 'print_freq: 1', 'intra_op_threads: 1'].join('\n')}\n`,
  );
  return path;
}

/**
 * A trainer under way: `runTraining` in a child process, held at the start of its second
 * checkpoint write (epoch-0001 is written, the lock is held) until `release()`; no sleep decides
 * how long it runs.
 */
async function startHeldTrain(name: string, epochs: number) {
  const args = { config: await readConfigFile(config(name, epochs)), holdAt: { write: 2, step: 'mkdir-temp' } };
  const child = spawn(process.execPath, [TRAIN_CHILD, JSON.stringify(args)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d) => {
      stdout += d;
      if (stdout.includes('held\n')) resolve();
    });
    child.once('exit', (code, signal) => reject(new Error(`the trainer exited (${code ?? signal}) before it was held:\n${stderr}`)));
  });
  assert.ok(existsSync(p(`${name}/train.lock`)) && existsSync(p(`${name}/epoch-0001`)), 'the first run holds its lock and has written epoch 1');
  return { child, exited, stderr: () => stderr, release: () => child.stdin.end() };
}

test('a second train on a weights_dir in use is refused (fresh or --resume); the first run ends whole', async () => {
  // The first run is held inside a checkpoint write while the second ones start.
  const first = await startHeldTrain('shared', 6);
  for (const extra of [[], ['--resume']]) {
    const second = cli(dir, ['train', '--config', p('shared.yaml'), ...extra]);
    assert.equal(second.status, 2, second.stderr);
    clearError(second.stderr, new RegExp(`shared/train\\.lock: held by process ${first.child.pid} on .*another train is writing this weights_dir`));
  }
  first.release();
  assert.equal(await first.exited, 0, first.stderr());
  const record = JSON.parse(readFileSync(p('shared/val_record.json'), 'utf8')) as { epoch: number }[];
  assert.deepEqual(
    record.map((r) => r.epoch),
    [1, 2, 3, 4, 5, 6],
    "the val_record is the first run's, whole",
  );
  const iterations = readFileSync(p('shared/train_log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { iteration: number }).iteration);
  assert.deepEqual(
    iterations,
    Array.from({ length: 30 }, (_, i) => i + 1),
    "the train log is the first run's, never truncated",
  );
  assert.ok(!existsSync(p('shared/train.lock')), 'the lock is released');
});

test('a trainer killed with SIGKILL leaves a lock the next run breaks at once; --resume continues', async () => {
  const first = await startHeldTrain('killed', 40);
  first.child.kill('SIGKILL');
  await first.exited;
  assert.ok(existsSync(p('killed/train.lock')), "the dead run's lock is still there");
  const resumed = cli(dir, ['train', '--config', p('killed.yaml'), '--resume', '--set', 'n_epochs=2']);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.ok(!existsSync(p('killed/train.lock')));
});

test('concurrent exports to one --out and imports to one --out --force: each result is one whole file or checkpoint', async () => {
  const run = (args: string[]) => new Promise<number | null>((resolve) => spawn(process.execPath, [CLI, ...args], { stdio: 'ignore' }).once('exit', resolve));
  assert.equal(await run(['export', '--weights', p('ckpt'), '--out', p('alone.onnx')]), 0);
  const exports = await Promise.all([1, 2, 3, 4].map(() => run(['export', '--weights', p('ckpt'), '--out', p('same.onnx')])));
  assert.deepEqual(exports, [0, 0, 0, 0]);
  assert.ok(readFileSync(p('same.onnx')).equals(readFileSync(p('alone.onnx'))), 'the model is whole: the bytes of an export run alone');
  decodeModel(readFileSync(p('same.onnx')));
  const imports = await Promise.all([1, 2, 3, 4].map(() => run(['import', '--from', 'onnx', p('same.onnx'), '--out', p('same-ckpt'), '--force'])));
  assert.deepEqual(imports, [0, 0, 0, 0]);
  loadCheckpoint(p('same-ckpt'));
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.includes('same') && n.startsWith('.')),
    [],
    'no temp files or dirs left',
  );
});
