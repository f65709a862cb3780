import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageError } from '@alexnet-stream/core';
import { differingFields, hashIdentity } from './identity';
import { parseEndpoint, resolveLaunch, threadsPerWorker } from './launch-env';

describe('resolveLaunch', () => {
  it('takes flags over the environment', () => {
    const l = resolveLaunch({ rank: 1, worldSize: 4, coordinator: 'tcp://10.0.0.1:5555' }, { OMPI_COMM_WORLD_RANK: '3', OMPI_COMM_WORLD_SIZE: '8' });
    assert.deepEqual([l.rank, l.worldSize, l.coordinator, l.source.rank], [1, 4, 'tcp://10.0.0.1:5555', 'rank']);
  });
  it('reads OpenMPI, then Slurm; the coordinator from ALEXNET_STREAM_COORDINATOR or MASTER_ADDR/PORT', () => {
    const mpi = resolveLaunch(
      {},
      { OMPI_COMM_WORLD_RANK: '1', OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_LOCAL_SIZE: '2', ALEXNET_STREAM_COORDINATOR: 'ipc:///tmp/x' },
    );
    assert.deepEqual([mpi.rank, mpi.worldSize, mpi.localWorldSize, mpi.source.rank, mpi.coordinator], [1, 2, 2, 'OMPI_COMM_WORLD_RANK', 'ipc:///tmp/x']);
    const slurm = resolveLaunch({}, { SLURM_PROCID: '5', SLURM_NTASKS: '8', MASTER_ADDR: 'node01', MASTER_PORT: '29500' });
    assert.deepEqual([slurm.rank, slurm.worldSize, slurm.coordinator], [5, 8, 'tcp://node01:29500']);
  });
  it('refuses what is missing or inconsistent, naming where it came from', () => {
    assert.throws(() => resolveLaunch({ worldSize: 2, coordinator: 'tcp://h:1' }, {}), /No rank: pass rank /);
    // The CLI names its flags in the same message.
    assert.throws(() => {
      try {
        resolveLaunch({ worldSize: 2, coordinator: 'tcp://h:1' }, {});
      } catch (err) {
        throw (err as UsageError).renamed((p) => `--${p}`);
      }
    }, /No rank: pass --rank /);
    assert.throws(() => resolveLaunch({ rank: 0, worldSize: 2 }, {}), /No coordinator/);
    assert.throws(
      () => resolveLaunch({}, { SLURM_PROCID: '2', SLURM_NTASKS: '2', MASTER_ADDR: 'h', MASTER_PORT: '1' }),
      /Rank 2 \(from SLURM_PROCID\) must be below the world size 2 \(from SLURM_NTASKS\)/,
    );
    assert.throws(() => resolveLaunch({}, { OMPI_COMM_WORLD_RANK: 'x', OMPI_COMM_WORLD_SIZE: '2' }), UsageError);
  });
  it('parses endpoints', () => {
    assert.deepEqual(parseEndpoint('tcp://127.0.0.1:5555'), { transport: 'tcp', host: '127.0.0.1', port: 5555 });
    assert.deepEqual(parseEndpoint('ipc:///tmp/a b'), { transport: 'ipc', path: '/tmp/a b' });
    assert.throws(() => parseEndpoint('tcp://host'), /Expected tcp:\/\/HOST:PORT/);
    assert.throws(() => parseEndpoint('tcp://host:70000'), UsageError);
    assert.throws(() => parseEndpoint('http://x:1'), UsageError);
  });
  it('splits the cores between local workers', () => {
    assert.equal(threadsPerWorker(2, 2), 1);
    assert.equal(threadsPerWorker(16, 3), 5);
    assert.equal(threadsPerWorker(2, 4), 1);
  });
});

describe('identity hashes', () => {
  it('ignore key order and name the fields that differ', () => {
    const a = hashIdentity({ config: { lr: 0.01, batch: 128 }, modelSpec: { layers: [1, 2] } });
    const b = hashIdentity({ modelSpec: { layers: [1, 2] }, config: { batch: 128, lr: 0.01 } });
    assert.deepEqual(a, b);
    const c = hashIdentity({ config: { lr: 0.02, batch: 128 }, modelSpec: { layers: [1, 2] }, extra: 1 });
    assert.deepEqual(differingFields(a, c), ['config', 'extra']);
  });
});
