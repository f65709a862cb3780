/**
 * `prepare` end to end as a user runs it: on a generated demo data set, then rerun (complete),
 * killed mid-run (nothing that looks complete; the rerun starts over), and fed to read | augment.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { generateDemoDataset, readShardIndex } from '@alexnet-stream/stream-io';

const CLI = resolve(__dirname, '../../apps/cli/bin/alexnet-stream.js');
let dir: string;

function cli(args: string[]): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: dir, maxBuffer: 1 << 28, env: { ...process.env, ALEXNET_STREAM_PROGRESS: '1' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

const prepareArgs = [
  'prepare',
  '--train',
  'demo/train',
  '--val',
  'demo/val',
  '--val-list',
  'demo/val.txt',
  '--out',
  'data',
  '--batch-size',
  '8',
  '--size',
  '32',
  '--seed',
  '4',
  '--no-fsync',
];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'prepare-e2e-'));
  await generateDemoDataset(join(dir, 'demo'), { seed: 2, trainPerClass: 4, valPerClass: 2 });
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('prepare builds a complete data dir with progress on stderr; a rerun says it is complete', async () => {
  const r = cli(prepareArgs);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.length, 0, 'stdout carries only data; prepare has none');
  assert.match(r.stderr, /prepare train: 24\/24 images, [\d.]+ images\/s/);
  assert.match(r.stderr, /data: train 24 images in 3 batches, val 12 images in 2 batches, 6 classes, 32x32 images, mean\.npy, classes\.txt; [\d.]+ s/);
  assert.deepEqual(readdirSync(join(dir, 'data')).sort(), [
    'classes.txt',
    'index.json',
    'mean.npy',
    'prepare.json',
    'train-00000.msgpack',
    'train-00001.msgpack',
    'train-00002.msgpack',
    'val-00000.msgpack',
    'val-00001.msgpack',
  ]);
  const index = await readShardIndex(join(dir, 'data'));
  assert.equal(index.prefixes.train.images, 24);
  assert.equal(index.prefixes.val.images, 12);
  assert.equal(index.prefixes.val.partialBatches, 1);

  const again = cli(prepareArgs);
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stderr, /data is already complete .*nothing to do/);

  // The data dir feeds the rest of the pipeline: read | augment with its own mean.
  const r2 = spawnSync(
    'bash',
    [
      '-c',
      `"${process.execPath}" "${CLI}" read data --prefix val | "${process.execPath}" "${CLI}" augment --mean data/mean.npy --crop 28 --center | "${process.execPath}" "${CLI}" inspect --json`,
    ],
    { cwd: dir },
  );
  assert.equal(r2.status, 0, r2.stderr.toString());
  const summary = JSON.parse(r2.stdout.toString());
  assert.equal(summary.images, 12);
  assert.deepEqual(Object.keys(summary.shapes), ['8x3x28x28 float32', '4x3x28x28 float32']);
});

test('prepare killed mid-run leaves only <out>.partial; the rerun starts over and completes', async () => {
  // A FIFO named like an image: reading it blocks until a writer opens it, so the run is
  // reliably in the middle of its work (some shards written) when it is killed.
  const fifo = join(dir, 'demo', 'train', 'square', 'zz-blocking.jpg');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const child = spawn(process.execPath, [CLI, ...prepareArgs.map((a) => (a === 'data' ? 'data-killed' : a)), '--concurrency', '1'], {
    cwd: dir,
    stdio: 'ignore',
  });
  const partial = join(dir, 'data-killed.partial');
  for (let i = 0; i < 1000 && !(existsSync(partial) && readdirSync(partial).some((n) => n.startsWith('train-'))); i++)
    await new Promise((r) => setTimeout(r, 10));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  rmSync(fifo);
  assert.ok(
    readdirSync(partial).some((n) => n.startsWith('train-')),
    'the run had written shards before the kill',
  );
  assert.ok(!existsSync(join(dir, 'data-killed')), 'nothing under the final name');
  const read = cli(['read', 'data-killed.partial']);
  assert.equal(read.status, 2, 'the partial dir has no complete set to read');

  const rerun = cli([...prepareArgs.map((a) => (a === 'data' ? 'data-killed' : a))]);
  assert.equal(rerun.status, 0, rerun.stderr);
  assert.match(rerun.stderr, /removing data-killed\.partial left by an interrupted run; starting over/);
  assert.ok(!existsSync(partial));
  // Same seed and inputs as the first test's run: byte-identical shards and mean.
  for (const name of ['train-00000.msgpack', 'train-00002.msgpack', 'val-00001.msgpack', 'mean.npy']) {
    assert.deepEqual(readFileSync(join(dir, 'data-killed', name)), readFileSync(join(dir, 'data', name)), name);
  }
});

test('a missing train dir, bad options and a foreign --out exit 2 with one clear line', () => {
  const cases: [string[], RegExp][] = [
    [['prepare', '--train', 'nope', '--out', 'x'], /alexnet-stream prepare: .*nope/],
    [['prepare', '--train', 'demo/train', '--out', 'x', '--val-split', '0.1', '--val', 'demo/val'], /either --val .* or --val-split/],
    [['prepare', '--train', 'demo/train', '--out', 'x', '--batch-size', '0'], /Expected an integer between 1 and 1048576 for --batch-size but received 0\n/],
    [['prepare', '--train', 'demo/train', '--out', 'demo'], /demo exists and is not a complete prepare output/],
  ];
  for (const [args, message] of cases) {
    const r = cli(args);
    assert.equal(r.status, 2, `${args.join(' ')}\n${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});
