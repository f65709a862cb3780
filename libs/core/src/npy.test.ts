import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeNpy, encodeNpy } from './npy';

test('npy round trip keeps dtype, shape and values; header is 64-byte aligned', () => {
  const data = new Float32Array([1, -2.5, 3e-8, 4, 5, 6]);
  const bytes = encodeNpy(data, [2, 3]);
  assert.equal((10 + bytes.readUInt16LE(8)) % 64, 0);
  const back = decodeNpy(bytes);
  assert.equal(back.dtype, 'float32');
  assert.deepEqual(back.shape, [2, 3]);
  assert.deepEqual(Array.from(back.data as Float32Array), Array.from(data));
});

test('a hand-written NumPy header (as np.save writes it) is parsed', () => {
  // np.save(f, np.arange(3, dtype=np.uint8)) header text
  const header = "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }";
  const padded = `${header + ' '.repeat(128 - 10 - header.length - 1)}\n`;
  const bytes = Buffer.concat([
    Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]),
    Buffer.from([padded.length, 0]),
    Buffer.from(padded, 'latin1'),
    Buffer.from([0, 1, 2]),
  ]);
  const arr = decodeNpy(bytes, 'x.npy');
  assert.deepEqual(arr.shape, [3]);
  assert.deepEqual(Array.from(arr.data as Uint8Array), [0, 1, 2]);
});

test('truncated, foreign and Fortran-order files are refused by name', () => {
  const good = encodeNpy(new Float64Array(8), [8]);
  assert.throws(() => decodeNpy(good.subarray(0, good.length - 1), 'm.npy'), /m.npy: truncated/);
  assert.throws(() => decodeNpy(Buffer.from('hello world, not numpy'), 'm.npy'), /m.npy: not a NumPy/);
  const fortran = Buffer.from(good.toString('latin1').replace("'fortran_order': False", "'fortran_order': True "), 'latin1');
  assert.throws(() => decodeNpy(fortran, 'f.npy'), /Fortran-order/);
});
