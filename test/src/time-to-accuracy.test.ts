/**
 * The time-to-accuracy keys end to end (docs/training.md "Time to accuracy"), on the tiny spec and the
 * fixture shards of train-run.test.ts:
 *
 * - the per-iteration lr (warm-up + cosine to lr_min) is what the steps get, resume in the middle
 *   of the warm-up continues bit for bit, and steps_per_run groups give the very same run;
 * - input_scale: auto is 1/std of the mean-subtracted training pixels (computed here
 *   independently), saved with the checkpoints; `validate` on such a checkpoint (CLI) reports
 *   what the trainer's own validation did, and the exported ONNX model (input: pixels − mean, the
 *   scale folded into conv1) gives the logits the training engine gives on scaled input;
 * - refusals: a resume whose config says another scale, a --stdin run with a per-iteration schedule.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { loadCheckpoint } from '@alexnet-stream/model-alexnet';
import { InferenceModel, META, readOnnx } from '@alexnet-stream/onnx-export';
import { centerOffset, cropMirrorSubtract, readMeanNpy, readShard, readShardIndex, shardSet } from '@alexnet-stream/stream-io';
import {
  type BatchGroup,
  createEngine,
  createOrtEngine,
  type EngineBatch,
  lrAtIteration,
  readTrainLog,
  readValRecord,
  resolveConfig,
  runTraining,
  type TrainConfig,
  type TrainingEngine,
} from '@alexnet-stream/trainer-multigpu';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';

const CLI = resolve(__dirname, '../../apps/cli/bin/alexnet-stream.js');
const root = mkdtempSync(join(tmpdir(), 'tta-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

const dataDir = join(root, 'data');
const specFile = join(root, 'tiny.json');
let dataReady: Promise<void> | undefined;
function data(): Promise<void> {
  // 40 training images in stored batches of 8; training batches of 6: 6 iterations per epoch.
  dataReady ??= (async () => {
    await writeFixtureDataDir({ dir: dataDir, classes: 4, trainPerClass: 10, valPerClass: 3, size: 40, batchSize: 8 });
    writeSpecFile(specFile, tinySpec(4, 35));
  })();
  return dataReady;
}

/** The small-data recipe's keys on the tiny model: auto input scale, 1 epoch of warm-up, cosine to 1e-4, label smoothing. */
function recipe(weightsDir: string, over: Partial<TrainConfig> = {}): TrainConfig {
  return resolveConfig({
    data_dir: dataDir,
    weights_dir: join(root, weightsDir),
    spec_file: specFile,
    batch_size: 6,
    n_epochs: 3,
    learning_rate: 0.05,
    lr_policy: 'cosine',
    lr_warmup_epochs: 1,
    lr_min: 1e-4,
    label_smoothing: 0.1,
    input_scale: 'auto',
    print_freq: 1,
    seed: 5,
    intra_op_threads: 1, // one reduction order in every run: results compare bit for bit
    ...over,
  });
}

function sameBytes(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function assertSameTensors(a: Record<string, Float32Array>, b: Record<string, Float32Array>, what: string): void {
  assert.deepEqual(Object.keys(a), Object.keys(b));
  for (const name of Object.keys(a)) assert.ok(sameBytes(a[name], b[name]), `${what}: ${name} differs`);
}

/** An engine factory that records the lr of every step, whether it ran alone or in a group. */
function recordingFactory(lrs: number[], counts: number[]) {
  return async (...args: Parameters<typeof createEngine>): Promise<TrainingEngine> => {
    const engine = await createEngine(...args);
    return Object.assign(Object.create(engine) as TrainingEngine, {
      step: (batch: EngineBatch, lr: number) => {
        lrs.push(lr);
        counts.push(1);
        return engine.step(batch, lr);
      },
      stepGroup: (group: BatchGroup, lr: number | readonly number[]) => {
        const each = typeof lr === 'number' ? new Array<number>(group.count).fill(lr) : [...lr];
        lrs.push(...each);
        counts.push(group.count);
        return engine.stepGroup!(group, lr);
      },
    });
  };
}

/** 1/std per channel of (pixel − mean image) over every training image, two passes in float64. */
async function independentScale(): Promise<number[]> {
  const index = await readShardIndex(dataDir);
  const set = shardSet(index, 'train', dataDir);
  const mean = await readMeanNpy(join(dataDir, 'mean.npy'));
  const [c, h, w] = set.imageShape;
  const residuals: number[][] = Array.from({ length: c }, () => []);
  for (const file of set.shards) {
    for (const batch of (await readShard(dataDir, set, file)).batches) {
      const px = batch.data as Uint8Array;
      for (let i = 0; i < batch.shape[0]; i++) {
        for (let ch = 0; ch < c; ch++) for (let j = 0; j < h * w; j++) residuals[ch].push(px[(i * c + ch) * h * w + j] - mean.data[ch * h * w + j]);
      }
    }
  }
  return residuals.map((r) => {
    const m = r.reduce((s, v) => s + v, 0) / r.length;
    return 1 / Math.sqrt(r.reduce((s, v) => s + (v - m) ** 2, 0) / r.length);
  });
}

test('recipe keys: every step gets lrAtIteration (warm-up, then cosine to lr_min); resume mid-warm-up and steps_per_run groups are bit-identical', async () => {
  await data();
  const lrs: number[] = [],
    counts: number[] = [];
  const single = await runTraining(recipe('single', { steps_per_run: 1 }), { createEngine: recordingFactory(lrs, counts) });
  assert.equal(single.state.iteration, 18);
  // The schedule by its formula (independent of lrAtIteration's code): W = 6 warm-up steps,
  // then a half cosine over the 12 others.
  const base = Math.fround(0.05);
  const expected = Array.from({ length: 18 }, (_, t) =>
    Math.fround(t < 6 ? (base * (t + 1)) / 6 : 1e-4 + ((base - 1e-4) * (1 + Math.cos((Math.PI * (t - 6)) / 12))) / 2),
  );
  assert.deepEqual(lrs, expected);
  const config = recipe('single', { steps_per_run: 1 });
  assert.deepEqual(
    lrs,
    expected.map((_, t) => lrAtIteration(config, base, t, 6)),
  );
  // The log's lr is each window's last step's (print_freq 1: every step), val_record's the epoch's last.
  assert.deepEqual(
    (await readTrainLog(join(root, 'single'))).map((e) => e.lr),
    expected,
  );
  assert.deepEqual(
    (await readValRecord(join(root, 'single'))).map((v) => v.lr),
    [expected[5], expected[11], expected[17]],
  );
  assert.equal(single.state.lr, base, 'the base lr is the state; the schedule is recomputed from it');

  // Groups of 4 steps per onnxruntime run: each step of a group at its own lr.
  const groupLrs: number[] = [],
    groupCounts: number[] = [];
  const _grouped = await runTraining(recipe('grouped', { steps_per_run: 4, print_freq: 3 }), { createEngine: recordingFactory(groupLrs, groupCounts) });
  assert.deepEqual(groupCounts, [3, 3, 3, 3, 3, 3], 'groups cut at the progress lines (print_freq 3)');
  assert.deepEqual(groupLrs, expected);
  // Stopped inside the warm-up (iteration 4), then resumed with steps_per_run 4.
  const part = await runTraining(recipe('parts', { steps_per_run: 4 }), { maxIters: 4 });
  assert.equal(part.state.iteration, 4);
  const rest = await runTraining(recipe('parts', { steps_per_run: 4 }), { resume: true });
  assert.equal(rest.iterationsRun, 14);
  const a = loadCheckpoint(join(root, 'single', 'epoch-0003'));
  for (const dir of ['grouped', 'parts']) {
    const b = loadCheckpoint(join(root, dir, 'epoch-0003'));
    assertSameTensors(a.weights, b.weights, `${dir} weights`);
    assertSameTensors(a.momentum!, b.momentum!, `${dir} momentum`);
    assert.deepEqual(b.inputScale, a.inputScale);
    assert.deepEqual(await readValRecord(join(root, dir)), await readValRecord(join(root, 'single')));
  }
});

test('input_scale auto: 1/std of the mean-subtracted training pixels, saved; validate and the exported ONNX model apply it (folded into conv1)', async () => {
  await data();
  const run = await runTraining(recipe('scaled', { n_epochs: 2 }));
  const ckptDir = join(root, 'scaled', 'epoch-0002');
  const ckpt = loadCheckpoint(ckptDir);
  const want = await independentScale();
  assert.equal(ckpt.inputScale!.length, 3);
  // Float64 sums over 40x40x40 values in another order: agreement to ~1e-12; 1e-9 relative.
  ckpt.inputScale!.forEach((s, c) => assert.ok(Math.abs(s / want[c] - 1) < 1e-9, `channel ${c}: ${s} vs ${want[c]}`));

  // validate (CLI) on the checkpoint reports the trainer's own last validation. Both run float32
  // forwards (the trainer's eval graph on scaled crops with the weights as trained, validate's
  // inference graph on unscaled crops with the scale folded into conv1), which differ by float32
  // rounding only: 1e-5 relative on the loss; the error counts are equal.
  const v = spawnSync(process.execPath, [CLI, 'validate', '--weights', ckptDir, '--data', dataDir, '--json', '--threads', '1'], { encoding: 'utf8' });
  assert.equal(v.status, 0, v.stderr);
  const validated = JSON.parse(v.stdout) as { top1Error: number; loss: number; images: number };
  const last = run.state.valRecord[1];
  assert.equal(validated.images, last.images);
  assert.equal(validated.top1Error, last.top1Error);
  assert.ok(Math.abs(validated.loss - last.loss) <= 1e-5 * Math.max(1, last.loss), `validate loss ${validated.loss} vs the trainer's ${last.loss}`);

  // export: the graph takes pixels − mean; the metadata records the folded scale.
  const onnxPath = join(root, 'scaled.onnx');
  const e = spawnSync(process.execPath, [CLI, 'export', '--weights', ckptDir, '--out', onnxPath], { encoding: 'utf8' });
  assert.equal(e.status, 0, e.stderr);
  assert.match(e.stderr, /input scale folded into the first layer/);
  const meta = Object.fromEntries((readOnnx(onnxPath).metadataProps ?? []).map((p) => [p.key, p.value]));
  assert.deepEqual(JSON.parse(meta[META.foldedInputScale]!), ckpt.inputScale);
  // Its logits on unscaled center crops equal the training engine's on scaled crops (weights as trained).
  const index = await readShardIndex(dataDir);
  const set = shardSet(index, 'val', dataDir);
  const mean = await readMeanNpy(join(dataDir, 'mean.npy'));
  const batch = (await readShard(dataDir, set, set.shards[0])).batches[0];
  const n = batch.shape[0],
    size = 35,
    offset = centerOffset(40, size);
  const plan = { crop: size, offsetY: new Int32Array(n).fill(offset), offsetX: new Int32Array(n).fill(offset), mirror: new Uint8Array(n) };
  const plain = cropMirrorSubtract(batch, mean, plan);
  const scaled = plain.map((x, i) => x * ckpt.inputScale![Math.floor(i / (size * size)) % 3]);
  const model = await InferenceModel.load(onnxPath, { intraOpNumThreads: 1 });
  const engine = await createOrtEngine(ckpt.spec, ckpt.weights, { intraOpThreads: 1 });
  try {
    const exported = (await model.run(plain, n)).logits;
    const trained = await (engine as { logits(b: EngineBatch): Promise<Float32Array> }).logits({ data: scaled, labels: batch.labels, size: n });
    let worst = 0,
      largest = 0;
    for (let i = 0; i < trained.length; i++) {
      worst = Math.max(worst, Math.abs(exported[i] - trained[i]));
      largest = Math.max(largest, Math.abs(trained[i]));
    }
    // float32 rounding of W·s and of the sums: ~1e-6 of the largest logit; 1e-4 bounds it.
    assert.ok(worst <= 1e-4 * largest, `largest logit difference ${worst} of ${largest}`);
    // Without the fold the exported model would be far off (so this check can fail).
    const unscaledByEngine = await (engine as { logits(b: EngineBatch): Promise<Float32Array> }).logits({ data: plain, labels: batch.labels, size: n });
    let off = 0;
    for (let i = 0; i < trained.length; i++) off = Math.max(off, Math.abs(unscaledByEngine[i] - trained[i]));
    assert.ok(off > 100 * worst, `scaled and unscaled inputs differ by ${off}`);
  } finally {
    await model.close();
    await engine.dispose();
  }
});

test("--init from a checkpoint trained at another input scale rescales conv1: validation of the start equals the source's", async () => {
  await data();
  const source = join(root, 'scaled', 'epoch-0002');
  if (!loadCheckpoint(source, undefined)) throw new Error('needs the previous test');
  const notices: string[] = [];
  // The new run takes raw pixels − mean (no scale) at a fine-tuning lr.
  await runTraining(recipe('from-scaled', { input_scale: null, n_epochs: 1 }), { init: source, maxIters: 0, onNotice: (m) => notices.push(m) });
  assert.ok(
    notices.some((m) => /trained with input_scale \[.*\], this run uses none: its first layer's weights are rescaled/.test(m)),
    notices.join('\n'),
  );
  const start = join(root, 'from-scaled', 'epoch-0000');
  const validate = (dir: string) => {
    const r = spawnSync(process.execPath, [CLI, 'validate', '--weights', dir, '--data', dataDir, '--json', '--threads', '1'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { top1Error: number; loss: number };
  };
  const a = validate(source),
    b = validate(start);
  assert.equal(b.top1Error, a.top1Error);
  assert.ok(Math.abs(a.loss - b.loss) <= 1e-5 * Math.max(1, a.loss), `${b.loss} vs ${a.loss}`);
  assert.equal(loadCheckpoint(start).inputScale, undefined);
});

test("refused: resuming with another input_scale than the checkpoint's; --stdin with a per-iteration schedule", async () => {
  await data();
  await runTraining(recipe('resume-scale', { n_epochs: 2 }), { maxIters: 3 });
  await assert.rejects(
    () => runTraining(recipe('resume-scale', { n_epochs: 2, input_scale: null }), { resume: true }),
    /was trained with input_scale \[.*\] but the config has none: resume with input_scale: auto/,
  );
  await assert.rejects(
    () => runTraining(recipe('resume-scale', { n_epochs: 2, input_scale: [0.5] }), { resume: true }),
    /was trained with input_scale \[.*\] but the config says \[0.5, 0.5, 0.5\]/,
  );
  const resumed = await runTraining(recipe('resume-scale', { n_epochs: 2 }), { resume: true });
  assert.equal(resumed.state.iteration, 12);
  await assert.rejects(
    () => runTraining(recipe('stdin', { input_scale: null }), { stdinRecords: Readable.from([]) }),
    /lr_policy cosine with lr_warmup_epochs 1 needs the epoch length, which a stream \(stdinRecords\) does not have/,
  );
});
