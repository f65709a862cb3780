import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Packr } from 'msgpackr';
import { ChunkList, msgpackValueEnd } from './msgpack-extent';

const packr = new Packr({ useRecords: false });

function chunked(bytes: Buffer, size: number): ChunkList {
  const list = new ChunkList();
  for (let i = 0; i < bytes.length; i += size) list.push(bytes.subarray(i, i + size));
  return list;
}

// One value of every msgpack family, at the boundaries where the encoding changes size.
const values: [string, unknown][] = [
  ['fixints and ints of every width', [0, 127, -1, -32, 128, 255, 256, 65535, 65536, 2 ** 32, -33, -129, -32769, -(2 ** 31) - 1]],
  ['floats, nil, booleans', [1.5, -2.25e300, Math.fround(0.1), null, true, false]],
  ['strings: fixstr, str8, str16, str32', ['', 'a'.repeat(31), 'b'.repeat(32), 'c'.repeat(256), 'd'.repeat(65536)]],
  ['binaries: bin8, bin16, bin32', [new Uint8Array(3), new Uint8Array(300), new Uint8Array(70000)]],
  ['arrays: fixarray and array16', [Array.from({ length: 15 }, (_, i) => i), Array.from({ length: 16 }, (_, i) => i)]],
  [
    'maps: fixmap, map16, nested',
    { small: { a: 1 }, big: Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, i])), deep: [[{ x: [new Uint8Array(5)] }]] },
  ],
  ['an image record', { type: 'image', key: 'a/b.jpg', label: 3, channels: 3, height: 256, width: 256, data: new Uint8Array(3 * 256 * 256) }],
];

for (const [name, value] of values) {
  test(`msgpackValueEnd: ${name}: the exact end, and undefined on every shorter prefix`, () => {
    const bytes = packr.pack(value);
    const trailing = Buffer.concat([bytes, packr.pack('next')]);
    for (const size of [1, 7, 64, 65536, trailing.length]) assert.equal(msgpackValueEnd(chunked(trailing, size)), bytes.length, `chunks of ${size}`);
    const step = Math.max(1, Math.floor(bytes.length / 200));
    for (let n = 0; n < bytes.length; n += step) assert.equal(msgpackValueEnd(chunked(bytes.subarray(0, n), 5)), undefined, `prefix of ${n} bytes`);
  });
}

test('msgpackValueEnd: 0xc1 (never used) is -1; a value later in the list starts at its offset', () => {
  assert.equal(msgpackValueEnd(chunked(Buffer.from([0x92, 0x01, 0xc1]), 1)), -1);
  const two = Buffer.concat([packr.pack({ a: 1 }), packr.pack([1, 2, 3])]);
  assert.equal(msgpackValueEnd(chunked(two, 2), packr.pack({ a: 1 }).length), two.length);
});

test('ChunkList.take: bytes across chunks in order, the rest kept; no copy inside the first chunk', () => {
  const list = chunked(Buffer.from([...Array(10).keys()]), 3);
  const chunk0 = list.chunks[0];
  const first = list.take(2);
  assert.deepEqual([...first], [0, 1]);
  assert.ok(first.buffer === chunk0.buffer && first.byteOffset === chunk0.byteOffset, 'a view of the first chunk, not a copy');
  assert.deepEqual([...list.take(5)], [2, 3, 4, 5, 6]);
  assert.equal(list.length, 3);
  assert.deepEqual([...list.take(3)], [7, 8, 9]);
  assert.equal(list.chunks.length, 0);
});
