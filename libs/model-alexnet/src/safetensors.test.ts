import { test } from 'node:test';
import assert from 'node:assert/strict';
import { float16ToFloat32 } from '@alexnet-stream/core';
import { decodeSafetensors, encodeSafetensors, type SafeTensor } from './safetensors';

// A file written byte by byte from the format description: u64 LE header length, JSON header
// (with __metadata__), padded with spaces to a multiple of 8, then the data in offset order.
const HEADER =
  '{"__metadata__":{"format":"test"},' +
  '"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
  '"y":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}' +
  '    '; // 140 bytes of JSON + 4 spaces = 144, a multiple of 8
const HAND_MADE = Buffer.concat([
  Buffer.from([144, 0, 0, 0, 0, 0, 0, 0]),
  Buffer.from(HEADER, 'utf8'),
  Buffer.from([0x00, 0x00, 0x80, 0x3f]), // 1.0f little-endian
  Buffer.from([0x00, 0x00, 0x00, 0xc0]), // -2.0f
  Buffer.from([1, 2, 3]),
]);

test('a hand-made file decodes to its tensors and metadata', () => {
  const { tensors, metadata } = decodeSafetensors(HAND_MADE, 'hand.safetensors');
  assert.deepEqual(metadata, { format: 'test' });
  assert.deepEqual(Object.keys(tensors), ['x', 'y']);
  assert.equal(tensors.x.dtype, 'F32');
  assert.deepEqual(tensors.x.shape, [2]);
  assert.deepEqual(Array.from(tensors.x.data as Float32Array), [1, -2]);
  assert.equal(tensors.y.dtype, 'U8');
  assert.deepEqual(Array.from(tensors.y.data as Uint8Array), [1, 2, 3]);
});

test('the encoder writes exactly the hand-made bytes', () => {
  const bytes = encodeSafetensors(
    { x: { dtype: 'F32', shape: [2], data: new Float32Array([1, -2]) }, y: { dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) } },
    { format: 'test' },
  );
  assert.deepEqual(bytes, HAND_MADE);
});

test('round trip of every dtype, scalars and empty tensors; header padded to 8; data 8-aligned', () => {
  const tensors: Record<string, SafeTensor> = {
    'conv1.weight': { dtype: 'F32', shape: [2, 1, 2, 2], data: new Float32Array([0.1, -0.2, 3e-8, 4, 5, 6, -7, 8]) },
    half: { dtype: 'F16', shape: [3], data: new Uint16Array([0x3c00, 0xc000, 0x7c00]) },
    ints: { dtype: 'I32', shape: [2], data: new Int32Array([-5, 2147483647]) },
    longs: { dtype: 'I64', shape: [1], data: new BigInt64Array([-(2n ** 62n)]) },
    bytes: { dtype: 'U8', shape: [5], data: new Uint8Array([0, 1, 255, 7, 9]) },
    scalar: { dtype: 'F32', shape: [], data: new Float32Array([42]) },
    empty: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
  };
  const bytes = encodeSafetensors(tensors, { spec: '{"a":1}', ünïcode: 'välue' });
  const n = Number(bytes.readBigUInt64LE(0));
  assert.equal(n % 8, 0);
  const back = decodeSafetensors(bytes);
  assert.deepEqual(back.metadata, { spec: '{"a":1}', ünïcode: 'välue' });
  assert.deepEqual(Object.keys(back.tensors), Object.keys(tensors));
  for (const [name, t] of Object.entries(tensors)) {
    assert.equal(back.tensors[name].dtype, t.dtype, name);
    assert.deepEqual(back.tensors[name].shape, t.shape, name);
    assert.deepEqual(back.tensors[name].data, t.data, name);
  }
  assert.deepEqual(Array.from(float16ToFloat32(back.tensors.half.data as Uint16Array)), [1, -2, Infinity]);
  // No metadata -> no __metadata__ key at all.
  const plain = encodeSafetensors({ a: tensors.bytes });
  assert.ok(
    !plain
      .subarray(8, 8 + Number(plain.readBigUInt64LE(0)))
      .toString()
      .includes('__metadata__'),
  );
});

/** The hand-made file with its header replaced (re-padded, length rewritten) and `data` after it. */
function withHeader(header: string, data: Buffer = HAND_MADE.subarray(8 + 144)): Buffer {
  const json = Buffer.from(header, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

test('every kind of corruption is an InputError naming the file', () => {
  const x = (offsets: string, dtype = 'F32', shape = '[2]') => `"x":{"dtype":"${dtype}","shape":${shape},"data_offsets":${offsets}}`;
  const y = (offsets = '[8,11]') => `"y":{"dtype":"U8","shape":[3],"data_offsets":${offsets}}`;
  const cases: [string, Buffer, RegExp][] = [
    ['shorter than the length field', HAND_MADE.subarray(0, 5), /truncated: 5 bytes/],
    ['header cut off', HAND_MADE.subarray(0, 100), /truncated: header of 144 bytes/],
    ['data cut off', HAND_MADE.subarray(0, HAND_MADE.length - 1), /out of range.*truncated/],
    ['absurd header length', Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 1]), HAND_MADE.subarray(8)]), /header length .* exceeds/],
    ['not JSON', withHeader('{"x": nope}'), /not JSON/],
    ['not starting with {', withHeader('  {}'), /does not start with/],
    ['a JSON array', withHeader('{}').fill(0x5b, 8, 9), /does not start with/],
    ['unknown dtype', withHeader(`{${x('[0,8]', 'F33')},${y()}}`), /unknown dtype "F33"/],
    ['unsupported dtype', withHeader(`{${x('[0,8]', 'F64', '[1]')},${y()}}`), /dtype F64, which we do not read/],
    ['bad shape', withHeader(`{${x('[0,8]', 'F32', '[-2]')},${y()}}`), /shape \[-2\]/],
    ['missing offsets', withHeader(`{"x":{"dtype":"F32","shape":[2]},${y()}}`), /data_offsets undefined is not/],
    ['offsets reversed', withHeader(`{${x('[8,0]')},${y()}}`), /end before they begin/],
    ['offsets out of range', withHeader(`{${x('[0,8]')},${y('[8,12]')}}`), /out of range/],
    ['size disagrees with shape', withHeader(`{${x('[0,8]', 'F32', '[3]')},${y()}}`), /needs 12 bytes/],
    ['overlapping tensors', withHeader(`{${x('[0,8]')},${y('[4,7]')}}`, HAND_MADE.subarray(8 + 144, 8 + 144 + 8)), /overlap/],
    ['a hole', withHeader(`{${x('[0,8]')},"y":{"dtype":"U8","shape":[2],"data_offsets":[9,11]}}`), /hole in the data: bytes 8..9/],
    ['trailing bytes', withHeader(`{${x('[0,8]')}}`), /3 trailing bytes/],
    ['metadata not strings', withHeader(`{"__metadata__":{"a":1},${x('[0,8]')},${y()}}`), /__metadata__.a is not a string/],
  ];
  for (const [what, bytes, message] of cases) {
    assert.throws(
      () => decodeSafetensors(bytes, '/ckpt/w.safetensors'),
      (err: Error) => {
        assert.equal(err.name, 'InputError', what);
        assert.match(err.message, /^\/ckpt\/w.safetensors: /, what);
        assert.match(err.message, message, `${what}: ${err.message}`);
        return true;
      },
      what,
    );
  }
});

test('encoder refuses data that does not match dtype or shape', () => {
  assert.throws(() => encodeSafetensors({ a: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), /holds 3 values/);
  assert.throws(() => encodeSafetensors({ a: { dtype: 'I32', shape: [2], data: new Float32Array(2) } }), /needs a Int32Array/);
  assert.throws(() => encodeSafetensors({ __metadata__: { dtype: 'U8', shape: [0], data: new Uint8Array(0) } }), /reserved/);
});
