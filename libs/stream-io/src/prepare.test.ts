import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { readMeanNpy } from './mean';
import { formatPrepareSummary, prepareDataDir, type PrepareOptions, splitForValidation } from './prepare';
import { readShard } from './shard-reader';
import { readShardIndex, shardSet } from './shards';

/** A tiny class-folder dataset: `perClass` solid-colour PNGs per class (colour = f(class, index)). */
async function makeDataset(root: string, classes: string[], perClass: number): Promise<void> {
  for (let c = 0; c < classes.length; c++) {
    await mkdir(join(root, classes[c]), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const png = await sharp({ create: { width: 12, height: 10, channels: 3, background: { r: 40 * c, g: 10 * i, b: 200 } } })
        .png()
        .toBuffer();
      await writeFile(join(root, classes[c], `${i}.png`), png);
    }
  }
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'prepare-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('splitForValidation: deterministic, disjoint, covers everything, at least one each side', () => {
  const items = Array.from({ length: 50 }, (_, i) => i);
  const a = splitForValidation(items, 0.2, 7);
  assert.deepEqual(a, splitForValidation(items, 0.2, 7));
  assert.equal(a.val.length, 10);
  assert.deepEqual(
    [...a.train, ...a.val].sort((x, y) => x - y),
    items,
  );
  assert.notDeepEqual(a.val, splitForValidation(items, 0.2, 8).val);
  assert.equal(splitForValidation([1, 2], 0.01, 0).val.length, 1);
  assert.equal(splitForValidation([1, 2], 0.99, 0).train.length, 1);
  assert.throws(() => splitForValidation(items, 1, 0), /Expected a number in \(0, 1\) for valSplit but received 1/);
});

test('prepare writes train/val shards, the train mean, classes.txt and a manifest; a rerun says it is complete', () =>
  withDir(async (dir) => {
    await makeDataset(join(dir, 'train'), ['a', 'b', 'c'], 5);
    await writeFile(join(dir, 'train', 'b', 'broken.png'), 'not a png');
    const skipped: string[] = [];
    const options: PrepareOptions = {
      train: join(dir, 'train'),
      valSplit: 0.2,
      out: join(dir, 'data'),
      batchSize: 4,
      size: 8,
      seed: 3,
      fsync: false,
      concurrency: 2,
      onSkip: (key) => skipped.push(key),
    };
    const result = await prepareDataDir(options);
    assert.equal(result.alreadyComplete, false);
    assert.deepEqual(skipped, ['b/broken.png']);
    const m = result.manifest;
    assert.equal(m.train.images + m.val!.images + m.train.skipped + m.val!.skipped, 16);
    assert.equal(m.val!.images + m.val!.skipped, 3); // round(16 * 0.2)
    assert.deepEqual((await readdir(join(dir, 'data'))).filter((n) => !n.endsWith('.msgpack')).sort(), [
      'classes.txt',
      'index.json',
      'mean.npy',
      'prepare.json',
    ]);
    assert.equal(await readFile(join(dir, 'data', 'classes.txt'), 'utf8'), 'a\nb\nc\n');
    assert.ok(!(await readdir(dir)).includes('data.partial'));

    const index = await readShardIndex(join(dir, 'data'));
    const train = shardSet(index, 'train', dir);
    assert.deepEqual(train.classNames, ['a', 'b', 'c']);
    assert.deepEqual(train.imageShape, [3, 8, 8]);
    // The mean equals the mean of exactly the training images that went into the shards.
    const sum = new Float64Array(3 * 64);
    const keys: string[] = [];
    for (const file of train.shards) {
      for (const b of (await readShard(join(dir, 'data'), train, file)).batches) {
        keys.push(...b.keys);
        for (let i = 0; i < b.data.length; i++) sum[i % sum.length] += b.data[i];
      }
    }
    const mean = await readMeanNpy(join(dir, 'data', 'mean.npy'));
    assert.deepEqual(
      Array.from(mean.data),
      Array.from(sum, (s) => Math.fround(s / train.images)),
    );
    // shuffled: not in folder order
    assert.notDeepEqual(keys, [...keys].sort());
    assert.equal(shardSet(index, 'val', dir).images, m.val!.images);

    const again = await prepareDataDir(options);
    assert.equal(again.alreadyComplete, true);
    assert.match(formatPrepareSummary(again), /is already complete .*nothing to do \(--force rebuilds it\)/);
    const forced = await prepareDataDir({ ...options, force: true });
    assert.equal(forced.alreadyComplete, false);
    assert.deepEqual(forced.manifest.train, m.train, 'same seed, same result');
  }));

test('an interrupted run (a marked .partial dir) is cleared and redone; foreign dirs are never removed', () =>
  withDir(async (dir) => {
    await makeDataset(join(dir, 'train'), ['a', 'b'], 3);
    const out = join(dir, 'data');
    await mkdir(`${out}.partial`);
    await writeFile(join(`${out}.partial`, '.prepare-partial'), '123\n');
    await writeFile(join(`${out}.partial`, 'train-00000.msgpack'), 'half');
    const notices: string[] = [];
    const result = await prepareDataDir({ train: join(dir, 'train'), out, batchSize: 2, size: 4, fsync: false, onNotice: (n) => notices.push(n) });
    assert.equal(result.manifest.train.images, 6);
    assert.equal(result.manifest.val, undefined);
    assert.match(notices.join('\n'), /left by an interrupted run; starting over/);
    assert.ok(!(await readdir(out)).includes('.prepare-partial'));

    const foreign = join(dir, 'mine');
    await mkdir(`${foreign}.partial`);
    await assert.rejects(prepareDataDir({ train: join(dir, 'train'), out: foreign, fsync: false }), /mine\.partial exists but was not made by prepare/);
    await mkdir(foreign);
    await assert.rejects(prepareDataDir({ train: join(dir, 'train'), out: foreign, fsync: false }), /mine exists and is not a complete prepare output/);
  }));

test('--val as class folders: labels by the same class names; different classes are refused', () =>
  withDir(async (dir) => {
    await makeDataset(join(dir, 'train'), ['a', 'b'], 3);
    await makeDataset(join(dir, 'val'), ['a', 'b'], 1);
    const result = await prepareDataDir({ train: join(dir, 'train'), val: join(dir, 'val'), out: join(dir, 'data'), batchSize: 4, size: 4, fsync: false });
    assert.equal(result.manifest.val!.images, 2);
    const index = await readShardIndex(join(dir, 'data'));
    const val = shardSet(index, 'val', dir);
    const [batch] = (await readShard(join(dir, 'data'), val, val.shards[0])).batches;
    assert.deepEqual(batch.keys, ['a/0.png', 'b/0.png']);
    assert.deepEqual(Array.from(batch.labels), [0, 1]);
    await makeDataset(join(dir, 'val2'), ['a', 'c'], 1);
    await assert.rejects(
      prepareDataDir({ train: join(dir, 'train'), val: join(dir, 'val2'), out: join(dir, 'data2'), fsync: false }),
      /val2: its class folders \(2\) differ from .*train's \(2\); labels would not match/,
    );
  }));

test('bad options, a missing or empty dataset are clear errors (exit code 2)', () =>
  withDir(async (dir) => {
    const out = join(dir, 'data');
    await assert.rejects(prepareDataDir({ train: join(dir, 'nope'), out }), (e: Error & { exitCode?: number }) => e.exitCode === 2 && /nope/.test(e.message));
    await mkdir(join(dir, 'empty', 'a'), { recursive: true });
    await assert.rejects(prepareDataDir({ train: join(dir, 'empty'), out }), /no images found in its 1 class folders/);
    await assert.rejects(prepareDataDir({ train: dir, out, batchSize: 0 }), /Expected an integer between 1 and 1048576 for batchSize but received 0/);
    await assert.rejects(prepareDataDir({ train: dir, out, valSplit: 0.1, val: dir }), /either val \(with valList\) or valSplit, not both/);
    await assert.rejects(prepareDataDir({ train: dir, out, valList: 'x.txt' }), /valList needs val, the folder its paths are relative to/);
    await writeFile(join(dir, 'empty', 'a', 'x.png'), 'broken');
    await assert.rejects(prepareDataDir({ train: join(dir, 'empty'), out, fsync: false }), /train: none of the 1 images could be decoded/);
  }));
