/**
 * `alexnet-stream train` and `report` as a user runs them (spawned): config errors with exit 2,
 * `kill -9` in the middle of a checkpoint write and `--resume` afterwards (bit-identical to an
 * uninterrupted run), `read | augment | train --stdin`, and the HTML/PNG report.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { listCheckpoints, loadCheckpoint } from '@alexnet-stream/model-alexnet';
import { readConfigFile, readValRecord } from '@alexnet-stream/trainer-multigpu';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';

const CLI = resolve(__dirname, '../../apps/cli/bin/alexnet-stream.js');
/** runTraining in a child process, SIGKILLed at a given step of a given checkpoint write. */
const TRAIN_CHILD = join(__dirname, 'hostile', 'train-child.js');
const root = mkdtempSync(join(tmpdir(), 'train-cli-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));
const dataDir = join(root, 'data');
const specFile = join(root, 'tiny.json');

let ready: Promise<void> | undefined;
function data(): Promise<void> {
  ready ??= (async () => {
    await writeFixtureDataDir({ dir: dataDir, classes: 4, trainPerClass: 10, valPerClass: 3, size: 40, batchSize: 8 });
    writeSpecFile(specFile, tinySpec(4, 35));
  })();
  return ready;
}

function writeConfig(name: string, weightsDir: string, extra = ''): string {
  const path = join(root, `${name}.yaml`);
  writeFileSync(
    path,
    [
      `data_dir: ${dataDir}`,
      `weights_dir: ${join(root, weightsDir)}`,
      `spec_file: ${specFile}`,
      'batch_size: 8',
      'n_epochs: 3',
      'learning_rate: 0.01',
      'print_freq: 2',
      'seed: 3',
      'intra_op_threads: 1',
      extra,
    ].join('\n'),
  );
  return path;
}

function cli(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
}

test('config errors exit 2 with one clear line: unknown key with a suggestion, wrong type naming the key', async () => {
  const bad = join(root, 'bad.yaml');
  writeFileSync(bad, 'batch_sise: 8\n');
  let r = cli(['train', '--config', bad]);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /alexnet-stream train: .*bad\.yaml: unknown key "batch_sise"; did you mean "batch_size"\?/);
  assert.doesNotMatch(r.stderr, /at .*\.js:\d+/, 'no stack trace');
  writeFileSync(bad, 'print_freq: often\n');
  r = cli(['train', '--config', bad]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /expected an integer >= 1 for print_freq but received "often"/);
  r = cli(['train', '--set', 'lerning_rate=0.1']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown config key "lerning_rate"; did you mean "learning_rate"\?/);
  r = cli(['train', '--config', join(root, 'missing.yaml')]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /missing\.yaml: cannot read the config file \(no such file\)/);
});

test('a data dir that does not match the config is refused before training (exit 2)', async () => {
  await data();
  const r = cli(['train', '--config', writeConfig('mismatch', 'w-mismatch', 'num_classes: 10')]);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /the "train" set (names 4 classes|has labels 0\.\.3 \(4 classes\)) but the config \(num_classes 10\) has 10/);
  assert.equal(existsSync(join(root, 'w-mismatch')), false);
});

test('kill -9 while a checkpoint is being written leaves the previous one usable; --resume then matches an uninterrupted run bit for bit', async () => {
  await data();
  const whole = cli(['train', '--config', writeConfig('whole', 'w-whole')]);
  assert.equal(whole.status, 0, whole.stderr);
  const summary = JSON.parse(whole.stdout.trim()) as { stopReason: string; iteration: number; checkpoint: string };
  assert.equal(summary.stopReason, 'completed');
  assert.equal(summary.iteration, 15);
  assert.match(whole.stderr, /iteration 2 \(epoch 1\): loss \d\.\d{4}, train error [\d.]+%, lr 0\.01, [\d.]+ img\/s, waited for data [\d.]+%/);
  assert.match(whole.stderr, /epoch 1 validation: top-1 error [\d.]+%, top-5 error [\d.]+%, loss [\d.]+ \(12 images\)/);

  const config = writeConfig('killed', 'w-killed');
  const weightsDir = join(root, 'w-killed');
  // The same run, SIGKILLed inside the write of epoch-0002 (before its first file: its temp dir
  // exists, no file is whole), at a step the checkpoint writer reports, not after a sleep.
  const child = spawnSync(process.execPath, [TRAIN_CHILD, JSON.stringify({ config: await readConfigFile(config), killAt: { write: 2, step: 'write-file' } })], {
    encoding: 'utf8',
  });
  assert.equal(child.signal, 'SIGKILL', child.stderr);
  assert.deepEqual(
    listCheckpoints(weightsDir).map((c) => c.epoch),
    [1],
    'epoch 2 was not written; epoch 1 is intact',
  );
  const survivor = loadCheckpoint(join(weightsDir, 'epoch-0001'));
  assert.equal(survivor.state.iteration, 5);
  assert.equal((await readValRecord(weightsDir)).length, 2, 'val_record.json already has epoch 2 (written before the checkpoint)');

  const resumed = cli(['train', '--config', config, '--resume']);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stderr, /resuming from .*epoch-0001: epoch 1, iteration 5/);
  const a = loadCheckpoint(join(root, 'w-whole', 'epoch-0003'));
  const b = loadCheckpoint(join(weightsDir, 'epoch-0003'));
  for (const name of Object.keys(a.weights)) {
    assert.ok(Buffer.from(a.weights[name].buffer).equals(Buffer.from(b.weights[name].buffer)), `${name} differs after kill + resume`);
  }
  assert.deepEqual(await readValRecord(weightsDir), await readValRecord(join(root, 'w-whole')));
  // No temp directory of the killed writer is taken for a checkpoint, and none is left by the resumed one.
  assert.deepEqual(
    readdirSync(weightsDir)
      .filter((n) => n.startsWith('epoch-'))
      .sort(),
    ['epoch-0001', 'epoch-0002', 'epoch-0003'],
  );
});

test('--max-iters writes the exact state; --resume finishes; report renders HTML with inline SVG and a PNG', async () => {
  await data();
  const config = writeConfig('maxiters', 'w-max');
  const stop = cli(['train', '--config', config, '--max-iters', '7']);
  assert.equal(stop.status, 0, stop.stderr);
  assert.equal(JSON.parse(stop.stdout).stopReason, 'max-iters');
  assert.match(stop.stderr, /checkpoint .*epoch-0002 \(--max-iters reached\)/);
  const mid = loadCheckpoint(join(root, 'w-max', 'epoch-0002'));
  assert.deepEqual([mid.state.epochsCompleted, mid.state.iterationInEpoch, mid.state.iteration], [1, 2, 7]);
  const done = cli(['train', '--config', config, '--resume', '--epochs', '2']);
  assert.equal(done.status, 0, done.stderr);
  assert.equal(JSON.parse(done.stdout).iteration, 10);

  const out = join(root, 'report.html');
  const r = cli(['report', '--weights-dir', join(root, 'w-max'), '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  const html = readFileSync(out, 'utf8');
  assert.match(html, /<svg xmlns/);
  assert.match(html, /Best epoch: <strong>[12]<\/strong>/);
  assert.match(html, /spec_file/, 'the config is in the page');
  const png = readFileSync(join(root, 'report.png'));
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG');
  const empty = cli(['report', '--weights-dir', join(root, 'nothing-here'), '--out', join(root, 'x.html')]);
  assert.equal(empty.status, 2);
  assert.match(empty.stderr, /nothing to report \(train first\)/);
});

test('read | augment | train --stdin trains on float32 batch records from a pipe', async () => {
  await data();
  const config = writeConfig('stdin', 'w-stdin');
  const sh = `"${process.execPath}" "${CLI}" read "${dataDir}" --prefix train | "${process.execPath}" "${CLI}" augment --mean "${join(dataDir, 'mean.npy')}" --crop 35 --mirror --seed 1 | "${process.execPath}" "${CLI}" train --stdin --config "${config}"`;
  const r = spawnSync('sh', ['-c', sh], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout.trim()) as { stopReason: string; iteration: number; lastValidation: { images: number } };
  assert.equal(summary.stopReason, 'end-of-input');
  assert.equal(summary.iteration, 5, '40 images in stored batches of 8');
  assert.equal(summary.lastValidation.images, 12, "validated on the data dir's val set");
  const wrongCrop = `"${process.execPath}" "${CLI}" read "${dataDir}" | "${process.execPath}" "${CLI}" augment --mean "${join(dataDir, 'mean.npy')}" --crop 31 | "${process.execPath}" "${CLI}" train --stdin --config "${writeConfig('stdin2', 'w-stdin2')}"`;
  const bad = spawnSync('sh', ['-c', wrongCrop], { encoding: 'utf8' });
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /stdin record 2: 3x31x31 images but the network takes 3x35x35 \(augment --crop 35\)/);
});
