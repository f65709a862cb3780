import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { RecordDecoder, RecordEncoder, packRecord } from './framing';
import { BatchRecord, ImageRecord, makeHeader, StreamRecord } from './records';

async function roundTrip(records: StreamRecord[], chunkSize: number): Promise<StreamRecord[]> {
  const bytes = Buffer.concat(records.map(packRecord));
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunkSize) chunks.push(bytes.subarray(i, i + chunkSize));
  const out: StreamRecord[] = [];
  await pipeline(Readable.from(chunks), new RecordDecoder(), new Writable({ objectMode: true, write(r, _e, cb) { out.push(r); cb(); } }));
  return out;
}

const image: ImageRecord = { type: 'image', key: 'a/b.jpg', label: 3, channels: 3, height: 2, width: 2, data: new Uint8Array([...Array(12).keys()]) };
const batch: BatchRecord = {
  type: 'batch', dtype: 'float32', shape: [2, 1, 1, 2], layout: 'NCHW',
  data: new Float32Array([1.5, -2, 3.25, 1e-7]), labels: new Int32Array([7, -1]), keys: ['x', 'y'],
};

test('records survive framing split at every chunk size, typed arrays restored', async () => {
  for (const chunkSize of [1, 3, 7, 64, 100000]) {
    const [h, i] = await roundTrip([makeHeader('image', { classNames: ['a'] }), image], chunkSize);
    assert.equal(h.type, 'header');
    assert.deepEqual((i as ImageRecord).data, image.data);
    assert.equal((i as ImageRecord).key, 'a/b.jpg');
    const [, b] = await roundTrip([makeHeader('batch'), batch], chunkSize);
    assert.ok((b as BatchRecord).data instanceof Float32Array);
    assert.deepEqual(Array.from((b as BatchRecord).data), Array.from(batch.data));
    assert.deepEqual(Array.from((b as BatchRecord).labels), [7, -1]);
  }
});

test('a stream without a header is refused with a clear message', async () => {
  await assert.rejects(roundTrip([image], 10), /does not start with an alexnet-stream header/);
});

test('a stream of the wrong kind is refused at its header', async () => {
  const bytes = Buffer.concat([packRecord(makeHeader('item')), packRecord({ type: 'item', path: 'p', label: 0, key: 'p' })]);
  const decoder = new RecordDecoder({ accept: ['batch'], source: 'stdin' });
  await assert.rejects(pipeline(Readable.from([bytes]), decoder, new Writable({ objectMode: true, write(_r, _e, cb) { cb(); } })), /reads batch records but the stream carries item records/);
});

test('a truncated stream names the record it stops in', async () => {
  const bytes = Buffer.concat([packRecord(makeHeader('image')), packRecord(image)]);
  const decoder = new RecordDecoder({ source: 'stdin' });
  await assert.rejects(
    pipeline(Readable.from([bytes.subarray(0, bytes.length - 5)]), decoder, new Writable({ objectMode: true, write(_r, _e, cb) { cb(); } })),
    /stdin: stream ends in the middle of record 2/,
  );
});

test('a batch whose data does not match its shape is refused', async () => {
  const bad = { ...batch, shape: [3, 1, 1, 2] as [number, number, number, number] };
  await assert.rejects(roundTrip([makeHeader('batch'), bad], 1000), /batch has 4 values for shape \[3,1,1,2\]/);
});

test('encoder output decodes as plain msgpack (no msgpackr extensions)', async () => {
  const chunks: Buffer[] = [];
  await pipeline(Readable.from([makeHeader('image'), image]), new RecordEncoder(), new Writable({ write(c, _e, cb) { chunks.push(c); cb(); } }));
  const bytes = Buffer.concat(chunks);
  // 0xd4..0xd8 / 0xc7..0xc9 are msgpack ext types; none may appear as a top-level value type.
  assert.notEqual(bytes[0], 0xd4);
  assert.ok(bytes.length > image.data.length);
});
