/**
 * `--devices` end to end (docs/gpus.md): a device this machine cannot have stops `train` in one
 * line with exit code 2 before any data is read; and, where a WebGPU adapter exists (lavapipe on
 * the CPU machines), `train --devices webgpu` runs the whole loop (steps, validation, a checkpoint
 * read back from the GPU) and ends with the same weights as `--devices cpu` (1e-4 of the change:
 * the engines' step tolerance, device-engine.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { listCheckpoints, loadCheckpoint } from '@alexnet-stream/model-alexnet';
import { deviceProblem, parseDevice, webgpuUnavailable } from '@alexnet-stream/onnx-export';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';

const CLI = resolve(__dirname, '../../apps/cli/bin/alexnet-stream.js');
const root = mkdtempSync(join(tmpdir(), 'gpu-cli-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300_000 });
}

const lines = (text: string) => text.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('Warning: maxDynamic'));

test('train --devices webgpu:1 / cuda:0 (no CUDA provider): one line, exit 2, before reading data', () => {
  const r = cli(['train', '--devices', 'webgpu:1', '--data', join(root, 'no-such-dir'), '--weights-dir', join(root, 'w')]);
  assert.equal(r.status, 2);
  assert.deepEqual(lines(r.stderr), [
    'alexnet-stream train: webgpu:1: onnxruntime-node 1.30 cannot choose a WebGPU adapter by index (it takes the first GPU Dawn prefers) — give each worker its own GPU from outside (one per host or container) and use --devices webgpu',
  ]);
  if (deviceProblem(parseDevice('cuda:0')) === undefined) return; // this onnxruntime-node has CUDA
  const c = cli(['train', '--devices', 'cuda:0', '--data', join(root, 'no-such-dir'), '--weights-dir', join(root, 'w')]);
  assert.equal(c.status, 2);
  assert.deepEqual(lines(c.stderr), [
    'alexnet-stream train: cuda: this onnxruntime-node has no CUDA provider — reinstall with ONNXRUNTIME_NODE_INSTALL=cuda12, needs CUDA 12 and cuDNN 9 (docs/gpus.md)',
  ]);
});

test('train --devices webgpu ends where --devices cpu ends (steps, validation, checkpoint)', async (t) => {
  const reason = await webgpuUnavailable();
  if (reason) return t.skip(`no WebGPU adapter here: ${reason}`);
  const data = join(root, 'data');
  await writeFixtureDataDir({ dir: data, classes: 4, trainPerClass: 6, valPerClass: 2, size: 40, batchSize: 8 });
  const specFile = join(root, 'tiny.json');
  writeSpecFile(specFile, tinySpec(4, 35));
  const config = join(root, 'config.yaml');
  writeFileSync(
    config,
    [
      `data_dir: ${data}`,
      `spec_file: ${specFile}`,
      'batch_size: 8',
      'n_epochs: 1',
      'learning_rate: 0.01',
      'seed: 3',
      'intra_op_threads: 1',
      'print_freq: 1',
    ].join('\n'),
  );
  const weights: Record<string, Record<string, Float32Array>> = {};
  const losses: Record<string, number> = {};
  for (const [run, extra] of [
    ['init', ['--devices', 'cpu', '--max-iters', '0']],
    ['cpu', ['--devices', 'cpu']],
    ['webgpu', ['--devices', 'webgpu']],
  ] as const) {
    const dir = join(root, `w-${run}`);
    const r = cli(['train', '--config', config, '--weights-dir', dir, ...extra]);
    assert.equal(r.status, 0, r.stderr);
    const summary = JSON.parse(r.stdout.trim().split('\n').pop()!);
    losses[run] = summary.lastValidation?.loss;
    weights[run] = loadCheckpoint(listCheckpoints(dir).pop()!.path).weights;
  }
  assert.ok(Math.abs(losses.webgpu - losses.cpu) <= 1e-4 * Math.abs(losses.cpu), `validation loss: webgpu ${losses.webgpu}, cpu ${losses.cpu}`);
  for (const [name, cpu] of Object.entries(weights.cpu)) {
    const gpu = weights.webgpu[name],
      w0 = weights.init[name];
    let diff = 0,
      change = 0;
    for (let i = 0; i < cpu.length; i++) {
      diff = Math.max(diff, Math.abs(gpu[i] - cpu[i]));
      change = Math.max(change, Math.abs(cpu[i] - w0[i]));
    }
    assert.ok(change > 0, `${name}: training did not change it`);
    assert.ok(diff <= 1e-4 * change + 1e-7 * Math.max(...cpu.map(Math.abs)), `${name}: webgpu and cpu end ${diff} apart for a change of ${change}`);
  }
});
