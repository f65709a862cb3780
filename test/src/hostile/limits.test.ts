/**
 * Sizes a user can ask for that no reader, allocator or float32 can take: a batch size past the
 * stream format's bound or 1 GiB a record, float32 crops four times their input, a class count
 * whose fc8 cannot be allocated, thread counts that start threads without end, learning rates
 * that are Infinity in float32. Each is refused at once, naming the option and what to lower
 * (exit 2): never "Invalid typed array length", an internal error, a stream no reader takes, or
 * a run killed after minutes.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initParameters, saveCheckpoint } from '@alexnet-stream/model-alexnet';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';
import { A, clearError, cli, demoData, scratch, sh } from './stream-fixtures';

const dir = scratch('limits');
const p = (name: string) => join(dir, name);
const spec = tinySpec(4, 35);

before(async () => {
  const demo = demoData(dir, 2);
  const r = sh(dir, `${A} scan ${demo}/train > items.msgpack && ${A} decode --size 32 < items.msgpack > images.msgpack`);
  assert.deepEqual(r.status, [0], r.stderr);
  await writeFixtureDataDir({ dir: p('data'), classes: 4, trainPerClass: 4, valPerClass: 2, size: 40, batchSize: 8 });
  writeSpecFile(p('tiny.json'), spec);
  saveCheckpoint(p('ckpt'), { spec, weights: initParameters(spec, 1), state: {} });
});

/** Fails at once (well inside `timeoutMs`), exit 2, one clear line. */
function refused(args: string[], pattern: RegExp, timeoutMs = 30_000): void {
  const r = cli(dir, args, { timeoutMs });
  assert.equal(r.signal, null, `${args.join(' ')}: did not finish within ${timeoutMs} ms\n${r.stderr}`);
  assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
  clearError(r.stderr, pattern, args.join(' '));
}

test("batch --size and prepare --batch-size: past the format's bound, or past 1 GiB a batch, refused before allocating", () => {
  refused(['batch', '--size', '9007199254740991'], /Expected an integer between 1 and 1048576 for --size but received 9007199254740991/);
  refused(
    ['prepare', '--train', join(demoData(dir, 2), 'train'), '--out', p('prepared'), '--batch-size', '1048577'],
    /Expected an integer between 1 and 1048576 for --batch-size/,
  );
  for (const size of ['1048576', '100000']) {
    const r = sh(dir, `${A} batch --size ${size} < images.msgpack > batches.msgpack`);
    assert.deepEqual(r.status, [2], r.stderr);
    clearError(
      r.stderr,
      new RegExp(
        `batch: a batch of ${size} uint8 3x32x32 images takes [\\d.]+ GiB, more than the 1 GiB a record may take \\(readers refuse larger records\\): lower --size`,
      ),
    );
  }
  const prepared = cli(dir, ['prepare', '--train', join(demoData(dir, 2), 'train'), '--out', p('prepared'), '--batch-size', '1048576', '--size', '32']);
  assert.equal(prepared.status, 2, prepared.stderr);
  clearError(prepared.stderr, /a batch of 1048576 uint8 3x32x32 images takes 11\.0 GiB, more than the 1 GiB a record may take .*: lower --batch-size/);
});

test('augment: batches whose float32 crops would exceed what a reader takes are refused at the header', () => {
  // Batches of 60000 images of 3x32x32 (with room for their keys): 0.6 GiB a record as uint8 (a
  // stream readers take), 1.1 GiB as float32 crops.
  const made = sh(dir, `${A} mean --out mean32.npy < images.msgpack | ${A} batch --size 60000 > big.msgpack`);
  assert.deepEqual(made.status, [0, 0], made.stderr);
  const r = sh(dir, `${A} augment --mean mean32.npy --crop 32 < big.msgpack > /dev/null`);
  assert.deepEqual(r.status, [2], r.stderr);
  clearError(
    r.stderr,
    /augment: a batch of 60000 float32 3x32x32 crops takes 1\.1 GiB, more than the 1 GiB a record may take .*: make smaller batches upstream \(batch --size\)/,
  );
});

test('a class count whose weights cannot be allocated is refused by the spec limits, naming the options', () => {
  refused(
    ['export', '--random-init', '--seed', '1', '--num-classes', '1000000000', '--out', p('x.onnx')],
    /spec\.numClasses is 1000000000, expected an integer from 1 to 1000000 \(the model of --preset theano-alexnet, --num-classes 1000000000\)/,
  );
  refused(
    ['export', '--random-init', '--seed', '1', '--num-classes', '300000', '--out', p('x.onnx')],
    /1285968224 parameters, more than the 1000000000 a model may have/,
  );
  refused(['validate', '--weights', p('ckpt'), '--data', p('data'), '--num-classes', '999999999'], /spec\.numClasses is 999999999/);
});

test('train: intra_op_threads, learning_rate, weight_decay and bias_lr_multiplier beyond what the engine can use are refused', () => {
  const config = p('train.yaml');
  writeFileSync(
    config,
    `${[`data_dir: ${p('data')}`, `weights_dir: ${p('weights')}`, `spec_file: ${p('tiny.json')}`, 'batch_size: 8', 'n_epochs: 1'].join('\n')}\n`,
  );
  // intra_op_threads 100000 started threads until killed (60 s, 2.7 GB); 1e308 is Infinity in float32.
  refused(
    ['train', '--config', config, '--set', 'intra_op_threads=100000'],
    /expected an integer >= 0 and <= 1024 for intra_op_threads but received 100000/,
    60_000,
  );
  refused(['train', '--config', config, '--set', 'learning_rate=1e308'], /expected a number > 0 and <= 1000000 for learning_rate but received 1e\+308/);
  refused(['train', '--config', config, '--set', 'weight_decay=1e40'], /expected a number >= 0 and <= 1000000 for weight_decay/);
  refused(['train', '--config', config, '--set', 'bias_lr_multiplier=1e39'], /expected a number >= 0 and <= 1000000 for bias_lr_multiplier/);
});
