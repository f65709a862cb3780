/**
 * Every file a command reads that a user names or can put in place — models, checkpoints and
 * their state, configs, model specs, token files, class lists, seed .npy weights, run logs, lock
 * files — is read only if it is a regular file, and at most a bound that fits its kind. A FIFO
 * would hang the command forever (nothing ever writes it), /dev/zero would fill memory; both are
 * refused at once with what they are (exit 2). Also: no command loops forever creating a folder
 * under /proc (Node's recursive mkdir does).
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeWeights, exportTheanoNpy, initParameters, saveCheckpoint, STATE_FILE, WEIGHTS_FILE } from '@alexnet-stream/model-alexnet';
import { encodeModel, lowerInference } from '@alexnet-stream/onnx-export';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';
import { TINY_SPEC } from './checkpoint-fixtures';
import { clearError, cli, scratch } from './stream-fixtures';

const dir = scratch('special-inputs');
const p = (name: string) => join(dir, name);
const spec = tinySpec(4, 35);
const FIFO = p('fifo');
/** Each refusal takes well under a second; a hang is cut here and fails the case. */
const TIMEOUT_MS = 30_000;

before(async () => {
  execFileSync('mkfifo', [FIFO]);
  await writeFixtureDataDir({ dir: p('data'), classes: 4, trainPerClass: 4, valPerClass: 2, size: 40, batchSize: 8 });
  writeSpecFile(p('tiny.json'), spec);
  const weights = initParameters(spec, 1);
  saveCheckpoint(p('ckpt'), { spec, weights, momentum: weights, state: { epoch: 1 } });
  writeFileSync(p('model.onnx'), encodeModel(lowerInference(spec, weights, { classNames: ['a', 'b', 'c', 'd'] })));
  // checkpoints whose files were replaced by special files
  for (const [name, file, target] of [
    ['ckpt-weights-fifo', WEIGHTS_FILE, FIFO],
    ['ckpt-weights-zero', WEIGHTS_FILE, '/dev/zero'],
    ['ckpt-state-fifo', STATE_FILE, FIFO],
  ] as const) {
    mkdirSync(p(name));
    for (const f of [WEIGHTS_FILE, STATE_FILE]) if (f !== file) copyFileSync(join(p('ckpt'), f), join(p(name), f));
    symlinkSync(target, join(p(name), file));
  }
  writeFileSync(p('weights-only.safetensors'), encodeWeights(spec, weights));
});

/** The command fails at once (no hang), exit 2, one clear line matching `pattern`. */
function refused(args: string[], pattern: RegExp): void {
  const started = Date.now();
  const r = cli(dir, args, { timeoutMs: TIMEOUT_MS });
  assert.equal(r.signal, null, `${args.join(' ')}: hung (killed after ${Date.now() - started} ms)\n${r.stderr}`);
  assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
  clearError(r.stderr, pattern, args.join(' '));
  assert.equal(r.stdout.length, 0, `${args.join(' ')}: nothing on stdout`);
}

const FIFO_WORDS = /not a regular file \(a FIFO \(named pipe\)\)/;
const DEVICE_WORDS = /not a regular file \(a character device\)/;

test('ONNX models: predict and import --from onnx refuse a FIFO, /dev/zero or a folder as the model', () => {
  writeFileSync(p('photo.jpg'), Buffer.alloc(0)); // never read: the model is refused first
  for (const [model, words] of [
    [FIFO, FIFO_WORDS],
    ['/dev/zero', DEVICE_WORDS],
  ] as const) {
    refused(['predict', '--model', model, 'photo.jpg'], new RegExp(`${model}: cannot read the ONNX model \\(${words.source}\\)`));
    refused(['import', '--from', 'onnx', model, '--out', p('imported')], new RegExp(`${model}: cannot read the ONNX model \\(${words.source}\\)`));
  }
  refused(['import', '--from', 'onnx', p('data'), '--out', p('imported')], /cannot read the ONNX model \(not a regular file \(a folder\)\)/);
});

test('checkpoints: a weights file or state.json that is a FIFO or /dev/zero is refused by export, validate and train --resume', () => {
  refused(
    ['export', '--weights', p('ckpt-weights-fifo'), '--out', p('x.onnx')],
    new RegExp(`weights\\.safetensors: cannot read the weights file: ${FIFO_WORDS.source}`),
  );
  refused(
    ['export', '--weights', p('ckpt-weights-zero'), '--out', p('x.onnx')],
    new RegExp(`weights\\.safetensors: cannot read the weights file: ${DEVICE_WORDS.source}`),
  );
  refused(
    ['export', '--weights', p('ckpt-state-fifo'), '--out', p('x.onnx')],
    new RegExp(`state\\.json: cannot read the checkpoint state: ${FIFO_WORDS.source}`),
  );
  refused(['export', '--weights', FIFO, '--out', p('x.onnx')], new RegExp(`cannot read the weights file: ${FIFO_WORDS.source}`));
  refused(['validate', '--weights', p('ckpt-weights-fifo'), '--data', p('data')], new RegExp(`cannot read the weights file: ${FIFO_WORDS.source}`));
});

test('a weights file larger than its model can need is refused before it is read', () => {
  // The spec is known from state.json: its parameters at 4 bytes each plus the largest header.
  const big = p('ckpt-big');
  mkdirSync(big);
  copyFileSync(join(p('ckpt'), STATE_FILE), join(big, STATE_FILE));
  writeFileSync(join(big, WEIGHTS_FILE), Buffer.alloc(0));
  execFileSync('truncate', ['-s', String(200 << 20), join(big, WEIGHTS_FILE)]); // sparse: takes no disk
  refused(
    ['export', '--weights', big, '--out', p('x.onnx')],
    /weights\.safetensors: cannot read the weights file: file is 200\.0 MiB, more than the 95\.4 MiB a weights file may take/,
  );
});

test('train: a config, a spec_file or a weights_dir under /proc that cannot be used fails at once', () => {
  refused(['train', '--config', FIFO], new RegExp(`${FIFO}: cannot read the config file \\(${FIFO_WORDS.source}\\)`));
  refused(['train', '--config', '/dev/zero'], new RegExp(`/dev/zero: cannot read the config file \\(${DEVICE_WORDS.source}\\)`));
  const config = (name: string, lines: string[]) => {
    writeFileSync(p(name), `${[`data_dir: ${p('data')}`, 'batch_size: 8', 'n_epochs: 1', ...lines].join('\n')}\n`);
    return p(name);
  };
  refused(
    ['train', '--config', config('spec-fifo.yaml', [`weights_dir: ${p('w1')}`, `spec_file: ${FIFO}`])],
    new RegExp(`cannot read the model spec \\(spec_file\\): ${FIFO_WORDS.source}`),
  );
  refused(
    ['train', '--config', config('proc.yaml', ['weights_dir: /proc/no-such-dir/weights', `spec_file: ${p('tiny.json')}`])],
    /\/proc\/no-such-dir.*cannot create/,
  );
});

test('report: a val_record.json or train_log.jsonl that is a FIFO is refused, never waited for', () => {
  for (const file of ['val_record.json', 'train_log.jsonl']) {
    const w = p(`report-${file}`);
    mkdirSync(w);
    symlinkSync(FIFO, join(w, file));
    refused(
      ['report', '--weights-dir', w, '--out', p('r.html')],
      new RegExp(`${file}: cannot read the (validation record|training log): ${FIFO_WORDS.source}`),
    );
  }
});

test('import --from theano-npy: a seed .npy that is a FIFO is refused; import --out under /proc fails at once', () => {
  // The seed's layout for a tiny spec, written by the library (the CLI's presets are AlexNet-sized).
  const seed = p('seed');
  exportTheanoNpy(TINY_SPEC, initParameters(TINY_SPEC, 2), seed, 5);
  const script = `
    const { importTheanoNpy } = require(${JSON.stringify(require.resolve('@alexnet-stream/model-alexnet'))});
    try { importTheanoNpy(${JSON.stringify(seed)}, 5, ${JSON.stringify(TINY_SPEC)}); console.log('read'); }
    catch (err) { console.log(err.message); }`;
  const ok = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: TIMEOUT_MS });
  assert.equal(ok.stdout.trim(), 'read', ok.stderr);
  execFileSync('rm', [join(seed, 'W_0_5.npy')]);
  symlinkSync(FIFO, join(seed, 'W_0_5.npy'));
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: TIMEOUT_MS });
  assert.equal(r.signal, null, 'hung on a FIFO');
  assert.match(r.stdout, new RegExp(`W_0_5\\.npy: cannot read the weights file: ${FIFO_WORDS.source}`));

  refused(['import', '--from', 'onnx', p('model.onnx'), '--out', '/proc/no-such-dir/ckpt'], /\/proc\/no-such-dir: cannot create the checkpoint folder/);
});

test('serve: a --token-file that is a FIFO or /dev/zero is refused at start', () => {
  refused(
    ['serve', '--model', `m=${p('model.onnx')}`, '--port', '0', '--token-file', FIFO],
    new RegExp(`--token-file ${FIFO}: cannot read it \\(${FIFO_WORDS.source}\\)`),
  );
  refused(
    ['serve', '--model', `m=${p('model.onnx')}`, '--port', '0', '--token-file', '/dev/zero'],
    new RegExp(`--token-file /dev/zero: cannot read it \\(${DEVICE_WORDS.source}\\)`),
  );
});

test('prepare: a lock file that is a FIFO is reported as unreadable (exit 2), never waited for', () => {
  execFileSync('mkfifo', [p('prepared.lock')]);
  mkdirSync(p('images/a'), { recursive: true });
  refused(['prepare', '--train', p('images'), '--out', p('prepared')], /prepared\.lock: held by another process \(its lock file is unreadable/);
});
