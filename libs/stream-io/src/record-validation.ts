/**
 * One validation function per record kind (DESIGN §4), used by every reader of records: the
 * stream decoder (stdin of every stage, `train --stdin`) and the shard reader (`read`, the
 * training loader, `inspect`, `mean <dir>`). A record is plain decoded msgpack when it arrives;
 * it leaves here as a typed, checked record, or as an `InputError` that names it and the field
 * that is wrong. Inner code then trusts records: a height of 0.5, a NaN label or a 4-channel
 * "RGB" image never reaches `mean`, `batch` or the trainer.
 *
 * `header`, when given, is the stream's header: records are also checked against what it
 * declares (class count, image size, batch size, dtype).
 */
import { InputError } from '@alexnet-stream/core';
import {
  type BatchDtype,
  type BatchRecord,
  type ImageRecord,
  type ItemRecord,
  LEGACY_SCHEMA,
  SCHEMA,
  type StreamHeader,
  type StreamRecord,
  type StreamTrailer,
} from './records';

/** The largest image side a stream may carry (decode's `--size` limit). */
export const MAX_IMAGE_SIDE = 16384;
/** Labels are int32 on the wire (batch labels); item and image labels keep to the same range. */
export const MAX_LABEL = 0x7fffffff;
/** The most images a batch may hold (a sanity bound far above any real batch size). */
export const MAX_BATCH_SIZE = 1 << 20;
/** Channels of every image and batch: RGB (DESIGN §4). */
export const IMAGE_CHANNELS = 3;

const DTYPES: readonly BatchDtype[] = ['uint8', 'float32'];

function shown(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (value === undefined) return 'missing';
  if (Array.isArray(value)) return `a list of ${value.length}`;
  if (value instanceof Uint8Array) return `${value.byteLength} bytes of binary`;
  return `a ${typeof value}`;
}

function fail(where: string, field: string, expected: string, value: unknown): never {
  throw new InputError(`${where}: field "${field}" should be ${expected} but is ${shown(value)}`, { code: 'ERR_RECORD_INVALID' });
}

function integerIn(r: Record<string, unknown>, field: string, min: number, max: number, where: string): number {
  const v = r[field];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(where, field, `an integer from ${min} to ${max}`, v);
  return v as number;
}

function stringField(r: Record<string, unknown>, field: string, where: string, nonEmpty = false): string {
  const v = r[field];
  if (typeof v !== 'string' || (nonEmpty && v.length === 0)) fail(where, field, nonEmpty ? 'a non-empty string' : 'a string', v);
  return v as string;
}

function binField(r: Record<string, unknown>, field: string, where: string): Uint8Array {
  const v = r[field];
  if (!(v instanceof Uint8Array)) fail(where, field, 'binary (msgpack bin)', v);
  return v as Uint8Array;
}

/** Control characters (C0, DEL, C1): they cannot be written one per line and read back. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is this pattern's job
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * A class name is written one per line (`classes.txt`) and read back trimmed: it must be a
 * non-empty string without control characters (a newline would split it in two) and without
 * leading or trailing white space (it would be lost on read-back). `where` names its source.
 */
export function checkClassName(name: unknown, where: string): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new InputError(`${where}: class name ${shown(name)} is not a non-empty string`, { code: 'ERR_RECORD_INVALID' });
  }
  if (CONTROL.test(name)) {
    throw new InputError(
      `${where}: class name ${JSON.stringify(name)} contains a control character (a newline, tab, …), which classes.txt cannot keep on one line; rename it`,
      { code: 'ERR_RECORD_INVALID' },
    );
  }
  if (name.trim() !== name) {
    throw new InputError(
      `${where}: class name ${JSON.stringify(name)} starts or ends with white space, which classes.txt cannot keep (names are trimmed on read-back); rename it`,
      { code: 'ERR_RECORD_INVALID' },
    );
  }
  return name;
}

/**
 * A typed array over a msgpack `bin` payload. Where the payload is most of its ArrayBuffer
 * (a record that arrived over several pipe chunks was assembled into a buffer of its own; a
 * one-batch shard file is read whole) and is aligned for the element size, it is a view: no
 * copy, and nothing else of note is pinned. Otherwise it is copied out, so that a small array
 * does not pin a big read buffer (a 64 KB pipe chunk, a many-batch shard file), and so that
 * an Int32Array or Float32Array that starts at an odd offset is still readable.
 */
export function typedFrom<T extends Float32Array | Int32Array | Uint8Array>(
  bytes: Uint8Array,
  ctor: { new (buffer: ArrayBuffer, offset: number, length: number): T; BYTES_PER_ELEMENT: number },
  where: string,
  field: string,
): T {
  const size = ctor.BYTES_PER_ELEMENT;
  if (bytes.byteLength % size !== 0) {
    throw new InputError(`${where}: field "${field}" holds ${bytes.byteLength} bytes, not a whole number of ${size}-byte elements`, {
      code: 'ERR_RECORD_INVALID',
    });
  }
  const length = bytes.byteLength / size;
  if (bytes.byteOffset % size === 0 && 2 * bytes.byteLength >= bytes.buffer.byteLength) {
    return new ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, length);
  }
  const copy = new ArrayBuffer(bytes.byteLength);
  new Uint8Array(copy).set(bytes);
  return new ctor(copy, 0, length);
}

/** The stream header: schema, kind, and the optional facts it declares (checked if present). */
export function validateHeader(r: Record<string, unknown>, where: string): StreamHeader {
  if (r.schema === LEGACY_SCHEMA) {
    throw new InputError(
      `${where}: stream schema ${JSON.stringify(LEGACY_SCHEMA)} was written by an older alexnet-stream, before streams ended with a trailer that proves them whole; run the stage that made it again`,
      { code: 'ERR_RECORD_INVALID' },
    );
  }
  if (r.schema !== SCHEMA) {
    throw new InputError(`${where}: stream schema ${shown(r.schema)} is not supported (expected ${JSON.stringify(SCHEMA)})`, { code: 'ERR_RECORD_INVALID' });
  }
  if (r.kind !== 'item' && r.kind !== 'image' && r.kind !== 'batch') {
    throw new InputError(`${where}: header names unknown record kind ${shown(r.kind)}`, { code: 'ERR_RECORD_INVALID' });
  }
  if (r.classNames !== undefined) {
    if (!Array.isArray(r.classNames)) fail(where, 'classNames', 'a list of class names', r.classNames);
    (r.classNames as unknown[]).forEach((name, i) => checkClassName(name, `${where} classNames[${i}]`));
  }
  if (r.producer !== undefined) stringField(r, 'producer', where);
  if (r.imageSize !== undefined) integerIn(r, 'imageSize', 1, MAX_IMAGE_SIDE, where);
  if (r.batchSize !== undefined) integerIn(r, 'batchSize', 1, MAX_BATCH_SIZE, where);
  if (r.dtype !== undefined && !DTYPES.includes(r.dtype as BatchDtype)) fail(where, 'dtype', '"uint8" or "float32"', r.dtype);
  return r as unknown as StreamHeader;
}

function checkLabel(label: number, where: string, header: StreamHeader | undefined): void {
  const classes = header?.classNames?.length;
  if (classes && label >= classes) {
    throw new InputError(`${where}: label ${label} is out of range for the stream's ${classes} class names`, { code: 'ERR_RECORD_INVALID' });
  }
}

export function validateItem(r: Record<string, unknown>, where: string, header?: StreamHeader): ItemRecord {
  const path = stringField(r, 'path', where, true);
  if (path.includes('\0')) fail(where, 'path', 'a path without NUL characters', path);
  stringField(r, 'key', where);
  checkLabel(integerIn(r, 'label', 0, MAX_LABEL, where), where, header);
  return r as unknown as ItemRecord;
}

function checkSide(side: number, field: string, where: string, header: StreamHeader | undefined): void {
  if (header?.imageSize !== undefined && side !== header.imageSize) {
    throw new InputError(`${where}: ${field} ${side}, but the stream's header declares ${header.imageSize}x${header.imageSize} images`, {
      code: 'ERR_RECORD_INVALID',
    });
  }
}

export function validateImage(r: Record<string, unknown>, where: string, header?: StreamHeader): ImageRecord {
  const key = stringField(r, 'key', where);
  const at = `${where} (${key})`;
  checkLabel(integerIn(r, 'label', 0, MAX_LABEL, at), at, header);
  const channels = integerIn(r, 'channels', IMAGE_CHANNELS, IMAGE_CHANNELS, at);
  const height = integerIn(r, 'height', 1, MAX_IMAGE_SIDE, at);
  const width = integerIn(r, 'width', 1, MAX_IMAGE_SIDE, at);
  checkSide(height, 'height', at, header);
  checkSide(width, 'width', at, header);
  const data = typedFrom(binField(r, 'data', at), Uint8Array, at, 'data');
  const expected = channels * height * width;
  if (data.length !== expected) {
    throw new InputError(`${at}: ${data.length} pixel bytes for a ${channels}x${height}x${width} image (expected ${expected})`, { code: 'ERR_RECORD_INVALID' });
  }
  return { ...r, data } as unknown as ImageRecord;
}

export function validateBatch(r: Record<string, unknown>, where: string, header?: StreamHeader): BatchRecord {
  if (!DTYPES.includes(r.dtype as BatchDtype)) {
    throw new InputError(`${where}: batch dtype ${shown(r.dtype)} is not supported (expected "uint8" or "float32")`, { code: 'ERR_RECORD_INVALID' });
  }
  const dtype = r.dtype as BatchDtype;
  if (header?.dtype !== undefined && dtype !== header.dtype) {
    throw new InputError(`${where}: a ${dtype} batch in a stream whose header declares ${header.dtype} batches`, { code: 'ERR_RECORD_INVALID' });
  }
  if (r.layout !== 'NCHW') throw new InputError(`${where}: batch layout ${shown(r.layout)} is not supported (expected "NCHW")`, { code: 'ERR_RECORD_INVALID' });
  const shape = r.shape;
  if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((d) => typeof d === 'number' && Number.isInteger(d))) {
    throw new InputError(`${where}: batch shape ${Array.isArray(shape) ? JSON.stringify(shape) : shown(shape)} is not 4 integers (NCHW)`, {
      code: 'ERR_RECORD_INVALID',
    });
  }
  const [n, c, h, w] = shape as number[];
  const maxN = header?.batchSize ?? MAX_BATCH_SIZE;
  if (n < 1 || n > maxN) {
    throw new InputError(
      `${where}: a batch of ${n} images (expected 1 to ${maxN}${header?.batchSize !== undefined ? ', the batch size its header declares' : ''})`,
      { code: 'ERR_RECORD_INVALID' },
    );
  }
  if (c !== IMAGE_CHANNELS) {
    throw new InputError(`${where}: batch shape ${JSON.stringify(shape)} has ${c} channels (expected ${IMAGE_CHANNELS}, RGB)`, { code: 'ERR_RECORD_INVALID' });
  }
  if (h < 1 || h > MAX_IMAGE_SIDE || w < 1 || w > MAX_IMAGE_SIDE) {
    throw new InputError(`${where}: batch shape ${JSON.stringify(shape)}: image sides must be 1 to ${MAX_IMAGE_SIDE}`, { code: 'ERR_RECORD_INVALID' });
  }
  checkSide(h, 'image height', where, header);
  checkSide(w, 'image width', where, header);
  if (r.partial !== undefined && typeof r.partial !== 'boolean') fail(where, 'partial', 'true or false', r.partial);
  const keys = r.keys;
  if (!Array.isArray(keys) || keys.length !== n || !keys.every((k) => typeof k === 'string')) {
    throw new InputError(`${where}: a batch of ${n} images needs ${n} string keys, it has ${Array.isArray(keys) ? `${keys.length} keys` : shown(keys)}`, {
      code: 'ERR_RECORD_INVALID',
    });
  }
  const data =
    dtype === 'uint8' ? typedFrom(binField(r, 'data', where), Uint8Array, where, 'data') : typedFrom(binField(r, 'data', where), Float32Array, where, 'data');
  const labels = typedFrom(binField(r, 'labels', where), Int32Array, where, 'labels');
  if (data.length !== n * c * h * w) {
    throw new InputError(`${where}: batch has ${data.length} values for shape ${JSON.stringify(shape)} (expected ${n * c * h * w})`, {
      code: 'ERR_RECORD_INVALID',
    });
  }
  if (labels.length !== n) throw new InputError(`${where}: a batch of ${n} images has ${labels.length} labels`, { code: 'ERR_RECORD_INVALID' });
  const classes = header?.classNames?.length || MAX_LABEL + 1;
  for (let i = 0; i < n; i++) {
    const label = labels[i];
    if (label < 0 || label >= classes) {
      throw new InputError(
        `${where} (${keys[i] as string}): label ${label} is ${label < 0 ? 'negative' : `out of range for the stream's ${classes} class names`}`,
        { code: 'ERR_RECORD_INVALID' },
      );
    }
  }
  return { ...r, data, labels } as unknown as BatchRecord;
}

export function validateTrailer(r: Record<string, unknown>, where: string): StreamTrailer {
  integerIn(r, 'records', 0, Number.MAX_SAFE_INTEGER, where);
  if (r.images !== undefined) integerIn(r, 'images', 0, Number.MAX_SAFE_INTEGER, where);
  if (r.skipped !== undefined) integerIn(r, 'skipped', 0, Number.MAX_SAFE_INTEGER, where);
  if (r.producer !== undefined) stringField(r, 'producer', where);
  return r as unknown as StreamTrailer;
}

function describe(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? String(value);
  const type = (value as { type?: unknown }).type;
  return type === undefined ? 'an object without a "type" field' : `a record of type ${shown(type)}`;
}

/**
 * Plain decoded msgpack value → in-memory record, validated by the function for its kind.
 * `where` names the record for error messages (e.g. "stdin record 12"); `header` is the
 * stream's header once known.
 */
export function validateRecord(raw: unknown, where: string, header?: StreamHeader): StreamRecord {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || raw instanceof Uint8Array) {
    throw new InputError(`${where}: expected a record (a msgpack map), got ${describe(raw)}; is this an alexnet-stream (${SCHEMA})?`, {
      code: 'ERR_RECORD_INVALID',
    });
  }
  const r = raw as Record<string, unknown>;
  switch (r.type) {
    case 'header':
      return validateHeader(r, where);
    case 'item':
      return validateItem(r, where, header);
    case 'image':
      return validateImage(r, where, header);
    case 'batch':
      return validateBatch(r, where, header);
    case 'trailer':
      return validateTrailer(r, where);
    default:
      throw new InputError(`${where}: unknown record ${describe(raw)}; is this an alexnet-stream (${SCHEMA})?`, { code: 'ERR_RECORD_INVALID' });
  }
}
