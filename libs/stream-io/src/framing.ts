/**
 * msgpack framing of record streams: `encodeRecord`/`decodeRecord` are pure functions between
 * in-memory records and msgpack-ready plain objects; `RecordEncoder`/`RecordDecoder` are the
 * thin stream adapters (objectMode on the record side, bytes on the wire side).
 */
import { Transform, TransformCallback } from 'node:stream';
import { Packr, Unpackr } from 'msgpackr';
import { InputError } from './errors';
import { ChunkList, msgpackValueEnd } from './msgpack-extent';
import {
  BatchRecord,
  DataRecord,
  ImageRecord,
  ItemRecord,
  RecordKind,
  SCHEMA,
  StreamHeader,
  StreamRecord,
} from './records';

// Plain msgpack only (no msgpackr record extension), so other languages can read the stream.
const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false });

function bytesOf(array: ArrayBufferView): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

/**
 * A typed array over a msgpack `bin` payload. Where the payload is most of its ArrayBuffer
 * (a record that arrived over several pipe chunks was assembled into a buffer of its own; a
 * one-batch shard file is read whole) and is aligned for the element size, it is a view: no
 * copy, and nothing else of note is pinned. Otherwise it is copied out, so that a small array
 * does not pin a big read buffer (a 64 KB pipe chunk, a many-batch shard file), and so that
 * an Int32Array or Float32Array that starts at an odd offset is still readable.
 */
function typedFrom<T extends Float32Array | Int32Array | Uint8Array>(
  bytes: Uint8Array,
  ctor: { new (buffer: ArrayBuffer, offset: number, length: number): T; BYTES_PER_ELEMENT: number },
): T {
  const size = ctor.BYTES_PER_ELEMENT;
  if (bytes.byteLength % size !== 0) {
    throw new InputError(`binary field of ${bytes.byteLength} bytes is not a whole number of ${size}-byte elements`);
  }
  const length = bytes.byteLength / size;
  if (bytes.byteOffset % size === 0 && 2 * bytes.byteLength >= bytes.buffer.byteLength) {
    return new ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, length);
  }
  const copy = new ArrayBuffer(bytes.byteLength);
  new Uint8Array(copy).set(bytes);
  return new ctor(copy, 0, length);
}

/** In-memory record → plain object ready for msgpack (typed arrays as raw bytes). */
export function encodeRecord(record: StreamRecord): unknown {
  switch (record.type) {
    case 'image':
      return { ...record, data: bytesOf(record.data) };
    case 'batch':
      return { ...record, data: bytesOf(record.data), labels: bytesOf(record.labels) };
    default:
      return record;
  }
}

/** msgpack `bin` header for a payload of `length` bytes. */
function binHeader(length: number): Uint8Array {
  if (length < 0x100) return Uint8Array.of(0xc4, length);
  if (length < 0x10000) return Uint8Array.of(0xc5, length >>> 8, length & 0xff);
  return Uint8Array.of(0xc6, length >>> 24, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff);
}

/** msgpack map header for `count` entries. */
function mapHeader(count: number): Uint8Array {
  if (count < 16) return Uint8Array.of(0x80 | count);
  if (count < 0x10000) return Uint8Array.of(0xde, count >>> 8, count & 0xff);
  return Uint8Array.of(0xdf, count >>> 24, (count >>> 16) & 0xff, (count >>> 8) & 0xff, count & 0xff);
}

/**
 * The msgpack bytes of a record as a list of pieces to write one after the other (writev):
 * everything but the pixel payload packed into one small buffer, then the payload itself, not
 * copied. Packing a 196 KB image or a 50 MB batch whole costs a copy of the pixels into
 * msgpackr's buffer (and, for a batch, the page faults of a fresh 50 MB one) on every record.
 * The bytes are plain msgpack, the same map `packRecord` writes, with `data` as its last entry.
 */
export function recordPieces(record: StreamRecord): Uint8Array[] {
  if (record.type !== 'image' && record.type !== 'batch') return [packr.pack(record)];
  const fields = Object.entries(encodeRecord(record) as Record<string, unknown>).filter(([k, v]) => k !== 'data' && v !== undefined);
  const parts: Uint8Array[] = [mapHeader(fields.length + 1)];
  for (const [key, value] of fields) parts.push(packr.pack(key), packr.pack(value));
  const payload = bytesOf(record.data);
  parts.push(packr.pack('data'), binHeader(payload.byteLength));
  return [Buffer.concat(parts), payload];
}

/** A record's msgpack bytes in one buffer (small records; tests). */
export function packRecord(record: StreamRecord): Buffer {
  const pieces = recordPieces(record);
  return pieces.length === 1 ? Buffer.from(pieces[0].buffer, pieces[0].byteOffset, pieces[0].byteLength) : Buffer.concat(pieces);
}

function describe(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? String(value);
  const type = (value as { type?: unknown }).type;
  return type === undefined ? 'an object without a "type" field' : `a record of type ${JSON.stringify(type)}`;
}

function requireFields(raw: Record<string, unknown>, where: string, fields: Record<string, string>): void {
  for (const [name, kind] of Object.entries(fields)) {
    const value = raw[name];
    const ok =
      kind === 'bin' ? value instanceof Uint8Array :
      kind === 'array' ? Array.isArray(value) :
      typeof value === kind;
    if (!ok) throw new InputError(`${where}: field "${name}" should be ${kind} but is ${value === undefined ? 'missing' : typeof value}`);
  }
}

/**
 * Plain decoded msgpack value → in-memory record, validated. `where` names the record for
 * error messages (e.g. "stdin record 12").
 */
export function decodeRecord(raw: unknown, where: string): StreamRecord {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new InputError(`${where}: expected a record object, got ${describe(raw)}`);
  }
  const r = raw as Record<string, unknown>;
  switch (r.type) {
    case 'header':
      if (r.schema !== SCHEMA) {
        throw new InputError(`${where}: stream schema ${JSON.stringify(r.schema)} is not supported (expected ${JSON.stringify(SCHEMA)})`);
      }
      if (r.kind !== 'item' && r.kind !== 'image' && r.kind !== 'batch') {
        throw new InputError(`${where}: header names unknown record kind ${JSON.stringify(r.kind)}`);
      }
      return r as unknown as StreamHeader;
    case 'item':
      requireFields(r, where, { path: 'string', label: 'number', key: 'string' });
      return r as unknown as ItemRecord;
    case 'image': {
      requireFields(r, where, { key: 'string', label: 'number', channels: 'number', height: 'number', width: 'number', data: 'bin' });
      const image = { ...r, data: typedFrom(r.data as Uint8Array, Uint8Array) } as unknown as ImageRecord;
      const expected = image.channels * image.height * image.width;
      if (image.data.length !== expected) {
        throw new InputError(`${where} (${image.key}): ${image.data.length} pixel bytes for a ${image.channels}x${image.height}x${image.width} image (expected ${expected})`);
      }
      return image;
    }
    case 'batch': {
      requireFields(r, where, { dtype: 'string', shape: 'array', data: 'bin', labels: 'bin', keys: 'array' });
      const shape = r.shape as number[];
      if (shape.length !== 4 || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
        throw new InputError(`${where}: batch shape ${JSON.stringify(shape)} is not 4 non-negative integers (NCHW)`);
      }
      if (r.layout !== 'NCHW') throw new InputError(`${where}: batch layout ${JSON.stringify(r.layout)} is not supported (expected "NCHW")`);
      let data: Uint8Array | Float32Array;
      if (r.dtype === 'uint8') data = typedFrom(r.data as Uint8Array, Uint8Array);
      else if (r.dtype === 'float32') data = typedFrom(r.data as Uint8Array, Float32Array);
      else throw new InputError(`${where}: batch dtype ${JSON.stringify(r.dtype)} is not supported (expected "uint8" or "float32")`);
      const labels = typedFrom(r.labels as Uint8Array, Int32Array);
      const [n, c, h, w] = shape;
      if (data.length !== n * c * h * w) {
        throw new InputError(`${where}: batch has ${data.length} values for shape ${JSON.stringify(shape)} (expected ${n * c * h * w})`);
      }
      if (labels.length !== n || (r.keys as unknown[]).length !== n) {
        throw new InputError(`${where}: batch of ${n} images has ${labels.length} labels and ${(r.keys as unknown[]).length} keys`);
      }
      return { ...r, data, labels } as unknown as BatchRecord;
    }
    default:
      throw new InputError(`${where}: unknown record ${describe(raw)}; is this an alexnet-stream (${SCHEMA})?`);
  }
}

/** objectMode records → msgpack bytes. */
export class RecordEncoder extends Transform {
  constructor(options: { highWaterMark?: number } = {}) {
    // writable side counts records, readable side counts bytes (default 16 KiB)
    super({ writableObjectMode: true, writableHighWaterMark: options.highWaterMark ?? 4 });
  }
  override _transform(record: StreamRecord, _enc: BufferEncoding, callback: TransformCallback): void {
    let pieces: Uint8Array[];
    try {
      pieces = recordPieces(record);
    } catch (err) {
      callback(err as Error);
      return;
    }
    for (const piece of pieces) this.push(piece);
    callback();
  }
}

export interface RecordDecoderOptions {
  /** Record kinds this consumer accepts; a stream of another kind is refused at its header. */
  accept?: RecordKind[];
  /** Names the input in error messages ("stdin", a file path). */
  source?: string;
  /** Records buffered on the readable side before backpressure applies. */
  highWaterMark?: number;
}

/**
 * msgpack bytes → validated records. The first record must be a header; the header is
 * emitted too (downstream stages read class names etc. from it) and is available as `header`.
 */
export class RecordDecoder extends Transform {
  header: StreamHeader | undefined;
  /** Bytes received and not yet decoded: the start of the next record. */
  private readonly buffered = new ChunkList();
  private count = 0;
  private readonly accept?: RecordKind[];
  private readonly source: string;

  constructor(options: RecordDecoderOptions = {}) {
    super({ readableObjectMode: true, readableHighWaterMark: options.highWaterMark ?? 4 });
    this.accept = options.accept;
    this.source = options.source ?? 'input';
  }

  // Each record is decoded once, when all its bytes are here (msgpackValueEnd says where it
  // ends without decoding it); a record that lies inside one chunk is decoded in place.
  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.buffered.push(chunk);
    try {
      for (;;) {
        const end = msgpackValueEnd(this.buffered);
        if (end === undefined) break; // the rest of this record is still on its way
        if (end === -1) throw this.invalid('byte 0xc1 starts no msgpack value');
        const bytes = this.buffered.take(end);
        let value: unknown;
        try {
          value = unpackr.unpack(bytes);
        } catch (err) {
          throw this.invalid((err as Error).message);
        }
        this.pushValue(value);
      }
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  private invalid(reason: string): InputError {
    return new InputError(`${this.source}: not a valid msgpack record stream near record ${this.count + 1} (${reason})`);
  }

  private pushValue(value: unknown): void {
    this.count += 1;
    const where = `${this.source} record ${this.count}`;
    const record = decodeRecord(value, where);
    if (this.count === 1) {
      if (record.type !== 'header') {
        throw new InputError(`${this.source}: stream does not start with an alexnet-stream header (first record is ${describe(value)}); pipe the output of an alexnet-stream stage`);
      }
      if (this.accept && !this.accept.includes(record.kind)) {
        throw new InputError(`${this.source}: this stage reads ${this.accept.join(' or ')} records but the stream carries ${record.kind} records`);
      }
      this.header = record;
    } else if (record.type === 'header') {
      throw new InputError(`${where}: a second header in the middle of the stream`);
    } else if (record.type !== this.header!.kind) {
      throw new InputError(`${where}: ${record.type} record in a stream of ${this.header!.kind} records`);
    }
    this.push(record);
  }

  override _flush(callback: TransformCallback): void {
    if (this.buffered.length > 0) {
      callback(new InputError(`${this.source}: stream ends in the middle of record ${this.count + 1} (${this.buffered.length} trailing bytes); was the producer killed?`));
    } else if (this.count === 0) {
      callback(new InputError(`${this.source}: empty stream (no header); pipe the output of an alexnet-stream stage`));
    } else callback();
  }
}

export type { DataRecord };
