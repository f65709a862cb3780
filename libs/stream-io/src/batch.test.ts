import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BatchAssembler, BatchStage } from './batch';
import { type BatchRecord, type DataRecord, type ImageRecord, makeHeader, type StreamRecord, type StreamTrailer, wholeStream } from './records';

function image(i: number, c = 2, h = 1, w = 2): ImageRecord {
  const data = new Uint8Array(c * h * w).map((_, j) => i * 10 + j);
  return { type: 'image', key: `img${i}`, label: i % 3, channels: c, height: h, width: w, data };
}

/** Run the stage over a whole stream (`records` after a header, if the first is not one; a trailer appended). */
async function run(records: StreamRecord[], batchSize: number, dropLast = false): Promise<StreamRecord[]> {
  const [first, ...rest] = records;
  const whole = first?.type === 'header' ? wholeStream(first, rest as DataRecord[]) : wholeStream(makeHeader('image'), records as DataRecord[]);
  const out: StreamRecord[] = [];
  await pipeline(
    Readable.from(whole),
    new BatchStage({ batchSize, dropLast }),
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

test('images are packed in order into NCHW batches; the last partial batch is kept and marked', async () => {
  const out = await run([makeHeader('image', { classNames: ['a', 'b', 'c'] }), ...[0, 1, 2, 3, 4].map((i) => image(i))], 2);
  assert.equal(out[0].type, 'header');
  assert.equal((out[0] as { kind: string }).kind, 'batch');
  assert.deepEqual((out[0] as { classNames: string[] }).classNames, ['a', 'b', 'c']);
  const batches = out.slice(1, -1) as BatchRecord[];
  assert.deepEqual(out[out.length - 1], { type: 'trailer', records: 3, images: 5, skipped: 0, producer: 'alexnet-stream batch' });
  assert.deepEqual(
    batches.map((b) => b.shape),
    [
      [2, 2, 1, 2],
      [2, 2, 1, 2],
      [1, 2, 1, 2],
    ],
  );
  assert.deepEqual(
    batches.map((b) => b.partial ?? false),
    [false, false, true],
  );
  assert.deepEqual(Array.from(batches[1].data), [20, 21, 22, 23, 30, 31, 32, 33]);
  assert.deepEqual(Array.from(batches[1].labels), [2, 0]);
  assert.deepEqual(batches[2].keys, ['img4']);
  assert.equal(batches[2].data.length, 4);
});

test('--drop-last drops the partial batch; an exact multiple has no partial batch', async () => {
  const dropped = await run(
    [0, 1, 2].map((i) => image(i)),
    2,
    true,
  );
  assert.deepEqual(
    dropped.map((r) => r.type),
    ['header', 'batch', 'trailer'],
  );
  assert.equal((dropped[2] as StreamTrailer).skipped, 1, 'the dropped image is counted as skipped');
  const exact = await run(
    [0, 1, 2, 3].map((i) => image(i)),
    2,
  );
  assert.ok(exact.every((b) => !(b as BatchRecord).partial));
  const assembler = new BatchAssembler({ batchSize: 2, dropLast: true });
  assembler.add(image(0));
  assert.equal(assembler.finish(), undefined);
  assert.equal(assembler.dropped, 1);
});

test('images of another size are refused naming the record key; bad batch sizes are usage errors', async () => {
  await assert.rejects(run([image(0), image(1, 2, 2, 2)], 4), /record 3 \(img1\): image is 2x2x2 but the batch holds 2x1x2 images/);
  await assert.rejects(
    run([makeHeader('item'), { type: 'item', path: 'p', label: 0, key: 'p' }], 4),
    /batch reads image records but the stream carries item records/,
  );
  await assert.rejects(
    run([makeHeader('image', { classNames: ['a', 'b'] }), image(2)], 4),
    /record 2 \(img2\): label 2 is out of range for the stream's 2 class names/,
  );
  // an input that stops without its trailer gives no trailer, and an error instead of an end
  const cut: StreamRecord[] = [makeHeader('image'), image(0)];
  await assert.rejects(
    pipeline(
      Readable.from(cut),
      new BatchStage({ batchSize: 2 }),
      new Writable({
        objectMode: true,
        write(_r, _e, cb) {
          cb();
        },
      }),
    ),
    /ended after 1 record without its trailer/,
  );
  assert.throws(() => new BatchAssembler({ batchSize: 0 }), /Expected an integer between 1 and 1048576 for batchSize but received 0/);
});

test('a recycled batch buffer is packed again (same memory, new contents); one of another size is not used', () => {
  const assembler = new BatchAssembler({ batchSize: 2 });
  assembler.add(image(0));
  const first = assembler.add(image(1))!;
  assembler.recycle(first.data);
  assembler.add(image(2));
  const second = assembler.add(image(3))!;
  assert.equal(second.data, first.data, 'the given-back buffer was reused');
  assert.deepEqual(Array.from(second.data), [20, 21, 22, 23, 30, 31, 32, 33]);
  assert.deepEqual(Array.from(second.labels), [2, 0]);
  assembler.recycle(new Uint8Array(3)); // wrong length: ignored
  assembler.add(image(4));
  const third = assembler.add(image(5))!;
  assert.equal(third.data.length, 8);
  assert.deepEqual(Array.from(third.data), [40, 41, 42, 43, 50, 51, 52, 53]);
});
