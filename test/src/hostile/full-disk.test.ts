/**
 * Every command that writes files, when the disk cannot take them. A real write error is made
 * without root or a small mount: a file-size limit (`ulimit -f`) with SIGXFSZ ignored makes
 * every write past it fail with EFBIG, exactly where a full disk fails with ENOSPC. Each command
 * must stop with one line naming what it could not write (exit 2) and leave nothing half-written:
 * no temp files, no index entry, the previous file or checkpoint unchanged. Before, `import`,
 * `train`'s checkpoints, `batch --out-dir` and `make-demo-data` died with a raw
 * "EFBIG: file too large, write" (exit 1), `make-demo-data` leaving its temp file.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initParameters, saveCheckpoint } from '@alexnet-stream/model-alexnet';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';
import { A, clearError, cli, demoData, scratch } from './stream-fixtures';

const dir = scratch('full-disk');
const p = (name: string) => join(dir, name);
const spec = tinySpec(4, 35);

before(async () => {
  await writeFixtureDataDir({ dir: p('data'), classes: 4, trainPerClass: 4, valPerClass: 2, size: 40, batchSize: 8 });
  writeSpecFile(p('tiny.json'), spec);
  saveCheckpoint(p('ckpt'), { spec, weights: initParameters(spec, 1), state: {} });
  const exported = cli(dir, ['export', '--weights', p('ckpt'), '--mean', p('data/mean.npy'), '--out', p('model.onnx')]);
  assert.equal(exported.status, 0, exported.stderr);
  demoData(dir, 2);
  const made = spawnSync('bash', ['-c', `${A} scan demo/train > items.msgpack && ${A} decode --size 32 < items.msgpack > images.msgpack`], {
    cwd: dir,
    encoding: 'utf8',
  });
  assert.equal(made.status, 0, made.stderr);
});

/** Run a bash script whose files can grow to `kb` KiB at most (writes past it fail with EFBIG). */
function limited(kb: number, script: string) {
  const r = spawnSync('bash', ['-c', `trap '' XFSZ; ulimit -f ${kb}; ${script}`], {
    cwd: dir,
    encoding: 'utf8',
    env: { ...process.env, ALEXNET_STREAM_PROGRESS: '0' },
  });
  return { status: r.status, stderr: r.stderr };
}

const EFBIG = /file too large for the file system \(EFBIG\)/;
/** Names in `folder` (recursively) that look like temp files of a write. */
const temps = (folder: string): string[] =>
  readdirSync(folder, { recursive: true })
    .map(String)
    .filter((n) => /\.tmp|\.partial/.test(n));

test('import and train: a checkpoint that cannot be written is one line naming it (exit 2); the previous one stays whole', () => {
  mkdirSync(p('imports'));
  const fresh = limited(8, `${A} import --from onnx model.onnx --out imports/new`);
  assert.equal(fresh.status, 2, fresh.stderr);
  clearError(fresh.stderr, new RegExp(`imports/new: cannot write the checkpoint: ${EFBIG.source}; nothing was written`));
  assert.deepEqual(readdirSync(p('imports')), [], 'no checkpoint and no temp dir');

  const whole = cli(dir, ['import', '--from', 'onnx', p('model.onnx'), '--out', p('imports/old')]);
  assert.equal(whole.status, 0, whole.stderr);
  const before = readFileSync(p('imports/old/weights.safetensors'));
  const replaced = limited(8, `${A} import --from onnx model.onnx --out imports/old --force`);
  assert.equal(replaced.status, 2, replaced.stderr);
  clearError(replaced.stderr, new RegExp(`imports/old: cannot write the checkpoint: ${EFBIG.source}; the checkpoint there is unchanged`));
  assert.ok(readFileSync(p('imports/old/weights.safetensors')).equals(before));
  assert.deepEqual(readdirSync(p('imports')), ['old']);

  writeFileSync(
    p('train.yaml'),
    `${[`data_dir: ${p('data')}`, `weights_dir: ${p('weights')}`, `spec_file: ${p('tiny.json')}`, 'batch_size: 8', 'n_epochs: 1'].join('\n')}\n`,
  );
  const trained = limited(8, `${A} train --config train.yaml`);
  assert.equal(trained.status, 2, trained.stderr);
  clearError(trained.stderr, new RegExp(`weights/epoch-0001: cannot write the checkpoint: ${EFBIG.source}`));
  assert.ok(!existsSync(p('weights/epoch-0001')) && temps(p('weights')).length === 0, readdirSync(p('weights')).join(', '));
  assert.ok(!existsSync(p('weights/train.lock')), 'the lock is released');
});

test('batch --out-dir: a shard that cannot be written is one line naming the set (exit 2); no index entry, no shard files', () => {
  const r = limited(4, `${A} batch --size 4 --out-dir shards < images.msgpack`);
  assert.equal(r.status, 2, r.stderr);
  clearError(r.stderr, new RegExp(`shards: cannot write shard set "train": ${EFBIG.source}; no index entry was written for it`));
  assert.deepEqual(
    readdirSync(p('shards')).filter((n) => !n.startsWith('.train.lock')),
    [],
    readdirSync(p('shards')).join(', '),
  );
});

test('make-demo-data: an image that cannot be written is one line naming it (exit 2), with no temp file left', () => {
  const r = limited(4, `${A} make-demo-data --out demo-full --train-per-class 2 --val-per-class 1`);
  assert.equal(r.status, 2, r.stderr);
  clearError(r.stderr, new RegExp(`demo-full/\\S+\\.jpg: cannot write: ${EFBIG.source}`));
  assert.deepEqual(temps(p('demo-full')), []);
});

test('what held: export, mean, prepare, inspect --contact-sheet name the file, leave the old one unchanged and no temp file', () => {
  writeFileSync(p('keep.onnx'), 'old model');
  writeFileSync(p('keep.npy'), 'old mean');
  const cases: [string, RegExp][] = [
    [`${A} export --weights ckpt --out keep.onnx`, /keep\.onnx: cannot write: .*keep\.onnx was not changed/],
    [`${A} mean --out keep.npy data`, /keep\.npy: cannot write: .*keep\.npy was not changed/],
    [`${A} prepare --train demo/train --out prepared --size 64 --batch-size 4`, /prepared\.partial\S*: cannot write/],
    [`${A} inspect data --contact-sheet sheet.png > /dev/null`, /sheet\.png: cannot write: .*sheet\.png was not changed/],
  ];
  for (const [script, pattern] of cases) {
    const r = limited(4, script);
    assert.equal(r.status, 2, `${script}: ${r.stderr}`);
    clearError(r.stderr, pattern, script);
    clearError(r.stderr, EFBIG, script);
  }
  assert.equal(readFileSync(p('keep.onnx'), 'utf8'), 'old model');
  assert.equal(readFileSync(p('keep.npy'), 'utf8'), 'old mean');
  assert.ok(!existsSync(p('prepared')) && !existsSync(p('prepared.partial')), 'prepare left no data dir and no work folder');
  assert.ok(!existsSync(p('sheet.png')));
  assert.deepEqual(
    temps(dir).filter((n) => !n.startsWith('demo')),
    [],
  );
});
