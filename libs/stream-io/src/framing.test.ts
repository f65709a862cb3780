import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Unpackr } from 'msgpackr';
import { decodeRecord, RecordDecoder, RecordEncoder, packRecord, recordPieces } from './framing';
import { type BatchRecord, type DataRecord, type ImageRecord, makeHeader, makeTrailer, type StreamHeader, type StreamRecord, wholeStream } from './records';
import { msgpackValueEnd, ChunkList, VALUE_TOO_LARGE } from './msgpack-extent';

/** Frame `records` (a trailer appended after the header's data records unless `raw`), split into chunks, decode. */
async function roundTrip(records: StreamRecord[], chunkSize: number, raw = false): Promise<StreamRecord[]> {
  const whole = raw ? records : [...wholeStream(records[0] as StreamHeader, records.slice(1) as DataRecord[])];
  const bytes = Buffer.concat(whole.map(packRecord));
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunkSize) chunks.push(bytes.subarray(i, i + chunkSize));
  const out: StreamRecord[] = [];
  await pipeline(
    Readable.from(chunks),
    new RecordDecoder(),
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

const image: ImageRecord = { type: 'image', key: 'a/b.jpg', label: 3, channels: 3, height: 2, width: 2, data: new Uint8Array([...Array(12).keys()]) };
const batch: BatchRecord = {
  type: 'batch',
  dtype: 'float32',
  shape: [2, 3, 1, 1],
  layout: 'NCHW',
  data: new Float32Array([1.5, -2, 3.25, 1e-7, 0, 9]),
  labels: new Int32Array([7, 0]),
  keys: ['x', 'y'],
};

test('records survive framing split at every chunk size, typed arrays restored', async () => {
  for (const chunkSize of [1, 3, 7, 64, 100000]) {
    const [h, i, t] = await roundTrip([makeHeader('image', { classNames: ['a', 'b', 'c', 'd'] }), image], chunkSize);
    assert.equal(h.type, 'header');
    assert.deepEqual((i as ImageRecord).data, image.data);
    assert.equal((i as ImageRecord).key, 'a/b.jpg');
    assert.deepEqual(t, { type: 'trailer', records: 1 }, 'the trailer comes through last');
    const [, b] = await roundTrip([makeHeader('batch'), batch], chunkSize);
    assert.ok((b as BatchRecord).data instanceof Float32Array);
    assert.deepEqual(Array.from((b as BatchRecord).data), Array.from(batch.data));
    assert.deepEqual(Array.from((b as BatchRecord).labels), [7, 0]);
  }
});

test('a stream without a header is refused with a clear message', async () => {
  await assert.rejects(roundTrip([image], 10, true), /does not start with an alexnet-stream header/);
});

test('a stream of the wrong kind is refused at its header', async () => {
  const bytes = Buffer.concat([packRecord(makeHeader('item')), packRecord({ type: 'item', path: 'p', label: 0, key: 'p' })]);
  const decoder = new RecordDecoder({ accept: ['batch'], source: 'stdin' });
  await assert.rejects(
    pipeline(
      Readable.from([bytes]),
      decoder,
      new Writable({
        objectMode: true,
        write(_r, _e, cb) {
          cb();
        },
      }),
    ),
    /reads batch records but the stream carries item records/,
  );
});

test('a truncated stream names the record it stops in', async () => {
  const bytes = Buffer.concat([packRecord(makeHeader('image')), packRecord(image)]);
  const decoder = new RecordDecoder({ source: 'stdin' });
  await assert.rejects(
    pipeline(
      Readable.from([bytes.subarray(0, bytes.length - 5)]),
      decoder,
      new Writable({
        objectMode: true,
        write(_r, _e, cb) {
          cb();
        },
      }),
    ),
    /stdin: the image stream ends in the middle of record 2/,
  );
});

test('a batch whose data does not match its shape is refused', async () => {
  const bad = { ...batch, shape: [2, 3, 1, 2] as [number, number, number, number] };
  await assert.rejects(roundTrip([makeHeader('batch'), bad], 1000), /batch has 6 values for shape \[2,3,1,2\]/);
});

test('encoder output decodes as plain msgpack (no msgpackr extensions)', async () => {
  const chunks: Buffer[] = [];
  await pipeline(
    Readable.from([makeHeader('image'), image]),
    new RecordEncoder(),
    new Writable({
      write(c, _e, cb) {
        chunks.push(c);
        cb();
      },
    }),
  );
  const bytes = Buffer.concat(chunks);
  // 0xd4..0xd8 / 0xc7..0xc9 are msgpack ext types; none may appear as a top-level value type.
  assert.notEqual(bytes[0], 0xd4);
  assert.ok(bytes.length > image.data.length);
});

test('recordPieces: the pixel payload is written from the record itself, not copied; the pieces are one msgpack map', () => {
  for (const record of [image, batch, { ...batch, partial: true }] as (ImageRecord | BatchRecord)[]) {
    const pieces = recordPieces(record);
    assert.equal(pieces.length, 2);
    const payload = pieces[1];
    assert.equal(payload.buffer, record.data.buffer, 'the payload piece is a view of the record data');
    assert.equal(payload.byteOffset, record.data.byteOffset);
    assert.equal(payload.byteLength, record.data.byteLength);
    // a plain msgpack reader sees one map with every field, typed arrays as bin
    const plain = new Unpackr({ useRecords: false }).unpack(Buffer.concat(pieces)) as Record<string, unknown>;
    const { data, labels, ...meta } = record as BatchRecord;
    for (const [key, value] of Object.entries(meta)) assert.deepEqual(plain[key], value, key);
    assert.deepEqual(new Uint8Array(plain.data as Uint8Array), new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    if (labels) assert.deepEqual(new Uint8Array(plain.labels as Uint8Array), new Uint8Array(labels.buffer));
    assert.deepEqual(packRecord(record), Buffer.concat(pieces));
  }
  // items and headers are small: one piece
  assert.equal(recordPieces(makeHeader('item')).length, 1);
});

test('bin header sizes: payloads of 0, 255, 256, 65535 and 65536 bytes round-trip', async () => {
  for (const n of [0, 255, 256, 65535, 65536]) {
    // the bin framing itself, at each size class (recordPieces writes the header for the payload)
    const data = new Uint8Array(n).map((_, j) => j & 255);
    const [head, payload] = recordPieces({ ...image, channels: 1, height: 1, width: n, data });
    const plain = new Unpackr({ useRecords: false }).unpack(Buffer.concat([head, payload])) as { data: Uint8Array };
    assert.deepEqual(new Uint8Array(plain.data), data, `${n} bytes`);
  }
});

test('decoded payloads: a view where the payload is most of its buffer and aligned, else a copy', () => {
  // a record assembled into a buffer of its own (several pipe chunks): the pixels are a view
  const own = Buffer.concat([packRecord(image)]);
  const unpackr = new Unpackr({ useRecords: false });
  const big = { ...image, width: 64, height: 64, data: new Uint8Array(3 * 64 * 64).fill(7) };
  const bigBytes = Buffer.from(packRecord(big));
  const viewed = decodeRecord(unpackr.unpack(bigBytes), 'r') as ImageRecord;
  assert.equal(viewed.data.buffer, bigBytes.buffer, 'view of the record buffer');
  // a small record inside a big read buffer is copied out, so it does not pin the buffer
  const inChunk = Buffer.concat([own, Buffer.alloc(64 * 1024)]);
  const copied = decodeRecord(unpackr.unpack(inChunk.subarray(0, own.length)), 'r') as ImageRecord;
  assert.notEqual(copied.data.buffer, inChunk.buffer);
  assert.equal(copied.data.buffer.byteLength, copied.data.byteLength);
  assert.deepEqual(copied.data, image.data);
  // float32 data at an odd offset is copied to an aligned buffer, values intact
  const f32 = {
    ...batch,
    shape: [1, 3, 32, 32] as [number, number, number, number],
    labels: new Int32Array([1]),
    keys: ['k'],
    data: new Float32Array(3072).map((_, j) => j / 3),
  };
  const bytes = packRecord(f32);
  const odd = Buffer.alloc(bytes.length + 1);
  bytes.copy(odd, 1);
  const back = decodeRecord(unpackr.unpack(odd.subarray(1)), 'r') as BatchRecord;
  assert.equal(back.data.byteOffset % 4, 0);
  assert.deepEqual(back.data, f32.data);
  assert.deepEqual(Array.from(back.labels), [1]);
});

async function decodeBytes(bytes: Buffer, options: ConstructorParameters<typeof RecordDecoder>[0] = {}): Promise<StreamRecord[]> {
  const out: StreamRecord[] = [];
  await pipeline(
    Readable.from([bytes]),
    new RecordDecoder({ source: 'stdin', ...options }),
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

test('the trailer proves a stream whole: missing, short, long or followed by more records are errors', async () => {
  const header = packRecord(makeHeader('image', { producer: 'alexnet-stream decode' }));
  const rec = packRecord(image);
  // whole: passes, trailer last
  const ok = await decodeBytes(Buffer.concat([header, rec, rec, packRecord(makeTrailer({ records: 2, skipped: 1 }))]));
  assert.deepEqual(
    ok.map((r) => r.type),
    ['header', 'image', 'image', 'trailer'],
  );
  // cut at a record boundary: no trailer
  await assert.rejects(
    decodeBytes(Buffer.concat([header, rec, rec])),
    /the image stream from alexnet-stream decode ended after 2 records without its trailer: alexnet-stream decode .* stopped before finishing/,
  );
  // counts that disagree
  await assert.rejects(
    decodeBytes(Buffer.concat([header, rec, packRecord(makeTrailer({ records: 2 }))])),
    /trailer says alexnet-stream decode wrote 2 records, but 1 arrived/,
  );
  await assert.rejects(
    decodeBytes(Buffer.concat([header, rec, rec, rec, packRecord(makeTrailer({ records: 2 }))])),
    /trailer says .* wrote 2 records, but 3 arrived/,
  );
  // anything after the trailer (two streams concatenated)
  await assert.rejects(decodeBytes(Buffer.concat([header, packRecord(makeTrailer({ records: 0 })), header])), /after the stream's trailer/);
  // batch streams: the images are counted too
  const b = packRecord(batch);
  await assert.rejects(
    decodeBytes(Buffer.concat([packRecord(makeHeader('batch')), b, packRecord(makeTrailer({ records: 1, images: 5 }))])),
    /wrote 5 images, but the 1 records hold 2/,
  );
});

test('a length prefix larger than the header allows is refused when it arrives, before the payload', async () => {
  // a header declaring 8x8 images, then a record whose bin claims 4 GiB: only its first bytes are sent
  const header = packRecord(makeHeader('image', { imageSize: 8 }));
  const claim = Buffer.from([0x83, 0xa4, ...Buffer.from('type'), 0xa5, ...Buffer.from('image'), 0xa4, ...Buffer.from('data'), 0xc6, 0xff, 0xff, 0xff, 0xf0]);
  const source = Readable.from(
    (async function* () {
      yield header;
      yield claim;
      // the rest of the claimed 4 GiB never comes; the decoder must not wait for it
      await new Promise((r) => setTimeout(r, 10_000));
    })(),
  );
  const started = Date.now();
  await assert.rejects(
    pipeline(
      source,
      new RecordDecoder({ source: 'stdin' }),
      new Writable({
        objectMode: true,
        write(_r, _e, cb) {
          cb();
        },
      }),
    ),
    /stdin: record 2 is larger than 1\.0 MiB \(the header declares 8x8 images\)/,
  );
  assert.ok(Date.now() - started < 5000, 'refused at once');
  // without a declared size, the decoder's maxRecordBytes applies
  const plain = packRecord(makeHeader('image'));
  await assert.rejects(
    decodeBytes(Buffer.concat([plain, claim]), { maxRecordBytes: 1 << 20 }),
    /record 2 is larger than 1 MiB \(the header declares no image or batch size, so maxRecordBytes applies\)/,
  );
  // a header itself has a bound
  await assert.rejects(decodeBytes(Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xff])), /record 1 is larger than 64 MiB/);
  // msgpackValueEnd: the answer comes from the prefix alone
  const chunks = new ChunkList();
  chunks.push(Buffer.from([0xc6, 0x7f, 0xff, 0xff, 0xff]));
  assert.equal(msgpackValueEnd(chunks, 0, 1000), VALUE_TOO_LARGE);
  assert.equal(msgpackValueEnd(chunks, 0), undefined);
});
