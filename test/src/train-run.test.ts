/**
 * The training loop end to end in-process (runTraining), on the onnxruntime engine and a tiny
 * spec (tiny: ~10k parameters, ms per step), over shard dirs written by stream-io's writers:
 * exact resume after --max-iters, the max-iters checkpoint, a NaN stop that keeps the last
 * checkpoint, refusal of data that does not match the config, --init fine-tuning, the tfjs engine.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeNpy, InputError } from '@alexnet-stream/core';
import { initParameters, listCheckpoints, loadCheckpoint } from '@alexnet-stream/model-alexnet';
import {
  type BatchGroup,
  type BatchMetrics,
  createEngine,
  type EngineBatch,
  readTrainLog,
  readValRecord,
  resolveConfig,
  runTraining,
  type TrainConfig,
  TrainingDivergedError,
  type TrainingEngine,
  type TrainLogEntry,
} from '@alexnet-stream/trainer-multigpu';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';

const root = mkdtempSync(join(tmpdir(), 'train-run-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

let dataReady: Promise<void> | undefined;
const dataDir = join(root, 'data');
const specFile = join(root, 'tiny.json');
function data(): Promise<void> {
  dataReady ??= (async () => {
    // 40 training images in stored batches of 8; training batches of 6 → 6 iterations per epoch.
    await writeFixtureDataDir({ dir: dataDir, classes: 4, trainPerClass: 10, valPerClass: 3, size: 40, batchSize: 8 });
    writeSpecFile(specFile, tinySpec(4, 35));
  })();
  return dataReady;
}

function config(weightsDir: string, over: Partial<TrainConfig> = {}): TrainConfig {
  return resolveConfig({
    data_dir: dataDir,
    weights_dir: join(root, weightsDir),
    spec_file: specFile,
    batch_size: 6,
    n_epochs: 3,
    learning_rate: 0.01,
    lr_step: [2],
    print_freq: 2,
    seed: 5,
    // One thread: the same reduction order in every run, so results compare bit for bit.
    intra_op_threads: 1,
    ...over,
  });
}

function assertSameTensors(a: Record<string, Float32Array>, b: Record<string, Float32Array>, what: string): void {
  assert.deepEqual(Object.keys(a), Object.keys(b));
  for (const name of Object.keys(a)) {
    assert.ok(
      Buffer.from(a[name].buffer, a[name].byteOffset, a[name].byteLength).equals(Buffer.from(b[name].buffer, b[name].byteOffset, b[name].byteLength)),
      `${what}: ${name} differs`,
    );
  }
}

test('--max-iters mid-epoch then --resume gives bit-identical weights, momentum, lr and val_record to an uninterrupted run', async () => {
  await data();
  const whole = await runTraining(config('whole'));
  assert.equal(whole.stopReason, 'completed');
  assert.equal(whole.state.iteration, 18);
  assert.equal(whole.state.valRecord.length, 3);
  assert.equal(whole.state.lr, Math.fround(Math.fround(0.01) / 10), 'lr divided after epoch 2 (lr_step [2])');

  const part = await runTraining(config('parts'), { maxIters: 8 });
  assert.equal(part.stopReason, 'max-iters');
  assert.equal(part.state.iteration, 8);
  // The max-iters checkpoint: inside epoch 2, 2 iterations in.
  const mid = loadCheckpoint(join(root, 'parts', 'epoch-0002'));
  assert.equal(mid.state.epochsCompleted, 1);
  assert.equal(mid.state.iterationInEpoch, 2);
  assert.equal(mid.state.iteration, 8);
  assert.deepEqual((mid.state.rng as { loader: unknown }).loader, { seed: 5, epoch: 2, position: 2, scheme: 'deriveSeed(seed, epoch, k)' });
  assert.ok((mid.state.rng as { dropout: unknown }).dropout, 'dropout RNG state saved');
  assert.equal((mid.state.config as TrainConfig).batch_size, 6);

  const rest = await runTraining(config('parts'), { resume: true });
  assert.equal(rest.stopReason, 'completed');
  assert.equal(rest.iterationsRun, 10);
  const a = loadCheckpoint(join(root, 'whole', 'epoch-0003'));
  const b = loadCheckpoint(join(root, 'parts', 'epoch-0003'));
  assertSameTensors(a.weights, b.weights, 'weights');
  assertSameTensors(a.momentum!, b.momentum!, 'momentum');
  assert.equal(b.state.lr, a.state.lr);
  assert.deepEqual(await readValRecord(join(root, 'parts')), await readValRecord(join(root, 'whole')));
  // train_log.jsonl: one line per print_freq iterations, none lost or doubled by the resume.
  const logA = await readTrainLog(join(root, 'whole'));
  const logB = await readTrainLog(join(root, 'parts'));
  assert.deepEqual(
    logA.map((e) => e.iteration),
    [2, 4, 6, 8, 10, 12, 14, 16, 18],
  );
  assert.deepEqual(
    logB.map((e) => e.iteration),
    logA.map((e) => e.iteration),
  );
  // val_record.npy: [epochs, 3] float64 (top-1, top-5, loss), the seed's layout.
  const npy = readFileSync(join(root, 'whole', 'val_record.npy'));
  assert.match(npy.subarray(10, 80).toString('latin1'), /'descr': '<f8'.*'shape': \(3, 3\)/);
  // The run learned something: this data is easy (a bright square whose position is the class).
  assert.ok(whole.state.valRecord[2].loss < whole.state.valRecord[0].loss + 0.5, 'loss does not blow up');
});

test('steps_per_run: groups of steps give bit-identical checkpoints, logs and validation to one step per run, across --max-iters and --resume', async () => {
  await data();
  // Epochs of 6 iterations, print_freq 5, groups of 4: groups are cut at progress lines (5, 10),
  // epoch ends (6, 12) and --max-iters (7), so every kind of boundary falls inside a would-be group.
  const over = { n_epochs: 2, print_freq: 5 };
  const single = await runTraining(config('spr-1', { ...over, steps_per_run: 1 }));
  const runs: number[] = []; // steps per engine call
  const recording = async (...args: Parameters<typeof createEngine>): Promise<TrainingEngine> => {
    const engine = await createEngine(...args);
    return Object.assign(Object.create(engine) as TrainingEngine, {
      step: (batch: EngineBatch, lr: number) => {
        runs.push(1);
        return engine.step(batch, lr);
      },
      stepGroup: (group: BatchGroup, lr: number) => {
        runs.push(group.count);
        return engine.stepGroup!(group, lr);
      },
    });
  };
  const grouped = await runTraining(config('spr-4', { ...over, steps_per_run: 4 }), { createEngine: recording });
  assert.deepEqual(runs, [4, 1, 1, 4, 2]); // cut at iterations 5 (log), 6 (epoch), 10 (log), 12 (epoch)
  const part = await runTraining(config('spr-4-parts', { ...over, steps_per_run: 4 }), { maxIters: 7 });
  assert.equal(part.state.iteration, 7);
  const rest = await runTraining(config('spr-4-parts', { ...over, steps_per_run: 4 }), { resume: true });
  assert.equal(single.state.iteration, 12);
  assert.equal(grouped.state.iteration, 12);
  assert.equal(rest.state.iteration, 12);
  const a = loadCheckpoint(join(root, 'spr-1', 'epoch-0002'));
  for (const dir of ['spr-4', 'spr-4-parts']) {
    const b = loadCheckpoint(join(root, dir, 'epoch-0002'));
    assertSameTensors(a.weights, b.weights, `${dir} weights`);
    assertSameTensors(a.momentum!, b.momentum!, `${dir} momentum`);
    assert.deepEqual(b.state.rng, a.state.rng, `${dir}: the dropout and loader streams end in the same place`);
    assert.deepEqual(await readValRecord(join(root, dir)), await readValRecord(join(root, 'spr-1')));
    // A resumed run's first line only spans the iterations since the resume: compare the lines' iterations there.
    const fields = (e: TrainLogEntry) => (dir === 'spr-4' ? [e.iteration, e.loss, e.images] : [e.iteration]);
    assert.deepEqual((await readTrainLog(join(root, dir))).map(fields), (await readTrainLog(join(root, 'spr-1'))).map(fields));
  }
});

test('resuming a specific epoch re-writes val_record from that checkpoint, and refuses a fresh run over existing checkpoints', async () => {
  await data();
  const dir = join(root, 'epochs');
  await runTraining(config('epochs', { n_epochs: 2 }));
  assert.deepEqual(
    listCheckpoints(dir).map((c) => c.epoch),
    [1, 2],
  );
  await assert.rejects(
    () => runTraining(config('epochs', { n_epochs: 2 })),
    /already holds checkpoints \(epoch 1, epoch 2\): resume to continue that run, or use another weights_dir for a new one/,
  );
  const r = await runTraining(config('epochs', { n_epochs: 2 }), { resume: 1 });
  assert.equal(r.iterationsRun, 6);
  assert.equal((await readValRecord(dir)).length, 2);
  await assert.rejects(() => runTraining(config('epochs'), { resume: 7 }), /no checkpoint of epoch 7 in .* \(it has epochs 1, 2\)/);
});

test('a NaN loss stops training naming the iteration; the last checkpoint stays intact', async () => {
  await data();
  const dir = join(root, 'nan');
  // Fault injection around the real engine: step 9 reports a NaN loss (whether it ran alone or
  // in a group of steps).
  const factory = async (...args: Parameters<typeof createEngine>): Promise<TrainingEngine> => {
    const engine = await createEngine(...args);
    let steps = 0;
    const inject = (m: BatchMetrics): BatchMetrics => (++steps === 9 ? { ...m, loss: NaN } : m);
    return Object.assign(Object.create(engine) as TrainingEngine, {
      step: async (batch: EngineBatch, lr: number) => inject(await engine.step(batch, lr)),
      stepGroup: async (group: BatchGroup, lr: number) => (await engine.stepGroup!(group, lr)).map(inject),
    });
  };
  await assert.rejects(
    () => runTraining(config('nan'), { createEngine: factory }),
    (err: unknown) => {
      assert.ok(err instanceof TrainingDivergedError);
      assert.equal(err.exitCode, 1);
      assert.match(err.message, /iteration 9 \(epoch 2, batch 3\): the loss is NaN; training stopped\./);
      assert.match(
        err.message,
        /epoch-0001 is the last checkpoint, intact: resume from it with a lower learning rate, e\.g\. \{ resume: true, learningRate: 0\.001 \}/,
      );
      // The CLI names the same advice by its flags (hostile/training.test.ts runs it).
      const flags: Record<string, string> = { resume: '--resume', learningRate: '--lr', learning_rate: '--set learning_rate' };
      assert.match(err.renamed((p) => flags[p] ?? p).message, /e\.g\. `train … --resume --lr 0\.001` \(or --set learning_rate=0\.001\)/);
      return true;
    },
  );
  assert.deepEqual(
    listCheckpoints(dir).map((c) => c.epoch),
    [1],
  );
  const ckpt = loadCheckpoint(join(dir, 'epoch-0001'));
  assert.equal(ckpt.state.iteration, 6);
  // And a real divergence (an absurd learning rate) is caught the same way, from the engine's own numbers.
  await assert.rejects(() => runTraining(config('nan-real', { learning_rate: 1e12, n_epochs: 1 })), /the loss is (NaN|Infinity|-Infinity); training stopped/);
});

test('data that does not match the config is refused before training starts (InputError, exit 2)', async () => {
  await data();
  const refuse = async (over: Partial<TrainConfig>, pattern: RegExp) => {
    const weightsDir = `refused-${Math.random().toString(36).slice(2)}`;
    await assert.rejects(
      () => runTraining(config(weightsDir, over)),
      (err: unknown) => {
        assert.ok(err instanceof InputError, String(err));
        assert.equal(err.exitCode, 2);
        assert.match(err.message, pattern);
        return true;
      },
    );
    assert.equal(existsSync(join(root, weightsDir)), false, 'nothing written');
  };
  await refuse({ num_classes: 3 }, /index\.json: the "train" set names 4 classes but the config \(num_classes 3\) has 3/);
  await refuse({ num_classes: 5 }, /index\.json: the "train" set names 4 classes but the config \(num_classes 5\) has 5/);
  await refuse({ image_size: 256 }, /the data holds 40x40 images but the config says image_size 256/);
  const spec6 = writeSpecFile(join(root, 'six.json'), tinySpec(6, 35));
  await refuse({ spec_file: spec6 }, /the model has 6 classes but the data has 4/);
  await refuse({ spec_file: null, preset: 'theano-alexnet' }, /40x40 images are smaller than the network input 227; set input_size <= 40/);
  const badMean = join(root, 'mean-64.npy');
  writeFileSync(badMean, encodeNpy(new Float32Array(3 * 64 * 64), [3, 64, 64]));
  await refuse({ mean_file: badMean }, /the mean image is 3x64x64 but the data's images are 3x40x40/);
  await refuse({ data_dir: join(root, 'nope') }, /no such data directory \(data_dir\); create one with `alexnet-stream prepare`/);
});

test('--init: pretrained weights for every layer but fc8, which is re-initialised for another class count with a notice', async () => {
  await data();
  const pretrained = join(root, 'whole', 'epoch-0003');
  if (!existsSync(pretrained)) await runTraining(config('whole'));
  const threeDir = join(root, 'data3');
  await writeFixtureDataDir({ dir: threeDir, classes: 3, trainPerClass: 6, valPerClass: 2, size: 40, batchSize: 6 });
  const spec3 = writeSpecFile(join(root, 'tiny3.json'), tinySpec(3, 35));
  const notices: string[] = [];
  const r = await runTraining(config('init', { data_dir: threeDir, spec_file: spec3 }), { init: pretrained, maxIters: 0, onNotice: (m) => notices.push(m) });
  assert.equal(r.stopReason, 'max-iters');
  assert.ok(
    notices.some((m) => /fc8 re-initialised for 3 classes \(the pretrained model has 4\)/.test(m)),
    notices.join('\n'),
  );
  const start = loadCheckpoint(join(root, 'init', 'epoch-0000'));
  const source = loadCheckpoint(pretrained);
  assertSameTensors(
    { w: start.weights['conv1.weight'], f: start.weights['fc6.weight'] },
    { w: source.weights['conv1.weight'], f: source.weights['fc6.weight'] },
    'pretrained layers',
  );
  const fresh = initParameters(tinySpec(3, 35), 5);
  assertSameTensors({ w: start.weights['fc8.weight'] }, { w: fresh['fc8.weight'] }, 'fc8 re-initialised from the seed');
  await assert.rejects(
    () => runTraining(config('init2', { data_dir: threeDir, spec_file: spec3 }), { init: pretrained, resume: true }),
    /init and resume exclude each other: resume continues a run, init starts a new one/,
  );
});

test('the tfjs engine runs the same loop (tiny spec, pure-JS backend)', async () => {
  await data();
  const r = await runTraining(config('tfjs', { engine: 'tfjs', n_epochs: 1, para_load: false }), { maxIters: 3 });
  assert.equal(r.stopReason, 'max-iters');
  const ckpt = loadCheckpoint(join(root, 'tfjs', 'epoch-0001'));
  assert.match(String(ckpt.state.engine), /^tfjs/);
  assert.equal(ckpt.state.iteration, 3);
});
