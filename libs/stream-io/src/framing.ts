/**
 * msgpack framing of record streams: `encodeRecord`/`decodeRecord` are pure functions between
 * in-memory records and msgpack-ready plain objects; `RecordEncoder`/`RecordDecoder` are the
 * thin stream adapters (objectMode on the record side, bytes on the wire side).
 */
import { Transform, type TransformCallback } from 'node:stream';
import { Packr, Unpackr } from 'msgpackr';
import { InputError } from '@alexnet-stream/core';
import { ChunkList, msgpackValueEnd, VALUE_TOO_LARGE } from './msgpack-extent';
import type { DataRecord, RecordKind, StreamHeader, StreamRecord } from './records';
import { IMAGE_CHANNELS, validateRecord } from './record-validation';
import { StreamTally } from './stream-check';

// Plain msgpack only (no msgpackr record extension), so other languages can read the stream.
const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false });

function bytesOf(array: ArrayBufferView): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
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

/**
 * Plain decoded msgpack value → in-memory record, validated (record-validation.ts: one
 * function per record kind). `where` names the record for error messages (e.g. "stdin
 * record 12"); `header`, once known, is the stream's header, which records must agree with.
 */
export function decodeRecord(raw: unknown, where: string, header?: StreamHeader): StreamRecord {
  return validateRecord(raw, where, header);
}

/** The largest header a stream may start with (class names of a 100k-class data set fit). */
export const MAX_HEADER_BYTES = 64 << 20;
/** The largest item record (a path and a key). */
export const MAX_ITEM_RECORD_BYTES = 1 << 20;
/** The default bound on any one record when its header does not declare enough to derive one. */
export const DEFAULT_MAX_RECORD_BYTES = 1 << 30;
/** Room for a record's fields besides its pixels (key, label, shape; keys of a batch: per image). */
const RECORD_FIELDS_BYTES = 1 << 20;
const KEY_BYTES_PER_IMAGE = 8 << 10;

/** The most bytes a batch record of `n` images of `valuesPerImage` values each may take (pixels, labels, keys, fields). */
export function batchRecordBytes(n: number, valuesPerImage: number, bytesPerValue: number): number {
  return n * valuesPerImage * bytesPerValue + n * (4 + KEY_BYTES_PER_IMAGE) + RECORD_FIELDS_BYTES;
}

/**
 * Why a stage must not write batches of `n` images of `valuesPerImage` values (`what`: "uint8
 * 3x256x256 images"): a record larger than `DEFAULT_MAX_RECORD_BYTES` would be refused by every
 * reader downstream (and allocating it may fail outright). Undefined when they fit.
 */
export function oversizedBatch(n: number, valuesPerImage: number, bytesPerValue: number, what: string): string | undefined {
  const bytes = batchRecordBytes(n, valuesPerImage, bytesPerValue);
  if (bytes <= DEFAULT_MAX_RECORD_BYTES) return undefined;
  return `a batch of ${n} ${what} takes ${formatBytes(bytes)}, more than the ${formatBytes(DEFAULT_MAX_RECORD_BYTES)} a record may take (readers refuse larger records)`;
}

/**
 * The most bytes one record of a stream with this header may take, and why: derived from
 * what the header declares (image size, batch size, dtype), never above `cap`.
 */
export function recordByteLimit(header: StreamHeader, cap = DEFAULT_MAX_RECORD_BYTES): { bytes: number; why: string } {
  const side = header.imageSize;
  let derived: { bytes: number; why: string } | undefined;
  if (header.kind === 'item') derived = { bytes: MAX_ITEM_RECORD_BYTES, why: 'an item record holds a path and a key' };
  else if (header.kind === 'image' && side !== undefined) {
    derived = { bytes: IMAGE_CHANNELS * side * side + RECORD_FIELDS_BYTES, why: `the header declares ${side}x${side} images` };
  } else if (header.kind === 'batch' && side !== undefined && header.batchSize !== undefined && header.dtype !== undefined) {
    const n = header.batchSize;
    derived = {
      bytes: batchRecordBytes(n, IMAGE_CHANNELS * side * side, header.dtype === 'float32' ? 4 : 1),
      why: `the header declares ${header.dtype} batches of ${n} ${side}x${side} images`,
    };
  }
  if (derived && derived.bytes <= cap) return derived;
  return { bytes: cap, why: derived ? `${derived.why}, capped by maxRecordBytes` : 'the header declares no image or batch size, so maxRecordBytes applies' };
}

function formatBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(n % (1 << 30) ? 1 : 0)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(n % (1 << 20) ? 1 : 0)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(n % (1 << 10) ? 1 : 0)} KiB`;
  return `${n} bytes`;
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
  /** Names the consuming stage in error messages ("decode"). */
  stage?: string;
  /** Records buffered on the readable side before backpressure applies. */
  highWaterMark?: number;
  /**
   * The most bytes any one record may take (default 1 GiB). Records are bounded tighter by
   * what the header declares (see `recordByteLimit`); a length prefix past the bound is
   * refused as soon as it arrives, before anything is buffered for it.
   */
  maxRecordBytes?: number;
}

/**
 * msgpack bytes → validated records: the header (emitted too: downstream stages read class
 * names etc. from it, and it is available as `header`), the data records, and the trailer
 * (emitted too, so that each stage can write its own). The stream's order and completeness
 * are checked as it goes (stream-check.ts); when the input ends without a trailer, or its
 * counts disagree, the decoder fails instead of ending, so nothing downstream finalises.
 */
export class RecordDecoder extends Transform {
  /** Bytes received and not yet decoded: the start of the next record. */
  private readonly buffered = new ChunkList();
  private count = 0;
  private readonly source: string;
  private readonly tally: StreamTally;
  private readonly maxRecordBytes: number;
  private limit: { bytes: number; why: string } = { bytes: MAX_HEADER_BYTES, why: 'a header may take' };

  constructor(options: RecordDecoderOptions = {}) {
    super({ readableObjectMode: true, readableHighWaterMark: options.highWaterMark ?? 4 });
    this.source = options.source ?? 'input';
    this.tally = new StreamTally(this.source, options.accept, options.stage);
    this.maxRecordBytes = options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
    this.limit = { bytes: Math.min(MAX_HEADER_BYTES, this.maxRecordBytes), why: 'the most a header may take' };
  }

  get header(): StreamHeader | undefined {
    return this.tally.header;
  }

  // Each record is decoded once, when all its bytes are here (msgpackValueEnd says where it
  // ends without decoding it); a record that lies inside one chunk is decoded in place.
  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.buffered.push(chunk);
    try {
      for (;;) {
        const end = msgpackValueEnd(this.buffered, 0, this.limit.bytes);
        if (end === undefined) break; // the rest of this record is still on its way
        if (end === VALUE_TOO_LARGE) {
          throw new InputError(
            `${this.source}: record ${this.count + 1} is larger than ${formatBytes(this.limit.bytes)} (${this.limit.why}); ` +
              'the stream is corrupt or not an alexnet-stream',
            { code: 'ERR_RECORD_TOO_LARGE' },
          );
        }
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
    return new InputError(`${this.source}: not a valid msgpack record stream near record ${this.count + 1} (${reason})`, { code: 'ERR_STREAM_FRAMING' });
  }

  private pushValue(value: unknown): void {
    this.count += 1;
    const where = `${this.source} record ${this.count}`;
    const record = decodeRecord(value, where, this.tally.header);
    this.tally.see(record, where);
    if (record.type === 'header') this.limit = recordByteLimit(record, this.maxRecordBytes);
    this.push(record);
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (this.buffered.length > 0) {
        throw new InputError(
          `${this.tally.describe()} ends in the middle of record ${this.count + 1} (${this.buffered.length} trailing bytes); ` +
            'was the producer killed? The stream is incomplete and nothing was finalised from it',
          { code: 'ERR_STREAM_TRUNCATED' },
        );
      }
      this.tally.end();
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }
}

export type { DataRecord };
