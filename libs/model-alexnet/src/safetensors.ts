/**
 * safetensors (https://github.com/huggingface/safetensors, "Format"): the checkpoint weight
 * format, because Python, Rust and JS all read it (DESIGN §4).
 *
 *   8 bytes   N, unsigned little-endian 64-bit: the header's byte length
 *   N bytes   UTF-8 JSON object: name -> { dtype, shape, data_offsets: [begin, end] },
 *             plus an optional "__metadata__": { string: string }; starts with '{' and may be
 *             padded at the end with spaces (0x20). We pad so that the data starts 8-aligned,
 *             as the reference writer does.
 *   rest      the byte buffer; offsets are relative to its start. Tensors are little-endian,
 *             C order, and must cover the buffer exactly: no holes, no overlaps.
 *
 * The reader checks all of that (the reference implementation's rules) and reports any
 * violation as an `InputError` that names the file.
 */
import { InputError, setOwn } from '@alexnet-stream/core';

export type SafeDtype = 'F32' | 'F16' | 'I32' | 'I64' | 'U8';
/** F16 travels as raw IEEE half bits in a Uint16Array (core's `float16ToFloat32` widens it). */
export type SafeData = Float32Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array;

export interface SafeTensor {
  dtype: SafeDtype;
  shape: number[];
  data: SafeData;
}

export interface Safetensors {
  tensors: Record<string, SafeTensor>;
  metadata: Record<string, string>;
}

const BYTES: Record<SafeDtype, number> = { F32: 4, F16: 2, I32: 4, I64: 8, U8: 1 };
const CTORS = { F32: Float32Array, F16: Uint16Array, I32: Int32Array, I64: BigInt64Array, U8: Uint8Array } as const;
/** Dtypes of the format that we recognise but do not load (named in the error). */
const OTHER_DTYPES = ['BOOL', 'I8', 'I16', 'U16', 'U32', 'U64', 'BF16', 'F64', 'F8_E4M3', 'F8_E5M2'];
/** The reference implementation refuses headers above 100 MB; so do we (a corrupt length). */
export const MAX_HEADER_BYTES = 100_000_000;

function isSafeDtype(d: unknown): d is SafeDtype {
  return typeof d === 'string' && Object.hasOwn(BYTES, d);
}

function elementCount(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function dataMatchesDtype(dtype: SafeDtype, data: SafeData): boolean {
  return data instanceof CTORS[dtype];
}

/**
 * Serialise tensors (in the given order) with optional string metadata. Throws a RangeError
 * (a programming error, not bad input) when a tensor's data does not match its dtype or shape.
 */
export function encodeSafetensors(tensors: Record<string, SafeTensor>, metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new RangeError(`safetensors metadata ${k}: values must be strings, got ${typeof v}`);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  const parts: SafeData[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    if (name === '__metadata__') throw new RangeError('safetensors: "__metadata__" is reserved and cannot name a tensor');
    if (!isSafeDtype(t.dtype)) throw new RangeError(`safetensors ${name}: unsupported dtype ${String(t.dtype)}`);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new RangeError(`safetensors ${name}: bad shape ${JSON.stringify(t.shape)}`);
    if (!dataMatchesDtype(t.dtype, t.data))
      throw new RangeError(`safetensors ${name}: dtype ${t.dtype} needs a ${CTORS[t.dtype].name}, got ${t.data.constructor.name}`);
    const count = elementCount(t.shape);
    if (count !== t.data.length) throw new RangeError(`safetensors ${name}: shape ${JSON.stringify(t.shape)} holds ${count} values, data has ${t.data.length}`);
    const size = count * BYTES[t.dtype];
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    parts.push(t.data);
    offset += size;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const padding = (8 - (json.length % 8)) % 8;
  if (padding) json = Buffer.concat([json, Buffer.alloc(padding, 0x20)]);
  const out = Buffer.allocUnsafe(8 + json.length + offset);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  let at = 8 + json.length;
  for (const data of parts) {
    // Typed arrays are in platform byte order; every platform Node supports is little-endian.
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    at += data.byteLength;
  }
  return out;
}

/**
 * Parse a safetensors file. Data is copied into fresh, aligned typed arrays (so the result
 * does not keep the file's buffer alive and a caller may mutate it freely).
 */
export function decodeSafetensors(bytes: Uint8Array, name = 'safetensors'): Safetensors {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bad = (what: string) => new InputError(`${name}: not a valid safetensors file: ${what}`, { code: 'ERR_SAFETENSORS_FORMAT' });
  if (buf.length < 8) throw bad(`truncated: ${buf.length} bytes, the 8-byte header length is missing`);
  const headerLength = buf.readBigUInt64LE(0);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) throw bad(`header length ${headerLength} exceeds ${MAX_HEADER_BYTES} bytes`);
  const n = Number(headerLength);
  if (8 + n > buf.length) throw bad(`truncated: header of ${n} bytes, but only ${buf.length - 8} bytes follow the length`);
  const headerText = buf.subarray(8, 8 + n).toString('utf8');
  if (!headerText.startsWith('{')) throw bad('header does not start with "{"');
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (err) {
    throw bad(`header is not JSON (${(err as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad('header is not a JSON object');

  const dataStart = 8 + n;
  const dataLength = buf.length - dataStart;
  const metadata: Record<string, string> = {};
  const entries: { name: string; dtype: SafeDtype; shape: number[]; begin: number; end: number }[] = [];
  for (const [key, value] of Object.entries(header as Record<string, unknown>)) {
    if (key === '__metadata__') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('__metadata__ is not an object of strings');
      for (const [mk, mv] of Object.entries(value as Record<string, unknown>)) {
        if (typeof mv !== 'string') throw bad(`__metadata__.${mk} is not a string`);
        setOwn(metadata, mk, mv);
      }
      continue;
    }
    if (typeof value !== 'object' || value === null) throw bad(`tensor ${key}: entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
    if (!isSafeDtype(dtype)) {
      if (typeof dtype === 'string' && OTHER_DTYPES.includes(dtype)) {
        throw new InputError(`${name}: tensor ${key} has dtype ${dtype}, which we do not read (F32, F16, I32, I64, U8); convert it, e.g. to F32`, {
          code: 'ERR_SAFETENSORS_FORMAT',
        });
      }
      throw bad(`tensor ${key}: unknown dtype ${JSON.stringify(dtype)}`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw bad(`tensor ${key}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw bad(`tensor ${key}: data_offsets ${JSON.stringify(offsets)} is not [begin, end]`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw bad(`tensor ${key}: data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataLength) throw bad(`tensor ${key}: data_offsets [${begin}, ${end}] out of range: the data is ${dataLength} bytes (truncated file?)`);
    const expected = elementCount(shape as number[]) * BYTES[dtype];
    if (end - begin !== expected)
      throw bad(`tensor ${key}: ${dtype} ${JSON.stringify(shape)} needs ${expected} bytes, data_offsets [${begin}, ${end}] give ${end - begin}`);
    entries.push({ name: key, dtype, shape: shape as number[], begin, end });
  }

  // The tensors must tile the buffer: sorted by offset, each begins where the previous ended.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  for (const e of sorted) {
    if (e.begin < covered) throw bad(`tensor ${e.name}: data_offsets [${e.begin}, ${e.end}] overlap the previous tensor (which ends at ${covered})`);
    if (e.begin > covered) throw bad(`hole in the data: bytes ${covered}..${e.begin} belong to no tensor`);
    covered = e.end;
  }
  if (covered !== dataLength) throw bad(`${dataLength - covered} trailing bytes after the last tensor belong to no tensor`);

  const tensors: Record<string, SafeTensor> = {};
  for (const e of entries) {
    const ctor = CTORS[e.dtype];
    const copy = new ArrayBuffer(e.end - e.begin);
    new Uint8Array(copy).set(buf.subarray(dataStart + e.begin, dataStart + e.end));
    setOwn(tensors, e.name, { dtype: e.dtype, shape: e.shape, data: new ctor(copy) });
  }
  return { tensors, metadata };
}
