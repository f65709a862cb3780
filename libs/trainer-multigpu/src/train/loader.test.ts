import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng } from '@alexnet-stream/core';
import { cropMirrorSubtract, planCrops, readMeanNpy, readShard, readShardIndex, shardSet, type ShardSetEntry } from '@alexnet-stream/stream-io';
import { writeFixtureDataDir } from './fixtures.test-util';
import { type BatchStream, InlineLoader, type LoadedBatch, ThreadedLoader } from './loader';
import { type LoaderSetup, planEpoch } from './loader-core';

async function withData(
  fn: (dir: string, train: ShardSetEntry, val: ShardSetEntry) => Promise<void>,
  options: { batchesPerShard?: number } = {},
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'loader-'));
  try {
    // 4 classes x 10 train images in stored batches of 8 (last one partial: 40 = 5 x 8), 12 val images.
    await writeFixtureDataDir({ dir, classes: 4, trainPerClass: 10, valPerClass: 3, size: 40, batchSize: 8, batchesPerShard: options.batchesPerShard });
    const index = await readShardIndex(dir);
    await fn(dir, shardSet(index, 'train', dir), shardSet(index, 'val', dir));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function setupFor(dir: string, train: ShardSetEntry, val: ShardSetEntry, over: Partial<LoaderSetup> = {}): LoaderSetup {
  return {
    dir,
    meanFile: join(dir, 'mean.npy'),
    sets: { train, val },
    batchSize: 6,
    crop: 35,
    seed: 11,
    shuffle: true,
    randCrop: true,
    perBatch: false,
    rank: 0,
    worldSize: 1,
    verify: true,
    queueDepth: 3,
    ...over,
  };
}

async function drain(stream: BatchStream): Promise<Array<{ index: number; size: number; data: Float32Array; labels: Int32Array }>> {
  const out = [];
  for (;;) {
    const b = await stream.next();
    if (!b) return out;
    out.push({ index: b.index, size: b.size, data: b.data.slice(), labels: b.labels.slice() });
    stream.release(b);
  }
}

test('planEpoch: each epoch is a permutation of the stored batches, fixed by (seed, epoch); ranks split the batches', async () => {
  await withData(async (_dir, train) => {
    const p1 = planEpoch(train, { seed: 3, epoch: 1, shuffle: true, batchSize: 6, dropLast: true });
    const again = planEpoch(train, { seed: 3, epoch: 1, shuffle: true, batchSize: 6, dropLast: true });
    const p2 = planEpoch(train, { seed: 3, epoch: 2, shuffle: true, batchSize: 6, dropLast: true });
    assert.deepEqual(p1.sources, again.sources);
    assert.notDeepEqual(p1.sources, p2.sources, 'another epoch, another order');
    const key = (s: { shard: number; batch: number }) => `${s.shard}/${s.batch}`;
    assert.deepEqual(p1.sources.map(key).sort(), p2.sources.map(key).sort());
    assert.equal(p1.totalImages, 40);
    assert.equal(p1.iterations, 6, 'floor(40 / 6): the incomplete last batch is dropped in training');
    const val = planEpoch(train, { seed: 3, epoch: 1, shuffle: false, batchSize: 6, dropLast: false });
    assert.equal(val.iterations, 7, 'validation keeps the last partial batch');
    const r0 = planEpoch(train, { seed: 3, epoch: 1, shuffle: true, batchSize: 6, dropLast: true, rank: 0, worldSize: 2 });
    const r1 = planEpoch(train, { seed: 3, epoch: 1, shuffle: true, batchSize: 6, dropLast: true, rank: 1, worldSize: 2 });
    assert.equal(r0.iterations, 3);
    assert.equal(r1.iterations, 3);
  });
});

test('the worker thread gives bit-identical batches to the inline loader, and starting mid-epoch gives the same suffix', async () => {
  await withData(async (dir, train, val) => {
    const setup = setupFor(dir, train, val);
    const threaded = new ThreadedLoader(setup);
    const inline = new InlineLoader(setup);
    try {
      const a = await drain(threaded.open({ prefix: 'train', epoch: 2, startIteration: 0, train: true }));
      const b = await drain(inline.open({ prefix: 'train', epoch: 2, startIteration: 0, train: true }));
      assert.equal(a.length, 6);
      assert.deepEqual(a, b);
      const suffix = await drain(threaded.open({ prefix: 'train', epoch: 2, startIteration: 4, train: true }));
      assert.deepEqual(suffix, a.slice(4), 'resume at iteration 4 of epoch 2 = the uninterrupted epoch from there');
      const e3 = await drain(threaded.open({ prefix: 'train', epoch: 3, startIteration: 0, train: true }));
      assert.notDeepEqual(
        e3.map((x) => x.data),
        a.map((x) => x.data),
        'epoch 3 differs (order and crops)',
      );
      // Re-batching: every training image is one of the 40, each label count matches the data.
      const labels = a.flatMap((x) => [...x.labels]);
      assert.equal(labels.length, 36);
    } finally {
      await threaded.close();
    }
  });
});

test('validation batches are center crops of the stored images minus the mean, in stored order, all images once', async () => {
  await withData(async (dir, train, val) => {
    const loader = new ThreadedLoader(setupFor(dir, train, val, { batchSize: 4 }));
    try {
      const got = await drain(loader.open({ prefix: 'val', epoch: 1, startIteration: 0, train: false }));
      assert.deepEqual(
        got.map((b) => b.size),
        [4, 4, 4],
      );
      // Independent computation of the first 4 val images: stored batch 0 holds val images 0..7.
      const mean = await readMeanNpy(join(dir, 'mean.npy'));
      const shard = await readShard(dir, val, val.shards[0]);
      const first = shard.batches[0];
      const four = {
        ...first,
        shape: [4, 3, 40, 40] as [number, number, number, number],
        data: (first.data as Uint8Array).subarray(0, 4 * 3 * 40 * 40),
        labels: first.labels.subarray(0, 4),
      };
      const expected = cropMirrorSubtract(four, mean, planCrops(4, { crop: 35, height: 40, width: 40, center: true }, new Rng(0)));
      assert.deepEqual(got[0].data, expected);
      assert.deepEqual([...got[0].labels], [...first.labels.subarray(0, 4)]);
      assert.deepEqual(got.flatMap((b) => [...b.labels]).sort(), [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
    } finally {
      await loader.close();
    }
  });
});

test('the queue is bounded: with queue_depth 2 and nothing released, a third batch never arrives; releasing one lets it come', async () => {
  await withData(async (dir, train, val) => {
    const loader = new ThreadedLoader(setupFor(dir, train, val, { queueDepth: 2 }));
    try {
      const stream = loader.open({ prefix: 'train', epoch: 1, startIteration: 0, train: true });
      const first = (await stream.next())!;
      const second = (await stream.next())!;
      assert.equal(first.data.buffer !== second.data.buffer, true);
      const box: { third?: LoadedBatch | null } = {};
      const pending = stream.next().then((b) => (box.third = b));
      // The loader thread says when it finds no free buffer: from then on it cannot make a third
      // batch until one comes back (no sleep that the producer might simply not have used).
      // (The timer only turns a loader that never waits into a failure instead of a hang.)
      let timer: NodeJS.Timeout | undefined;
      const never = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('the loader thread never waited for a free buffer: the queue is not bounded')), 20_000);
      });
      await Promise.race([loader.stalled(1), never]).finally(() => clearTimeout(timer));
      assert.equal(box.third, undefined, 'the worker waits for a free buffer');
      assert.equal(loader.stalls, 1);
      stream.release(first);
      assert.equal(first.data.byteLength, 0, 'the buffer was transferred back (zero copy)');
      const third = await pending;
      assert.equal(third?.index, 2);
      stream.release(second);
      stream.release(third!);
      stream.cancel();
    } finally {
      await loader.close();
    }
  });
});

test('a damaged shard is an InputError naming the file, raised from next()', async () => {
  await withData(async (dir, train, val) => {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(dir, train.shards[0].file), 'garbage');
    const loader = new ThreadedLoader(setupFor(dir, train, val, { shuffle: false }));
    try {
      const stream = loader.open({ prefix: 'train', epoch: 1, startIteration: 0, train: true });
      await assert.rejects(
        () => drain(stream),
        (err: Error & { exitCode?: number }) => {
          assert.match(err.message, /train-00000\.msgpack/);
          assert.equal(err.exitCode, 2);
          return true;
        },
      );
    } finally {
      await loader.close();
    }
  });
});
