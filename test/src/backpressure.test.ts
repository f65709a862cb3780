/**
 * "Piping 100k images through scan | decode | batch has the same peak memory as 1k": a slow
 * consumer must slow the producer, not grow a buffer.
 *
 * Measured by counting, which is deterministic: the source counts the item records pulled
 * from it, the consumer counts the images it has finished with, and their difference (images
 * somewhere inside the pipeline) must never exceed a bound computed from the configured
 * high-water marks, decode concurrency and batch size, whatever the number of items.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import sharp from 'sharp';
import {
  type BatchRecord,
  BatchStage,
  type DecodedImage,
  type DecodeOptions,
  DecodeStage,
  decodeImage,
  type ItemRecord,
  makeHeader,
  makeTrailer,
} from '@alexnet-stream/stream-io';

const SOURCE_HWM = 16;
const CONCURRENCY = 4;
const DECODE_HWM = 4; // DecodeStage readable high-water mark (its default)
const BATCH = 8;
const BATCH_IN_HWM = 4; // BatchStage defaults: 4 images in, 2 batches out
const BATCH_OUT_HWM = 2;

/**
 * Where images can be between the source and the end of the consumer's write():
 * the source's buffer; DecodeStage's writable buffer (1) and the item held back in
 * `_transform`; at most CONCURRENCY in flight or finished-but-waiting-for-order; its readable
 * buffer, which new input is refused into once it reaches DECODE_HWM (then up to CONCURRENCY
 * finished ones can still land in it); BatchStage's input buffer, the partial batch in its
 * assembler, its output buffer plus one batch pushed past the mark; the consumer's buffer (1)
 * and the batch it is working on.
 */
const BOUND = SOURCE_HWM + 2 + CONCURRENCY + (DECODE_HWM - 1 + CONCURRENCY) + BATCH_IN_HWM + (BATCH - 1) + (BATCH_OUT_HWM + 1) * BATCH + 2 * BATCH;

interface Result {
  pulled: number;
  consumed: number;
  maxInside: number;
  maxWhileStalled: number;
  peakExternalMB: number;
}

async function run(n: number, decode: (b: Buffer, o: DecodeOptions) => Promise<DecodedImage>, files: Buffer[], size: number): Promise<Result> {
  let pulled = 0;
  let consumed = 0;
  let maxInside = 0;
  let maxWhileStalled = 0;
  let stalled = true;
  let peakExternal = 0;
  const source = new Readable({
    objectMode: true,
    highWaterMark: SOURCE_HWM,
    read() {
      if (pulled === 0) this.push(makeHeader('item', { classNames: ['a', 'b', 'c'] }));
      if (pulled === n) {
        this.push(makeTrailer({ records: n }));
        return void this.push(null);
      }
      const i = pulled++;
      const item: ItemRecord = { type: 'item', path: `f${i % files.length}`, label: i % 3, key: `img-${i}` };
      this.push(item);
      if (stalled) maxWhileStalled = Math.max(maxWhileStalled, pulled - consumed);
    },
  });
  const decodeStage = new DecodeStage({
    size,
    resize: 'squash',
    concurrency: CONCURRENCY,
    highWaterMark: DECODE_HWM,
    readFile: async (path) => files[Number(path.slice(1))],
    decode,
  });
  const batch = new BatchStage({ batchSize: BATCH });
  let batches = 0;
  const consumer = new Writable({
    objectMode: true,
    highWaterMark: 1,
    write(record: BatchRecord | { type: 'header' }, _enc, callback) {
      if (record.type !== 'batch') return void callback();
      maxInside = Math.max(maxInside, pulled - consumed);
      batches += 1;
      const mem = process.memoryUsage();
      peakExternal = Math.max(peakExternal, mem.arrayBuffers);
      // deliberately slow: stall 150 ms at the first batch (everything upstream must stop),
      // then yield to the event loop for every batch and sleep 1 ms every 64th
      const done = () => {
        stalled = false;
        consumed += record.shape[0];
        callback();
      };
      if (batches === 1) setTimeout(done, 150);
      else if (batches % 64 === 0) setTimeout(done, 1);
      else setImmediate(done);
    },
  });
  await pipeline(source, decodeStage, batch, consumer);
  assert.equal(decodeStage.decoded, n);
  return { pulled, consumed, maxInside, maxWhileStalled, peakExternalMB: peakExternal / 2 ** 20 };
}

/** A stand-in decoder with the real output size: one fresh CHW buffer per image, after a macrotask. */
function fakeDecode(size: number) {
  return (input: Buffer) =>
    new Promise<DecodedImage>((resolve) =>
      setImmediate(() => {
        const data = new Uint8Array(3 * size * size).fill(input[0]);
        resolve({ data, height: size, width: size, channels: 3 });
      }),
    );
}

test(`100k items hold no more images in flight than 1k (bound ${BOUND} from the high-water marks)`, async (t) => {
  const size = 64; // 12 KiB per image: an unbounded buffer of 100k would be 1.2 GB
  const files = [Buffer.from([1]), Buffer.from([2]), Buffer.from([3])];
  const small = await run(1000, fakeDecode(size), files, size);
  const large = await run(100_000, fakeDecode(size), files, size);
  t.diagnostic(`1k: ${JSON.stringify(small)}; 100k: ${JSON.stringify(large)}`);
  for (const [name, r, n] of [
    ['1k', small, 1000],
    ['100k', large, 100_000],
  ] as const) {
    assert.equal(r.pulled, n, name);
    assert.equal(r.consumed, n, name);
    assert.ok(r.maxInside <= BOUND, `${name}: ${r.maxInside} images inside the pipeline > bound ${BOUND}`);
    assert.ok(r.maxWhileStalled <= BOUND, `${name}: the source was pulled ${r.maxWhileStalled} ahead while the consumer was stalled`);
  }
  // the 100k run had the same ceiling as the 1k run: the stall filled the pipeline to the same
  // point, and 99 % more items did not raise it
  assert.equal(large.maxWhileStalled, small.maxWhileStalled);
  assert.ok(large.maxInside <= BOUND && large.maxInside >= small.maxInside - BATCH, `${small.maxInside} vs ${large.maxInside}`);
  // memory, loosely: live pixel buffers are bounded (GC timing makes this approximate)
  assert.ok(
    large.peakExternalMB < small.peakExternalMB + 64,
    `external memory 1k ${small.peakExternalMB.toFixed(1)} MB, 100k ${large.peakExternalMB.toFixed(1)} MB`,
  );
});

test('with the real decoder (sharp) a stalled consumer stops the source too', async () => {
  const size = 16;
  const files = await Promise.all(
    [
      [200, 30, 30],
      [30, 200, 30],
      [30, 30, 200],
    ].map((rgb) =>
      sharp({ create: { width: 40, height: 30, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } })
        .jpeg()
        .toBuffer(),
    ),
  );
  const r = await run(600, decodeImage, files, size);
  assert.equal(r.consumed, 600);
  assert.ok(r.maxWhileStalled <= BOUND, `pulled ${r.maxWhileStalled} ahead while stalled (bound ${BOUND})`);
  assert.ok(r.maxInside <= BOUND, `${r.maxInside} inside (bound ${BOUND})`);
});
