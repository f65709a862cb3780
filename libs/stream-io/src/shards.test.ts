import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BatchStage } from './batch';
import { type ImageRecord, type BatchRecord, type DataRecord, makeHeader, type StreamRecord, wholeStream } from './records';
import { planShardOrder, readShard, ShardReader } from './shard-reader';
import { ShardWriter, type ShardWriterOptions } from './shard-writer';
import { readShardIndex, shardSet, updateShardIndex } from './shards';

function images(count: number, start = 0): ImageRecord[] {
  return Array.from({ length: count }, (_, k) => {
    const i = start + k;
    return { type: 'image', key: `img${i}`, label: i % 4, channels: 3, height: 2, width: 3, data: new Uint8Array(18).map((_, j) => (i * 7 + j) & 255) };
  });
}

/** A whole image stream: `records` after a header (their own first record, if it is one), a trailer last. */
function whole(records: StreamRecord[]): Iterable<StreamRecord> {
  const [first, ...rest] = records;
  return first?.type === 'header' ? wholeStream(first, rest as DataRecord[]) : wholeStream(makeHeader('image'), records as DataRecord[]);
}

async function writeShards(dir: string, records: StreamRecord[], batchSize: number, options: Partial<ShardWriterOptions> = {}): Promise<ShardWriter> {
  const writer = new ShardWriter({ dir, prefix: 'train', batchSize, fsync: false, ...options });
  await pipeline(Readable.from(whole(records)), new BatchStage({ batchSize }), writer);
  return writer;
}

async function readAll(reader: ShardReader): Promise<StreamRecord[]> {
  const out: StreamRecord[] = [];
  await pipeline(
    reader,
    new Writable({
      objectMode: true,
      write(r, _e, cb) {
        out.push(r);
        cb();
      },
    }),
  );
  return out;
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'shards-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('write → read gives identical batches; index lists counts, shape, classes, checksums', () =>
  withDir(async (dir) => {
    const source = images(11);
    const writer = await writeShards(dir, [makeHeader('image', { classNames: ['a', 'b', 'c', 'd'] }), ...source], 4, { batchesPerShard: 2 });
    assert.deepEqual((await readdir(dir)).sort(), ['index.json', 'train-00000.msgpack', 'train-00001.msgpack']);
    const index = await readShardIndex(dir);
    const set = shardSet(index, 'train', dir);
    assert.deepEqual(set, writer.entry);
    assert.equal(set.images, 11);
    assert.equal(set.batches, 3);
    assert.equal(set.partialBatches, 1);
    assert.equal(set.batchSize, 4);
    assert.deepEqual(set.imageShape, [3, 2, 3]);
    assert.equal(set.labelCount, 4);
    assert.deepEqual(
      set.shards.map((s) => [s.file, s.batches, s.images]),
      [
        ['train-00000.msgpack', 2, 8],
        ['train-00001.msgpack', 1, 3],
      ],
    );
    assert.match(set.shards[0].sha256, /^[0-9a-f]{64}$/);

    const out = await readAll(new ShardReader({ dir, prefix: 'train' }));
    assert.equal(out[0].type, 'header');
    assert.deepEqual((out[0] as { classNames: string[] }).classNames, ['a', 'b', 'c', 'd']);
    const batches = out.slice(1, -1) as BatchRecord[];
    assert.deepEqual(out[out.length - 1], { type: 'trailer', records: 3, images: 11, skipped: 0, producer: 'alexnet-stream read' });
    const keys = batches.flatMap((b) => b.keys);
    assert.deepEqual(
      keys,
      source.map((s) => s.key),
    );
    const pixels = Buffer.concat(batches.map((b) => Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength)));
    assert.deepEqual(pixels, Buffer.concat(source.map((s) => Buffer.from(s.data))));
    assert.deepEqual(
      batches.flatMap((b) => Array.from(b.labels)),
      source.map((s) => s.label),
    );
    assert.equal(batches[2].partial, true);
  }));

test("the writer announces each batch once written ('written'), so its buffer can be reused", () =>
  withDir(async (dir) => {
    const stage = new BatchStage({ batchSize: 4 });
    const writer = new ShardWriter({ dir, prefix: 'train', batchSize: 4, fsync: false });
    const written: BatchRecord[] = [];
    writer.on('written', (b: BatchRecord) => {
      written.push(b);
      stage.assembler.recycle(b.data);
    });
    const source = images(13);
    await pipeline(Readable.from(whole(source)), stage, writer);
    assert.deepEqual(
      written.map((b) => b.keys[0]),
      ['img0', 'img4', 'img8', 'img12'],
    );
    // recycled buffers were overwritten only after their batch was in its file
    const out = await readAll(new ShardReader({ dir, prefix: 'train' }));
    const pixels = Buffer.concat((out.slice(1, -1) as BatchRecord[]).map((b) => Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength)));
    assert.deepEqual(pixels, Buffer.concat(source.map((s) => Buffer.from(s.data))));
  }));

test('the same input gives byte-identical shards', () =>
  withDir(async (dir) => {
    await writeShards(join(dir, 'a'), images(9), 4);
    await writeShards(join(dir, 'b'), images(9), 4);
    for (const name of ['train-00000.msgpack', 'train-00001.msgpack', 'train-00002.msgpack']) {
      assert.deepEqual(await readFile(join(dir, 'a', name)), await readFile(join(dir, 'b', name)));
    }
  }));

test('train and val prefixes coexist in one directory; rewriting one keeps the other', () =>
  withDir(async (dir) => {
    await writeShards(dir, images(8), 4);
    await writeShards(dir, images(3, 100), 4, { prefix: 'val' });
    await writeShards(dir, images(4), 4); // rewrite train with fewer shards: the stale one goes
    const index = await readShardIndex(dir);
    assert.deepEqual(Object.keys(index.prefixes).sort(), ['train', 'val']);
    assert.deepEqual((await readdir(dir)).sort(), ['index.json', 'train-00000.msgpack', 'val-00000.msgpack']);
    const val = await readAll(new ShardReader({ dir, prefix: 'val' }));
    assert.deepEqual((val[1] as BatchRecord).keys, ['img100', 'img101', 'img102']);
    await assert.rejects(readAll(new ShardReader({ dir, prefix: 'test' })), /no complete shard set with prefix "test" \(it has "train", "val"/);
  }));

test('concurrent index updates from several writers are all kept (lock file)', () =>
  withDir(async (dir) => {
    const entry = shardSet(
      await (async () => {
        await writeShards(dir, images(4), 4);
        return readShardIndex(dir);
      })(),
      'train',
      dir,
    );
    await Promise.all(Array.from({ length: 12 }, (_, i) => updateShardIndex(dir, `p${i}`, entry, { fsync: false })));
    const index = await readShardIndex(dir);
    assert.equal(Object.keys(index.prefixes).length, 13);
  }));

test('a killed writer leaves no index entry and no temp file; a leftover temp file is never read', () =>
  withDir(async (dir) => {
    await writeShards(dir, images(8), 4); // a complete earlier run
    // A rerun that dies after its first shard: its old entry is gone, nothing half-written stays.
    const writer = new ShardWriter({ dir, prefix: 'train', batchSize: 4, fsync: false });
    let written = 0;
    const failing = Readable.from(
      (async function* () {
        yield makeHeader('image');
        yield* images(5); // one whole batch reaches the writer (and becomes a shard) first
        if (written < 1) await once(writer, 'shard'); // the first shard is renamed: then the producer dies
        throw new Error('killed');
      })(),
    );
    writer.on('shard', () => (written += 1));
    await assert.rejects(pipeline(failing, new BatchStage({ batchSize: 4 }), writer), /killed/);
    if (!writer.closed) await new Promise((resolve) => writer.once('close', resolve)); // pipeline rejects before the writer's clean-up ends
    await assert.rejects(
      readShardIndex(dir).then((i) => shardSet(i, 'train', dir)),
      /no complete shard set with prefix "train".*interrupted writer leaves no entry/,
    );
    assert.ok(!(await readdir(dir)).some((n) => n.includes('.tmp-')), 'temp file removed');

    // A run that fails before its first shard is complete leaves the previous set whole.
    await writeShards(dir, images(4), 4);
    const early = Readable.from(
      (async function* () {
        yield makeHeader('image');
        yield* images(2);
        throw new Error('killed early');
      })(),
    );
    await assert.rejects(
      pipeline(early, new BatchStage({ batchSize: 4 }), new ShardWriter({ dir, prefix: 'train', batchSize: 4, fsync: false })),
      /killed early/,
    );
    assert.equal((await readAll(new ShardReader({ dir, prefix: 'train' }))).length, 3);

    // A producer that stops without an error but before its trailer (killed upstream): no entry, no shards.
    const fresh = join(dir, 'fresh');
    const cut = new ShardWriter({ dir: fresh, prefix: 'train', batchSize: 2, fsync: false });
    let renamed = 0;
    cut.on('shard', () => (renamed += 1));
    const slowly = Readable.from(
      (async function* () {
        yield makeHeader('image');
        for (const [i, image] of [...images(9)].entries()) {
          yield image;
          // After each whole batch, until its shard is renamed: the writer has renamed shards to remove.
          if (i % 2 === 1 && renamed < (i + 1) / 2) await once(cut, 'shard');
        }
      })(),
    );
    await assert.rejects(pipeline(slowly, new BatchStage({ batchSize: 2 }), cut), /ended after 9 records without its trailer/);
    if (!cut.closed) await new Promise((resolve) => cut.once('close', resolve));
    await assert.rejects(readShardIndex(fresh), /no index\.json/);
    assert.equal(renamed, 4, 'four shards were renamed before the input stopped short');
    assert.deepEqual(
      (await readdir(fresh)).filter((n) => !n.startsWith('.')),
      [],
      'the shards it renamed are removed',
    );

    // A temp file left by a process killed with SIGKILL (no cleanup) next to a complete set.
    await writeShards(dir, images(4), 4);
    await writeFile(join(dir, '.train-00001.msgpack.tmp-999999-abcd'), 'half a shard');
    const out = await readAll(new ShardReader({ dir, prefix: 'train' }));
    assert.equal(out.length, 3);
  }));

test('a corrupt or truncated shard is refused naming the file; --no-verify still catches truncation', () =>
  withDir(async (dir) => {
    await writeShards(dir, images(8), 4);
    const file = join(dir, 'train-00001.msgpack');
    const bytes = await readFile(file);
    bytes[bytes.length - 3] ^= 0xff;
    await writeFile(file, bytes);
    await assert.rejects(readAll(new ShardReader({ dir, prefix: 'train' })), /train-00001\.msgpack: sha256 checksum mismatch/);
    await truncate(file, bytes.length - 100);
    await assert.rejects(readAll(new ShardReader({ dir, prefix: 'train' })), /train-00001\.msgpack: \d+ bytes but the index says \d+: the shard is truncated/);
    await assert.rejects(readAll(new ShardReader({ dir, prefix: 'train', verify: false })), /train-00001\.msgpack: (truncated|corrupt) shard/);
    await rm(file);
    await assert.rejects(readAll(new ShardReader({ dir, prefix: 'train' })), /train-00001\.msgpack: cannot read shard \(missing/);
    await assert.rejects(readAll(new ShardReader({ dir: join(dir, 'nope'), prefix: 'train' })), /nope: no such directory/);
    await writeFile(join(dir, 'index.json'), '{"schema": "something/else"}');
    await assert.rejects(readShardIndex(dir), /not an alexnet-stream shard index/);
  }));

test('index.json entries are checked by the schema: the field, what was expected and what it holds; fields it does not describe survive a rewrite', () =>
  withDir(async (dir) => {
    await writeShards(dir, images(8), 4);
    const path = join(dir, 'index.json');
    const written = JSON.parse(await readFile(path, 'utf8')) as { prefixes: { train: Record<string, unknown> } };
    const lie = async (change: Partial<Record<string, unknown>>) => {
      await writeFile(path, JSON.stringify({ ...written, prefixes: { train: { ...written.prefixes.train, ...change } } }));
      return readShardIndex(dir);
    };
    const shards = written.prefixes.train.shards as Record<string, unknown>[];
    await assert.rejects(lie({ labelCount: -1 }), {
      code: 'ERR_SHARD_INDEX',
      message: `${path} prefix "train": expected an integer from 0 to 2147483648 for labelCount but received -1; the index is damaged or was not written by alexnet-stream`,
    });
    await assert.rejects(
      lie({ shards: [{ ...shards[0], sha256: 7 }, shards[1]] }),
      /expected a sha256 digest \(a string\) for shards\[0\]\.sha256 but received 7/,
    );
    await assert.rejects(
      lie({ shards: [{ ...shards[0], file: '.hidden' }, shards[1]] }),
      /expected a plain file name .* for shards\[0\]\.file but received "\.hidden"/,
    );
    await assert.rejects(lie({ imageShape: [3, 2] }), /expected \[C, H, W\] with sides from 1 to 16384 for imageShape but received \[3, 2\]/);
    await assert.rejects(lie({ dtype: undefined }), /prefix "train": dtype is missing \(expected "uint8"\)/);
    await assert.rejects(lie({ batches: 3 }), /prefix "train": shards hold 8 images in 2 batches but the entry says 8 in 3; the index is damaged/);
    // A field this version does not describe is kept when another prefix's entry is written.
    const before = await lie({ fromANewerVersion: { x: 1 } });
    await updateShardIndex(dir, 'copy', shardSet(before, 'train'));
    const index = JSON.parse(await readFile(path, 'utf8')) as { prefixes: Record<string, Record<string, unknown>> };
    assert.deepEqual(Object.keys(index.prefixes).sort(), ['copy', 'train']);
    assert.deepEqual(index.prefixes.train.fromANewerVersion, { x: 1 });
  }));

test('shuffle is deterministic per seed; --shard i/N parts are disjoint and cover the set', () =>
  withDir(async (dir) => {
    assert.deepEqual(planShardOrder(10, { shuffle: true, seed: 3 }), planShardOrder(10, { shuffle: true, seed: 3 }));
    assert.notDeepEqual(planShardOrder(10, { shuffle: true, seed: 3 }), planShardOrder(10, { shuffle: true, seed: 4 }));
    const parts = [0, 1, 2].map((index) => planShardOrder(10, { shuffle: true, seed: 3, shard: { index, count: 3 } }));
    assert.deepEqual(
      parts.flat().sort((a, b) => a - b),
      [...Array(10).keys()],
    );

    await writeShards(dir, images(20), 2);
    const keysOf = async (o: object) => ((await readAll(new ShardReader({ dir, prefix: 'train', ...o }))).slice(1, -1) as BatchRecord[]).map((b) => b.keys[0]);
    const inOrder = await keysOf({});
    const shuffled = await keysOf({ shuffle: true, seed: 9 });
    assert.deepEqual(await keysOf({ shuffle: true, seed: 9 }), shuffled);
    assert.notDeepEqual(shuffled, inOrder);
    assert.deepEqual([...shuffled].sort(), [...inOrder].sort());
    const half0 = await keysOf({ shard: { index: 0, count: 2 } });
    const half1 = await keysOf({ shard: { index: 1, count: 2 } });
    assert.deepEqual([...half0, ...half1].sort(), [...inOrder].sort());
  }));

test('the writer refuses float32 batches, mixed sizes, a batch after a partial one and an empty stream', () =>
  withDir(async (dir) => {
    const write = (records: DataRecord[]) =>
      pipeline(Readable.from(wholeStream(makeHeader('batch'), records)), new ShardWriter({ dir, prefix: 'train', fsync: false }));
    const b = (n: number, partial = false, h = 2): BatchRecord => ({
      type: 'batch',
      dtype: 'uint8',
      shape: [n, 1, h, 1],
      layout: 'NCHW',
      data: new Uint8Array(n * h),
      labels: new Int32Array(n),
      keys: Array.from({ length: n }, (_, i) => `k${i}`),
      ...(partial ? { partial } : {}),
    });
    await assert.rejects(write([{ ...b(2), dtype: 'float32', data: new Float32Array(4) }]), /shards hold uint8 batches, this one is float32/);
    await assert.rejects(write([b(2), b(2, false, 3)]), /record 3 \(batch starting with k0\): 1x3x1 images, but earlier batches hold 1x2x1/);
    await assert.rejects(write([b(2), b(1, true), b(2)]), /a batch after a partial batch/);
    await assert.rejects(write([]), /the dataset is empty/);
    assert.ok(!(await readdir(dir)).some((n) => n.endsWith('.msgpack') || n.includes('.tmp-')));
  }));

test('a reader with a stalled consumer reads ahead only a bounded number of shards', { timeout: 30_000 }, () =>
  withDir(async (dir) => {
    await writeShards(dir, images(40), 2); // 20 one-batch shards
    // Every shard read is requested only while the buffer has room (the consumer made it): the
    // readable length at each request, recorded as it happens, not sampled after a sleep.
    const bufferedAtRequest: number[] = [];
    const reader: ShardReader = new ShardReader({
      dir,
      prefix: 'train',
      highWaterMark: 2,
      readShard: (...args) => {
        bufferedAtRequest.push(reader.readableLength);
        return readShard(...args);
      },
    });
    reader.pause();
    const stalled = once(reader, 'backpressure');
    reader.read(0); // start it, then consume nothing
    await stalled; // its buffer is full and it stopped reading: no timer decides when
    // A reader that went on would ask for the next shard within microtasks of that (the request is
    // recorded when readShard is called, before any IO): let them all run.
    await new Promise((r) => setImmediate(r));
    // header + highWaterMark records buffered, one shard read: nowhere near the 20 shards
    assert.ok(reader.readableLength <= 3, `buffered ${reader.readableLength} records`);
    assert.equal(bufferedAtRequest.length, 1, 'shards read with nothing consumed');
    assert.equal((await readAll(reader)).length, 22, 'resuming delivers the header, all 20 batches and the trailer');
    assert.equal(bufferedAtRequest.length, 20);
    // Node asks for more (and the next shard is read) as the consumer takes a record, before the
    // record leaves the buffer: at most highWaterMark records are buffered at any request.
    assert.ok(
      bufferedAtRequest.every((n) => n <= 2),
      `a shard was read with more than highWaterMark records buffered: ${bufferedAtRequest.join(',')}`,
    );
  }),
);
