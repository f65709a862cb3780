import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { hashIdentity, differingFields, resolveConfig } from '@alexnet-stream/trainer-multigpu';
import { launchLocalWorkers, localWorkerCount, makeTrainWorker, workerIdentity } from './multi-worker';

describe('multi-worker CLI helpers', () => {
  it('launches one worker per device, or --workers on one device; refuses a mismatch', () => {
    assert.equal(localWorkerCount(resolveConfig({}), undefined), 1);
    assert.equal(localWorkerCount(resolveConfig({ devices: ['cpu', 'cpu'] }), undefined), 2);
    assert.equal(localWorkerCount(resolveConfig({}), 3), 3);
    assert.throws(() => localWorkerCount(resolveConfig({ devices: ['cuda:0', 'cuda:1'] }), 3), /--workers 3 but --devices lists 2 devices/);
  });

  it('compares what must agree, not what may differ per worker (devices, threads, paths)', () => {
    const a = resolveConfig({ devices: ['cuda:0'], intra_op_threads: 4, weights_dir: '/a', data_dir: '/data-a', batch_size: 64 });
    const b = resolveConfig({ devices: ['cuda:1'], intra_op_threads: 8, weights_dir: '/b', data_dir: '/data-b', batch_size: 64 });
    assert.deepEqual(differingFields(hashIdentity(workerIdentity(a)), hashIdentity(workerIdentity(b))), []);
    const c = resolveConfig({ batch_size: 32 });
    assert.deepEqual(differingFields(hashIdentity(workerIdentity(a)), hashIdentity(workerIdentity(c))), ['config']);
    const d = resolveConfig({ batch_size: 64, preset: 'torchvision-alexnet' });
    assert.ok(differingFields(hashIdentity(workerIdentity(a)), hashIdentity(workerIdentity(d))).includes('modelSpec'));
  });

  it('gives each local worker its device and its share of the cores', () => {
    const w = makeTrainWorker({ rank: 1, worldSize: 2, coordinator: 'ipc:///tmp/x', device: 'cuda:1', localWorldSize: 2, onFatal: () => undefined });
    assert.equal(w.quiet, true);
    const config = w.adjust(resolveConfig({ devices: ['cuda:0', 'cuda:1'] }));
    assert.deepEqual(config.devices, ['cuda:1']);
    assert.ok(config.intra_op_threads >= 1);
    assert.equal(w.adjust(resolveConfig({ intra_op_threads: 3 })).intra_op_threads, 3, 'an explicit thread count is kept');
  });

  it('starts the workers with the training allocator settings, keeping a variable the environment sets', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'workers-env-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    // A stand-in for the CLI: each "worker" writes the allocator variables it was started with.
    const bin = join(dir, 'fake-cli.js');
    writeFileSync(
      bin,
      `const rank = process.argv[process.argv.indexOf('--rank') + 1];
require('node:fs').writeFileSync(${JSON.stringify(dir)} + '/env-' + rank + '.json', JSON.stringify({
  GLIBC_TUNABLES: process.env.GLIBC_TUNABLES, MALLOC_MMAP_MAX_: process.env.MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_: process.env.MALLOC_TRIM_THRESHOLD_ }));`,
    );
    const saved = process.env.MALLOC_TRIM_THRESHOLD_;
    process.env.MALLOC_TRIM_THRESHOLD_ = '123';
    try {
      assert.equal(await launchLocalWorkers({ workers: 2, devices: ['cpu'], trainArgs: [], binPath: bin }), 0);
    } finally {
      if (saved === undefined) delete process.env.MALLOC_TRIM_THRESHOLD_;
      else process.env.MALLOC_TRIM_THRESHOLD_ = saved;
    }
    for (const rank of [0, 1]) {
      assert.deepEqual(JSON.parse(readFileSync(join(dir, `env-${rank}.json`), 'utf8')), {
        GLIBC_TUNABLES: process.env.GLIBC_TUNABLES ?? 'glibc.malloc.hugetlb=1',
        MALLOC_MMAP_MAX_: process.env.MALLOC_MMAP_MAX_ ?? '0',
        MALLOC_TRIM_THRESHOLD_: '123',
      });
    }
  });
});
