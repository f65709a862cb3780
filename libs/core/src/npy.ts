/**
 * NumPy `.npy` (format 1.0/2.0/3.0) reading and writing, for `mean.npy` (the seed's
 * `img_mean.npy` layout) and the seed's weight files. C order only: Fortran-order arrays are
 * refused with a clear message rather than silently transposed.
 */
import { InputError } from './errors';

export type NpyDtype = 'float32' | 'float64' | 'uint8' | 'int32' | 'int64';
export type NpyData = Float32Array | Float64Array | Uint8Array | Int32Array | BigInt64Array;

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  data: NpyData;
}

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

const DESCR: Record<NpyDtype, string> = { float32: '<f4', float64: '<f8', uint8: '|u1', int32: '<i4', int64: '<i8' };
const FROM_DESCR: Record<string, NpyDtype> = {
  '<f4': 'float32',
  '<f8': 'float64',
  '|u1': 'uint8',
  '<u1': 'uint8',
  '|i4': 'int32',
  '<i4': 'int32',
  '<i8': 'int64',
};
const CTORS = { float32: Float32Array, float64: Float64Array, uint8: Uint8Array, int32: Int32Array, int64: BigInt64Array };

export function dtypeOf(data: NpyData): NpyDtype {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Uint8Array) return 'uint8';
  if (data instanceof Int32Array) return 'int32';
  return 'int64';
}

/** Serialise an array as a version 1.0 `.npy` file (header padded to 64 bytes, as NumPy does). */
export function encodeNpy(data: NpyData, shape: number[]): Buffer {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new RangeError(`npy: shape ${JSON.stringify(shape)} holds ${count} values, data has ${data.length}`);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${DESCR[dtypeOf(data)]}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const unpadded = MAGIC.length + 2 + 2 + header.length + 1;
  header += `${' '.repeat((64 - (unpadded % 64)) % 64)}\n`;
  const prefix = Buffer.alloc(MAGIC.length + 4);
  MAGIC.copy(prefix, 0);
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  return Buffer.concat([prefix, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

/** Parse a `.npy` file; `name` (a path) appears in every error message. */
export function decodeNpy(bytes: Uint8Array, name = 'npy'): NpyArray {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < 10 || !buf.subarray(0, 6).equals(MAGIC)) throw new InputError(`${name}: not a NumPy .npy file (bad magic)`, { code: 'ERR_NPY_FORMAT' });
  const major = buf[6];
  if (major < 1 || major > 3) throw new InputError(`${name}: .npy format version ${major}.${buf[7]} is not one of 1.0, 2.0, 3.0`, { code: 'ERR_NPY_FORMAT' });
  const headerLength = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  if (headerStart + headerLength > buf.length) throw new InputError(`${name}: truncated .npy header`, { code: 'ERR_NPY_FORMAT' });
  const header = buf.subarray(headerStart, headerStart + headerLength).toString('latin1');
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new InputError(`${name}: unreadable .npy header ${JSON.stringify(header.trim())}`, { code: 'ERR_NPY_FORMAT' });
  }
  const dtype = FROM_DESCR[descr];
  if (!dtype) {
    throw new InputError(`${name}: dtype ${descr} is not supported (float32, float64, uint8, int32, int64 little-endian)`, { code: 'ERR_NPY_FORMAT' });
  }
  if (fortran === 'True') throw new InputError(`${name}: Fortran-order arrays are not supported; save with np.ascontiguousarray`, { code: 'ERR_NPY_FORMAT' });
  const dims = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  // Every dimension a non-negative integer: "-2", "1.5" or "abc" would make shapes like 3x-2x-2
  // (whose product is still positive) or NaN sizes that slip past the length check below.
  const badDim = dims.find((d) => !/^\d{1,15}$/.test(d));
  if (badDim !== undefined) {
    throw new InputError(`${name}: .npy shape (${shapeText.trim()}) has ${JSON.stringify(badDim)}, not a non-negative integer`, { code: 'ERR_NPY_FORMAT' });
  }
  const shape = dims.map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const ctor = CTORS[dtype];
  const dataStart = headerStart + headerLength;
  const byteLength = count * ctor.BYTES_PER_ELEMENT;
  if (dataStart + byteLength > buf.length) {
    throw new InputError(`${name}: truncated: shape ${JSON.stringify(shape)} needs ${byteLength} data bytes, file has ${buf.length - dataStart}`, {
      code: 'ERR_NPY_FORMAT',
    });
  }
  const copy = new ArrayBuffer(byteLength); // aligned copy, detached from the file buffer
  new Uint8Array(copy).set(buf.subarray(dataStart, dataStart + byteLength));
  return { dtype, shape, data: new ctor(copy) };
}
