/**
 * The batcher's policy with a fake worker pool (no onnxruntime): what goes into each run, when,
 * and how results are split back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Batcher, type BatchItem, type ItemResult, ModelVersion } from './batcher';
import type { InferencePool, RunResult, WorkerSlot } from './inference-pool';
import type { ModelDescription } from './model-description';

const description = {
  name: 'm',
  input: { name: 'data', datatype: 'FP32', shape: [-1, 2] },
  inputLength: 2,
} as unknown as ModelDescription;

/** A pool of `size` fake workers; each run answers out[i] = [sum of row i, 10 * rowIndexInBatch] when `finish` is called. */
class FakePool {
  readonly slots: (WorkerSlot & { busy: boolean })[];
  readonly runs: { slot: number; n: number; rows: number[][]; finish: () => void }[] = [];
  onIdle: () => void = () => undefined;
  constructor(size: number) {
    this.slots = Array.from({ length: size }, (_, index) => ({ index, busy: false }) as unknown as WorkerSlot & { busy: boolean });
  }
  idleSlots() {
    return this.slots.filter((s) => !s.busy);
  }
  run(slot: WorkerSlot & { busy: boolean }, _version: number, input: ArrayBuffer, n: number): Promise<RunResult> {
    slot.busy = true;
    const x = new Float32Array(input, 0, 2 * n);
    const rows = Array.from({ length: n }, (_, i) => [x[2 * i], x[2 * i + 1]]);
    return new Promise((resolve) => {
      this.runs.push({
        slot: slot.index,
        n,
        rows,
        finish: () => {
          slot.busy = false;
          const out = new Float32Array(2 * n);
          rows.forEach((r, i) => {
            out[2 * i] = r[0] + r[1];
            out[2 * i + 1] = 10 * i;
          });
          resolve({ outputs: new Map([['y', out]]), input, ms: 1 });
          queueMicrotask(() => this.onIdle());
        },
      });
    });
  }
}

function item(values: number[], deadlineMs = 60_000): { item: BatchItem; result: Promise<ItemResult> } {
  let resolve!: (r: ItemResult) => void;
  let reject!: (e: Error) => void;
  const result = new Promise<ItemResult>((a, b) => {
    resolve = a;
    reject = b;
  });
  const data = new Float32Array(values);
  return {
    item: { n: values.length / 2, data: new Uint8Array(data.buffer), outputs: ['y'], deadline: performance.now() + deadlineMs, resolve, reject },
    result,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function setup(workers: number, maxBatch: number, maxQueueDelayMs: number) {
  const pool = new FakePool(workers);
  const batcher = new Batcher(pool as unknown as InferencePool, { maxBatch, maxQueueDelayMs, timeoutMs: 1000 });
  pool.onIdle = () => batcher.pump();
  const version = new ModelVersion(1, 1, description, new Date());
  version.preparing = 1; // another request is on its way: the delay applies
  batcher.add(version);
  return { pool, batcher, version };
}

test('requests wait for the queue delay, then run as one batch; each gets its own rows back', async () => {
  const { pool, batcher, version } = setup(1, 8, 30);
  const a = item([1, 2]);
  const b = item([3, 4, 5, 6]); // two rows
  batcher.enqueue(version, a.item);
  batcher.enqueue(version, b.item);
  assert.equal(pool.runs.length, 0, 'waits for company');
  await sleep(60);
  assert.equal(pool.runs.length, 1);
  assert.deepEqual(pool.runs[0].rows, [
    [1, 2],
    [3, 4],
    [5, 6],
  ]);
  pool.runs[0].finish();
  const [ra, rb] = await Promise.all([a.result, b.result]);
  assert.deepEqual(Array.from(ra.outputs.get('y')!), [3, 0]);
  assert.deepEqual(Array.from(rb.outputs.get('y')!), [7, 10, 11, 20]);
  assert.equal(ra.batchSize, 3);
  assert.ok(ra.queueMs >= 25, `queued ${ra.queueMs} ms`);
  batcher.close();
});

test('a full batch goes at once; the rest waits for the next idle worker; never more than maxBatch', async () => {
  const { pool, batcher, version } = setup(1, 4, 10_000);
  const items = Array.from({ length: 6 }, (_, i) => item([i, i]));
  for (const it of items) batcher.enqueue(version, it.item);
  assert.equal(pool.runs.length, 1, 'four queued: no waiting for the delay');
  assert.equal(pool.runs[0].n, 4);
  pool.runs[0].finish();
  await sleep(5);
  assert.equal(pool.runs.length, 1, 'two left, below maxBatch: they wait for the delay');
  batcher.flushing = true; // draining: no more waiting
  batcher.pump();
  assert.equal(pool.runs.length, 2);
  assert.equal(pool.runs[1].n, 2);
  pool.runs[1].finish();
  await Promise.all(items.map((i) => i.result));
  batcher.close();
});

test('with several idle workers the queue is shared out among them', async () => {
  // A delay no loaded machine reaches while the loop enqueues; then dispatch as a drain does.
  const { pool, batcher, version } = setup(2, 32, 60_000);
  for (let i = 0; i < 10; i++) batcher.enqueue(version, item([i, 0]).item);
  assert.equal(pool.runs.length, 0);
  batcher.flushing = true;
  batcher.pump();
  assert.deepEqual(
    pool.runs.map((r) => [r.slot, r.n]),
    [
      [0, 5],
      [1, 5],
    ],
  );
  for (const r of pool.runs) r.finish();
  batcher.close();
});

test('a request still queued at its deadline is rejected with 503; a cancelled one never runs', async () => {
  const { pool, batcher, version } = setup(1, 8, 10_000);
  const late = item([1, 1], 20);
  const gone = item([2, 2]);
  batcher.enqueue(version, late.item);
  batcher.enqueue(version, gone.item);
  assert.equal(batcher.cancel(version, gone.item), true);
  assert.equal(version.queuedImages, 1);
  await assert.rejects(
    late.result,
    (err: Error & { statusCode?: number }) => err.statusCode === 503 && /still queued 1000 ms after it arrived/.test(err.message),
  );
  assert.equal(version.queuedImages, 0);
  batcher.flushing = true;
  batcher.pump();
  assert.equal(pool.runs.length, 0, 'nothing left to run');
  batcher.close();
});

test('a version in use is unloaded only after its last request', () => {
  const version = new ModelVersion(1, 1, description, new Date());
  let drained = 0;
  version.acquire();
  version.acquire();
  version.retire(() => drained++);
  assert.equal(drained, 0);
  version.release();
  assert.equal(drained, 0);
  version.release();
  assert.equal(drained, 1);
});

test('a lone request with nobody else on the way runs at once; with one on the way it waits for the delay', async () => {
  const { pool, batcher, version } = setup(1, 8, 10_000);
  version.preparing = 0;
  const a = item([1, 1]);
  batcher.enqueue(version, a.item);
  assert.equal(pool.runs.length, 1, 'no waiting: nobody to wait for');
  pool.runs[0].finish();
  await a.result;
  version.preparing = 1;
  batcher.enqueue(version, item([2, 2]).item);
  await sleep(20);
  assert.equal(pool.runs.length, 1, 'waits: another request is being prepared');
  version.preparing = 0;
  batcher.pump();
  assert.equal(pool.runs.length, 2, 'runs once the other arrived (or gave up)');
  pool.runs[1].finish();
  batcher.close();
});
