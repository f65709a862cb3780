import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NamedTensors } from '@alexnet-stream/core';
import type { ModelSpec } from './spec';
import { initParameters } from './init';
import { decodeSafetensors, encodeSafetensors } from './safetensors';
import {
  checkpointDirName,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  saveCheckpoint,
  validateWeights,
  MOMENTUM_FILE,
  STATE_FILE,
  WEIGHTS_FILE,
} from './checkpoint';

/** A tiny model (a spec is data): conv 3->4 3x3 on 8x8, then fc 144->3. */
const tiny: ModelSpec = {
  specVersion: 1,
  preset: 'theano-alexnet',
  inputChannels: 3,
  inputSize: 8,
  numClasses: 3,
  layers: [
    {
      kind: 'conv',
      name: 'conv1',
      outChannels: 4,
      kernel: 3,
      stride: 1,
      pad: 0,
      group: 1,
      weightInit: { dist: 'normal', std: 0.01 },
      biasInit: { dist: 'constant', value: 0.1 },
    },
    { kind: 'relu', name: 'relu1' },
    { kind: 'flatten', name: 'flatten' },
    { kind: 'fc', name: 'fc8', outFeatures: 3, weightInit: { dist: 'normal', std: 0.01 }, biasInit: { dist: 'constant', value: 0 } },
  ],
};

const tmp = () => mkdtempSync(join(tmpdir(), 'ckpt-test-'));
const scaled = (w: NamedTensors, k: number): NamedTensors => Object.fromEntries(Object.entries(w).map(([n, a]) => [n, a.map((v) => v * k)]));

test('checkpointDirName pads to four digits', () => {
  assert.equal(checkpointDirName(7), 'epoch-0007');
  assert.equal(checkpointDirName(12345), 'epoch-12345');
  assert.throws(() => checkpointDirName(-1), { code: 'ERR_INVALID_PARAMETER', message: 'Expected an integer >= 0 for epoch but received -1' });
});

test('save -> load round trip is bit-exact for weights, momentum, state and spec', () => {
  const root = tmp();
  const weights = initParameters(tiny, 5);
  const momentum = scaled(weights, -0.5);
  const state = {
    epoch: 3,
    iteration: 1234,
    lr: 0.001,
    val_record: [[0.9, 0.7, 2.3]],
    config: { batchSize: 256 },
    rng: { s: [1, 2, 3, 4], spareNormal: null },
  };
  const dir = saveCheckpoint(join(root, checkpointDirName(3)), { spec: tiny, weights, momentum, state });
  assert.deepEqual(readdirSync(dir).sort(), [MOMENTUM_FILE, STATE_FILE, WEIGHTS_FILE].sort());
  const back = loadCheckpoint(dir, tiny);
  assert.deepEqual(back.spec, tiny);
  assert.deepEqual(back.state, state);
  assert.deepEqual(Object.keys(back.weights), Object.keys(weights));
  for (const name of Object.keys(weights)) {
    assert.deepEqual(Buffer.from(back.weights[name].buffer), Buffer.from(weights[name].buffer), name);
    assert.deepEqual(Buffer.from(back.momentum![name].buffer), Buffer.from(momentum[name].buffer), name);
  }
  // A lone weights file describes itself: spec from __metadata__.
  const lone = loadCheckpoint(join(dir, WEIGHTS_FILE));
  assert.deepEqual(lone.spec, tiny);
  assert.deepEqual(lone.weights, weights);
  assert.equal(lone.momentum, undefined);
  // The files are plain safetensors with the spec in the metadata.
  const file = decodeSafetensors(readFileSync(join(dir, WEIGHTS_FILE)));
  assert.deepEqual(JSON.parse(file.metadata.spec), tiny);
  assert.deepEqual(file.tensors['conv1.weight'].shape, [4, 3, 3, 3]);
  rmSync(root, { recursive: true });
});

test('listCheckpoints/latestCheckpoint: sorted by epoch, stray entries and temp dirs ignored', () => {
  const root = tmp();
  assert.deepEqual(listCheckpoints(join(root, 'none')), []);
  assert.equal(latestCheckpoint(root), undefined);
  const weights = initParameters(tiny, 1);
  for (const epoch of [10, 2, 9]) saveCheckpoint(join(root, checkpointDirName(epoch)), { spec: tiny, weights, state: { epoch } });
  mkdirSync(join(root, '.epoch-0011.tmp-1-x'));
  writeFileSync(join(root, '.epoch-0011.tmp-1-x', WEIGHTS_FILE), 'partial');
  mkdirSync(join(root, 'epoch-0012')); // no weights file: not a checkpoint
  writeFileSync(join(root, 'val_record.json'), '[]');
  assert.deepEqual(
    listCheckpoints(root).map((c) => c.epoch),
    [2, 9, 10],
  );
  assert.equal(latestCheckpoint(root)!.path, join(root, 'epoch-0010'));
  rmSync(root, { recursive: true });
});

test('a writer killed before the rename leaves no checkpoint that looks whole; the previous one stays intact', () => {
  const root = tmp();
  const weights = initParameters(tiny, 1);
  saveCheckpoint(join(root, checkpointDirName(1)), { spec: tiny, weights, state: { epoch: 1 } });
  // A separate process that dies (exit 137, as SIGKILL) at the moment it would rename its temp dir.
  const script = `
    const fs = require('node:fs');
    fs.renameSync = () => process.exit(137);
    const m = require(${JSON.stringify(join(__dirname, 'index.js'))});
    const spec = JSON.parse(process.argv[1]);
    m.saveCheckpoint(process.argv[2], { spec, weights: m.initParameters(spec, 2), state: { epoch: 2 } });
  `;
  for (const target of [checkpointDirName(2), checkpointDirName(1)]) {
    const r = spawnSync(process.execPath, ['-e', script, JSON.stringify(tiny), join(root, target)], { encoding: 'utf8' });
    assert.equal(r.status, 137, r.stderr);
  }
  assert.ok(
    readdirSync(root).some((n) => n.startsWith('.epoch-0002.tmp-')),
    'the killed writer left its temp dir',
  );
  assert.deepEqual(
    listCheckpoints(root).map((c) => c.epoch),
    [1],
  );
  const back = loadCheckpoint(latestCheckpoint(root)!.path, tiny);
  assert.deepEqual(back.state, { epoch: 1 });
  assert.deepEqual(back.weights, weights);
  rmSync(root, { recursive: true });
});

test('a failed save cleans its temp dir; saving over an existing checkpoint replaces it whole', () => {
  const root = tmp();
  const dir = join(root, checkpointDirName(4));
  const weights = initParameters(tiny, 1);
  saveCheckpoint(dir, { spec: tiny, weights, momentum: weights, state: { epoch: 4, run: 'a' } });
  saveCheckpoint(dir, { spec: tiny, weights: scaled(weights, 2), state: { epoch: 4, run: 'b' } });
  const back = loadCheckpoint(dir);
  assert.deepEqual(back.state, { epoch: 4, run: 'b' });
  assert.equal(back.momentum, undefined, 'the old momentum file went with the old dir');
  assert.deepEqual(back.weights['fc8.bias'], scaled(weights, 2)['fc8.bias']);
  const bad = { ...weights, 'fc8.bias': new Float32Array(2) };
  assert.throws(() => saveCheckpoint(join(root, checkpointDirName(5)), { spec: tiny, weights: bad, state: {} }), /fc8.bias has 2 values/);
  assert.throws(() => saveCheckpoint(join(root, checkpointDirName(5)), { spec: tiny, weights, state: { spec: 1 } }), /state.spec is reserved/);
  assert.deepEqual(readdirSync(root), ['epoch-0004']);
  rmSync(root, { recursive: true });
});

test('validateWeights names every missing, unexpected and mis-shaped tensor in one message', () => {
  const w = initParameters(tiny, 1);
  const broken: Record<string, Float32Array> = { ...w, 'conv1.weight': new Float32Array(10), extra: new Float32Array(1) };
  delete broken['fc8.bias'];
  assert.throws(
    () => validateWeights(tiny, broken, 'x.safetensors'),
    (err: Error) => {
      assert.equal(err.name, 'InputError');
      assert.equal(
        err.message,
        'x.safetensors: weights do not match the model (theano-alexnet, 3 classes, input 8): missing fc8.bias [3]; conv1.weight has 10 values, the model needs [4, 3, 3, 3] = 108; unexpected extra',
      );
      return true;
    },
  );
  const tensors = {
    'conv1.weight': { dtype: 'F32' as const, shape: [4, 27], data: w['conv1.weight'] },
    'conv1.bias': { dtype: 'I32' as const, shape: [4], data: new Int32Array(4) },
  };
  assert.throws(
    () => validateWeights(tiny, tensors, 'y'),
    /missing fc8.weight \[3, 144\], fc8.bias \[3\]; conv1.weight has shape \[4, 27\], the model needs \[4, 3, 3, 3\]; conv1.bias is I32, the model needs F32/,
  );
  validateWeights(tiny, w, 'ok'); // no throw
});

test('loading bad checkpoints: clear InputErrors naming the file', () => {
  const root = tmp();
  const dir = saveCheckpoint(join(root, 'epoch-0001'), { spec: tiny, weights: initParameters(tiny, 1), state: { epoch: 1 } });
  const other: ModelSpec = { ...tiny, numClasses: 5, layers: tiny.layers.map((l) => (l.kind === 'fc' ? { ...l, outFeatures: 5 } : l)) };
  assert.throws(
    () => loadCheckpoint(dir, other),
    (e: Error) =>
      e.name === 'InputError' &&
      /weights.safetensors: weights do not match the model \(theano-alexnet, 5 classes, input 8\): fc8.weight has shape \[3, 144\], the model needs \[5, 144\]; fc8.bias/.test(
        e.message,
      ),
  );
  assert.throws(() => loadCheckpoint(join(root, 'nope')), /nope: no such checkpoint/);
  assert.throws(() => loadCheckpoint(root), /not a checkpoint directory: no weights.safetensors/);
  // A foreign safetensors file (no spec metadata) needs the model named.
  const foreign = join(root, 'foreign.safetensors');
  writeFileSync(foreign, encodeSafetensors({ 'conv1.bias': { dtype: 'F32', shape: [4], data: new Float32Array(4) } }));
  assert.throws(() => loadCheckpoint(foreign), /foreign.safetensors: no model spec in its __metadata__/);
  assert.throws(() => loadCheckpoint(foreign, tiny), /foreign.safetensors: weights do not match the model .*missing conv1.weight/);
  // Truncated weights, broken state.json, mixed files.
  const w = readFileSync(join(dir, WEIGHTS_FILE));
  writeFileSync(join(dir, WEIGHTS_FILE), w.subarray(0, w.length - 4));
  assert.throws(() => loadCheckpoint(dir), /epoch-0001\/weights.safetensors: not a valid safetensors file: .*out of range/);
  writeFileSync(join(dir, WEIGHTS_FILE), w);
  writeFileSync(join(dir, STATE_FILE), '{"epoch": 1,');
  assert.throws(() => loadCheckpoint(dir), /state.json: not valid JSON/);
  writeFileSync(join(dir, STATE_FILE), '[1]');
  assert.throws(() => loadCheckpoint(dir), {
    code: 'ERR_CHECKPOINT',
    message: /state\.json: expected a checkpoint's state \(a JSON object\) but received \[1\]$/,
  });
  writeFileSync(join(dir, STATE_FILE), JSON.stringify({ format: 'alexnet-stream-checkpoint/9', epoch: 1 }));
  assert.throws(
    () => loadCheckpoint(dir),
    /state\.json: expected "alexnet-stream-checkpoint\/1" \(the format this version reads\) for format but received "alexnet-stream-checkpoint\/9"/,
  );
  writeFileSync(join(dir, STATE_FILE), JSON.stringify({ spec: other, epoch: 1 }));
  assert.throws(() => loadCheckpoint(dir), /state.json describes theano-alexnet, 5 classes.*but weights.safetensors was written for theano-alexnet, 3 classes/);
  writeFileSync(join(dir, STATE_FILE), JSON.stringify({ spec: { specVersion: 1, layers: [] }, epoch: 1 }));
  assert.throws(() => loadCheckpoint(dir), /state.json: its model spec is not usable: preset is undefined/);
  assert.ok(existsSync(dir));
  rmSync(root, { recursive: true });
});
