/**
 * Hostile cases for training and resume (issue 11, items 2, 9, 15, 22): a trainer killed in the
 * middle of replacing a checkpoint, then resumed; the NaN advice followed literally; learning
 * rates given on resume (--lr, --set, an edited config) and their notices; a checkpoint without
 * its momentum; a model whose classes are not the data's, refused alike by train and validate.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { NamedTensors } from '@alexnet-stream/core';
import { listCheckpoints, loadCheckpoint, saveCheckpoint, initParameters } from '@alexnet-stream/model-alexnet';
import { resolveConfig, runTraining, type TrainConfig } from '@alexnet-stream/trainer-multigpu';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';

const CLI = resolve(__dirname, '../../../apps/cli/bin/alexnet-stream.js');
const CHILD = join(__dirname, 'train-child.js');
const root = mkdtempSync(join(tmpdir(), 'hostile-train-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));
const dataDir = join(root, 'data');
const specFile = join(root, 'tiny.json');

let ready: Promise<void> | undefined;
function data(): Promise<void> {
  ready ??= (async () => {
    // 40 training images in stored batches of 8: 5 iterations per epoch at batch_size 8.
    await writeFixtureDataDir({ dir: dataDir, classes: 4, trainPerClass: 10, valPerClass: 3, size: 40, batchSize: 8 });
    writeSpecFile(specFile, tinySpec(4, 35));
  })();
  return ready;
}

function configValues(weightsDir: string, over: Partial<TrainConfig> = {}): Partial<TrainConfig> {
  // One intra-op thread: the same float operations in every run, so runs compare bit for bit.
  return {
    data_dir: dataDir,
    weights_dir: join(root, weightsDir),
    spec_file: specFile,
    batch_size: 8,
    n_epochs: 3,
    learning_rate: 0.01,
    print_freq: 2,
    seed: 3,
    intra_op_threads: 1,
    ...over,
  };
}

function sameWeights(a: NamedTensors, b: NamedTensors): boolean {
  return Object.keys(b).every((n) =>
    Buffer.from(a[n].buffer, a[n].byteOffset, a[n].byteLength).equals(Buffer.from(b[n].buffer, b[n].byteOffset, b[n].byteLength)),
  );
}

test('a trainer killed while it replaces a checkpoint: --resume continues from the newest whole one and ends where an uninterrupted run ends', async () => {
  await data();
  const reference = await runTraining(resolveConfig(configValues('ref')));
  assert.equal(reference.state.iteration, 15);
  const final = loadCheckpoint(join(root, 'ref', 'epoch-0003'));
  // Kill points: before the old epoch-0002 is moved aside (nothing committed yet), between the
  // two renames (no epoch-0002 in place: the case that lost checkpoints), while the old one is deleted.
  for (const [step, newest] of [
    ['move-old-aside', 7],
    ['rename-into-place', 10],
    ['unlink-old-file', 10],
  ] as const) {
    const name = `killed-${step}`;
    const values = configValues(name);
    // --max-iters 7 writes epoch-0002 in the middle of epoch 2; the resumed run replaces it at the end of epoch 2.
    await runTraining(resolveConfig(values), { maxIters: 7 });
    const child = spawnSync(process.execPath, [CHILD, JSON.stringify({ config: values, resume: true, killAt: { write: 1, step } })], { encoding: 'utf8' });
    assert.equal(child.signal, 'SIGKILL', `${step}: ${child.stderr}`);
    const notices: string[] = [];
    const resumed = await runTraining(resolveConfig(values), { resume: true, onNotice: (m) => notices.push(m) });
    assert.match(
      notices.join('\n'),
      new RegExp(`resuming from .*epoch-0002: epoch \\d( \\+ \\d iterations)?, iteration ${newest}`),
      `${step}: resumed from the newest whole checkpoint`,
    );
    assert.equal(resumed.state.iteration, 15);
    const ckpt = loadCheckpoint(join(root, name, 'epoch-0003'));
    assert.ok(sameWeights(ckpt.weights, final.weights), `${step}: weights equal an uninterrupted run's`);
    assert.ok(sameWeights(ckpt.momentum!, final.momentum!), `${step}: momentum equals an uninterrupted run's`);
    assert.deepEqual(
      readdirSync(join(root, name)).filter((n) => n.startsWith('.')),
      [],
      `${step}: nothing left behind`,
    );
  }
});

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ALEXNET_STREAM_PROGRESS: '0' } });
}

function writeConfig(name: string, weightsDir: string, over: Partial<TrainConfig> = {}): string {
  const path = join(root, `${name}.yaml`);
  writeFileSync(
    path,
    `${Object.entries(configValues(weightsDir, over))
      .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
      .join('\n')}\n`,
  );
  return path;
}

const summaryLr = (stdout: string): number => (JSON.parse(stdout.trim().split('\n').pop()!) as { lr: number }).lr;

test('after a NaN loss the advice works: --resume with a lower --lr continues from the checkpoint at that lr; --set and an edited config win too', async () => {
  await data();
  const config = writeConfig('nan', 'w-nan');
  const first = cli(['train', '--config', config, '--epochs', '1']);
  assert.equal(first.status, 0, first.stderr);
  // Resume with an absurd lr: it wins (with a notice) and diverges; the message says what works.
  const diverged = cli(['train', '--config', config, '--resume', '--lr', '100000']);
  assert.equal(diverged.status, 1, diverged.stderr);
  assert.match(diverged.stderr, /--resume: learning rate 100000 \(given for this run\) replaces the checkpoint's 0\.01 from iteration 6 on/);
  assert.match(
    diverged.stderr,
    /the loss is (NaN|Infinity|-Infinity); training stopped[^.]*\. .*epoch-0001 is the last checkpoint, intact: resume from it with a lower learning rate, e\.g\. `train … --resume --lr 10000` \(or --set learning_rate=10000\): a learning rate given with --resume replaces the checkpoint's \(100000\)/,
  );
  assert.deepEqual(
    listCheckpoints(join(root, 'w-nan')).map((c) => c.epoch),
    [1],
  );
  // Do as the message says, with a sane lr.
  const fixed = cli(['train', '--config', config, '--resume', '--lr', '0.001', '--epochs', '2']);
  assert.equal(fixed.status, 0, fixed.stderr);
  assert.match(fixed.stderr, /learning rate 0\.001 \(given for this run\) replaces the checkpoint's 0\.01 from iteration 6 on/);
  assert.match(fixed.stderr, /iteration 6 \(epoch 2\): loss [\d.]+, train error [\d.]+%, lr 0\.001,/);
  assert.equal(summaryLr(fixed.stdout), Math.fround(0.001));
  // A plain --resume keeps the checkpoint's lr (0.001), not the config's initial 0.01: no notice.
  const plain = cli(['train', '--config', config, '--resume', '--epochs', '3']);
  assert.equal(plain.status, 0, plain.stderr);
  assert.doesNotMatch(plain.stderr, /replaces the checkpoint's/);
  assert.equal(summaryLr(plain.stdout), Math.fround(0.001));
  // --set learning_rate wins like --lr.
  const set = cli(['train', '--config', config, '--resume', '--epochs', '4', '--set', 'learning_rate=0.002']);
  assert.equal(set.status, 0, set.stderr);
  assert.match(set.stderr, /learning rate 0\.002 \(given for this run\) replaces the checkpoint's 0\.001/);
  assert.equal(summaryLr(set.stdout), Math.fround(0.002));
  // An edited config learning_rate (the run was configured with 0.01) wins, naming both.
  const edited = cli(['train', '--config', writeConfig('nan-edited', 'w-nan', { learning_rate: 0.003 }), '--resume', '--epochs', '5']);
  assert.equal(edited.status, 0, edited.stderr);
  assert.match(edited.stderr, /learning rate 0\.003 \(the config's learning_rate; the run was configured with 0\.01\) replaces the checkpoint's 0\.002/);
  assert.equal(summaryLr(edited.stdout), Math.fround(0.003));
  // A divergence before any checkpoint: the advice is to start again, not to resume.
  const early = cli(['train', '--config', writeConfig('nan-early', 'w-nan-early'), '--lr', '100000']);
  assert.equal(early.status, 1);
  assert.match(early.stderr, /no checkpoint was written yet: start again with a lower learning rate than 100000, e\.g\. --lr 10000/);
});

test('--resume from a checkpoint without momentum.safetensors is refused (exit 2) unless the run has no momentum', async () => {
  await data();
  const config = writeConfig('nomom', 'w-nomom', { n_epochs: 1 });
  await runTraining(resolveConfig(configValues('w-nomom', { n_epochs: 1 })));
  unlinkSync(join(root, 'w-nomom', 'epoch-0001', 'momentum.safetensors'));
  const r = cli(['train', '--config', config, '--resume', '--epochs', '2']);
  assert.equal(r.status, 2, r.stderr);
  assert.match(
    r.stderr,
    /--resume: .*epoch-0001 has no momentum\.safetensors .*would restart the momentum at zero and change the run\. Restore the file, resume with use_momentum: false, or start a new run from these weights with --init /,
  );
  assert.deepEqual(
    listCheckpoints(join(root, 'w-nomom')).map((c) => c.epoch),
    [1],
    'nothing trained',
  );
  const plainSgd = cli(['train', '--config', config, '--resume', '--epochs', '2', '--set', 'use_momentum=false']);
  assert.equal(plainSgd.status, 0, plainSgd.stderr);
});

test("a model whose classes are not the data's is refused by train and validate alike (one rule)", async () => {
  await data();
  const three = join(root, 'data3');
  await writeFixtureDataDir({ dir: three, classes: 3, trainPerClass: 4, valPerClass: 2, size: 40, batchSize: 4 });
  const six = tinySpec(6, 35);
  const ckpt = saveCheckpoint(join(root, 'six', 'epoch-0001'), { spec: six, weights: initParameters(six, 1), state: {} });
  const validate = cli(['validate', '--weights', ckpt, '--data', three]);
  assert.equal(validate.status, 2, validate.stderr);
  assert.match(validate.stderr, /data3\/index\.json: the "val" set names 3 classes but the model \(.*6 classes.*\) has 6/);
  assert.equal(validate.stdout, '', 'no result printed');
  const train = cli([
    'train',
    '--config',
    writeConfig('six', 'w-six', { data_dir: three, num_classes: 6, spec_file: writeSpecFile(join(root, 'six.json'), six) }),
  ]);
  assert.equal(train.status, 2, train.stderr);
  assert.match(train.stderr, /data3\/index\.json: the "train" set names 3 classes but the config \(num_classes 6\) has 6/);
  // The matching model is accepted by validate.
  const ok = cli([
    'validate',
    '--weights',
    saveCheckpoint(join(root, 'three', 'epoch-0001'), { spec: tinySpec(3, 35), weights: initParameters(tinySpec(3, 35), 1), state: {} }),
    '--data',
    three,
  ]);
  assert.equal(ok.status, 0, ok.stderr);
});

test('--resume from a checkpoint whose state.json lies about its position is refused naming the file and the field', async () => {
  await data();
  const config = writeConfig('lying-state', 'lying-state', { n_epochs: 2 });
  const values = configValues('lying-state', { n_epochs: 2 });
  await runTraining(resolveConfig(values), { maxIters: 7 }); // epoch-0001, and epoch-0002 inside epoch 2 (1 + 2 iterations)
  const { readFileSync } = await import('node:fs');
  const statePath = join(root, 'lying-state', 'epoch-0002', 'state.json');
  const original = readFileSync(statePath, 'utf8');
  const cases: [string, (s: Record<string, unknown>) => void, RegExp][] = [
    // ended "done" at once with exit 0 before
    ['epochs', (s) => (s.epochsCompleted = 1e12), /state\.json: the state is at epoch 1000000000000 \+ 2 iterations, but the checkpoint is epoch-0002/],
    [
      'past the epoch',
      (s) => Object.assign(s, { iterationInEpoch: 999, iteration: 1004 }),
      /state\.json: it stopped after iteration 999 of epoch 2, but an epoch of this data has 5 iterations/,
    ],
    ['future lr change', (s) => (s.lastLrChangeEpoch = 99), /state\.json: "lastLrChangeEpoch" 99 is after the 1 epochs completed/],
    ['iteration', (s) => (s.iteration = 1), /state\.json: "iteration" 1 is less than the 1 epochs and 2 iterations it completed/],
    // silently dropped before
    ['val_record', (s) => (s.val_record = 5), /state\.json: expected a list of validation results for val_record but received 5/],
  ];
  for (const [i, [what, change, pattern]] of cases.entries()) {
    const state = JSON.parse(original) as Record<string, unknown>;
    change(state);
    writeFileSync(statePath, JSON.stringify(state));
    // Every case through the library in-process (an input error: exit code 2 in the CLI) ...
    await assert.rejects(
      runTraining(resolveConfig(values, { n_epochs: 3 }), { resume: 2 }),
      (err: Error & { exitCode?: number }) => err.exitCode === 2 && pattern.test(err.message),
      what,
    );
    // ... and two of them through the CLI, spawned (a spawned train costs ~0.6 CPU-s).
    if (i % 3 === 0) {
      const r = cli(['train', '--config', config, '--resume', '2', '--set', 'n_epochs=3']);
      assert.equal(r.status, 2, `${what}: ${r.stderr}`);
      assert.match(r.stderr, pattern, what);
      assert.doesNotMatch(r.stderr, /\n\s+at .*:\d+:\d+/, 'no stack trace');
    }
  }
  writeFileSync(statePath, original);
  const resumed = await runTraining(resolveConfig(values), { resume: 2 });
  assert.equal(resumed.state.iteration, 10, 'the repaired checkpoint resumes and ends epoch 2');
});
