import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultConfig } from './config';
import { appendTrainLog, readTrainLog, readValRecord, truncateTrainLog, VAL_RECORD_JSON, writeValRecord } from './files';
import { parseSavedState, type SavedTrainState } from './saved-state';
import { restoreState } from './start-point';
import type { TrainLogEntry, ValidationResult } from './trainer';

const PATH = '/w/epoch-0002/state.json';
const result = (epoch: number): ValidationResult => ({ epoch, iteration: 10 * epoch, top1Error: 0.5, top5Error: 0.25, loss: 1.5, images: 40, lr: 0.01 });

/** A state as checkpointWriter writes it (typed by the schema's SavedTrainState). */
function written(): SavedTrainState {
  return {
    epoch: 2,
    epochsCompleted: 1,
    iterationInEpoch: 3,
    iteration: 13,
    lr: Math.fround(0.01),
    lastLrChangeEpoch: 0,
    val_record: [result(1)],
    config: defaultConfig(),
    rng: { dropout: { s: [1, 2, 3, 4] }, loader: { seed: 1, epoch: 2, position: 3, scheme: 'deriveSeed(seed, epoch, k)' } },
    data: { trainImages: 40, valImages: 8, batchSize: 4, worldSize: 1, iterationsPerEpoch: null, shuffle: true, seed: 1 },
    engine: 'onnxruntime',
    savedAt: '2025-01-01T00:00:00.000Z',
  };
}

test('a state.json as the trainer writes it parses back; the loop state comes from it', () => {
  const text = JSON.stringify({ ...written(), fromANewerVersion: 1 });
  const saved = parseSavedState(JSON.parse(text), PATH);
  assert.equal(saved.data?.batchSize, 4);
  assert.equal(saved.config?.n_epochs, 60);
  assert.deepEqual(saved.rng?.dropout, { s: [1, 2, 3, 4] });
  assert.equal((saved as Record<string, unknown>).fromANewerVersion, 1, 'fields the schema does not describe are kept');
  assert.deepEqual(restoreState(saved, PATH, 2), {
    epochsCompleted: 1,
    iterationInEpoch: 3,
    iteration: 13,
    lr: Math.fround(0.01),
    lastLrChangeEpoch: 0,
    valRecord: [result(1)],
  });
  // An older checkpoint: no val_record, data, rng or config; a NaN metric saved as null.
  const { val_record: _v, data: _d, rng: _r, config: _c, ...bare } = written();
  assert.deepEqual(restoreState(parseSavedState(bare, PATH), PATH, 2).valRecord, []);
  const nan = parseSavedState({ ...written(), val_record: [{ ...result(1), loss: null, top1Error: JSON.parse('1e999') as number }] }, PATH);
  assert.ok(Number.isNaN(nan.val_record![0].loss), 'null (what JSON makes of NaN) reads back as NaN');
  assert.equal(nan.val_record![0].top1Error, Infinity);
});

test('a wrong field of state.json is an ERR_CHECKPOINT naming the file, the field, what was expected and what it holds', () => {
  const refused = (change: Record<string, unknown>, message: string) =>
    assert.throws(() => parseSavedState({ ...written(), ...change }, PATH), { name: 'InputError', code: 'ERR_CHECKPOINT', message: `${PATH}: ${message}` });
  refused({ iterationInEpoch: 1.5 }, 'expected a count (an integer >= 0) for iterationInEpoch but received 1.5');
  refused({ lr: 0 }, 'expected a learning rate > 0 and <= 1000000 for lr but received 0');
  refused({ lr: undefined }, 'lr is missing (expected a learning rate > 0 and <= 1000000)');
  refused({ val_record: [result(1), { ...result(2), top5Error: 'low' }] }, 'expected a number or null for val_record[1].top5Error but received "low"');
  refused({ data: { ...written().data, seed: -1 } }, 'expected a seed (an integer from 0 to 4294967295) for data.seed but received -1');
  refused({ config: { n_epochs: 'sixty' } }, 'expected a number for config.n_epochs but received "sixty"');
  assert.throws(() => parseSavedState([], PATH), { message: `${PATH}: expected a checkpoint's trainer state (an object) but received []` });
  // What no single field says: the position against the checkpoint's name.
  assert.throws(() => restoreState(parseSavedState(written(), PATH), PATH, 3), /the state is at epoch 1 \+ 3 iterations, but the checkpoint is epoch-0003/);
});

test('val_record.json and train_log.jsonl read back as written, key order included, so a rewrite changes nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'run-files-'));
  try {
    const record = [result(1), { ...result(2), loss: Number.NaN }];
    await writeValRecord(dir, record);
    const text = readFileSync(join(dir, VAL_RECORD_JSON), 'utf8');
    const back = await readValRecord(dir);
    assert.ok(Number.isNaN(back[1].loss));
    await writeValRecord(dir, back);
    assert.equal(readFileSync(join(dir, VAL_RECORD_JSON), 'utf8'), text);
    const entry = (iteration: number): TrainLogEntry => ({
      iteration,
      epoch: 1,
      loss: 2,
      top1Error: 0.9,
      images: 8,
      lr: 0.01,
      imagesPerSecond: 100,
      waitFraction: 0.1,
      time: '2025-01-01T00:00:00.000Z',
    });
    for (const i of [2, 4, 6]) await appendTrainLog(dir, entry(i));
    const log = readFileSync(join(dir, 'train_log.jsonl'), 'utf8');
    assert.deepEqual(await readTrainLog(dir), [entry(2), entry(4), entry(6)]);
    await truncateTrainLog(dir, 4);
    assert.equal(readFileSync(join(dir, 'train_log.jsonl'), 'utf8'), `${log.split('\n').slice(0, 2).join('\n')}\n`);
    writeFileSync(join(dir, VAL_RECORD_JSON), JSON.stringify([{ ...result(1), epoch: -1 }]));
    await assert.rejects(readValRecord(dir), {
      message: `${join(dir, VAL_RECORD_JSON)}: entry 1 (line 1): expected an integer >= 0 for epoch but received -1; not a validation result (epoch, iteration, top1Error, top5Error, loss)`,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
