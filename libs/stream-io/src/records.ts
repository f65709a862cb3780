/**
 * Record types of an alexnet-stream (DESIGN §4). A stream is a header followed by records
 * of one kind. In memory, pixel and label arrays are typed arrays; on the wire they are
 * msgpack `bin` (raw little-endian bytes) with the dtype named, so that any msgpack reader
 * (Python's msgpack + numpy.frombuffer, say) can read a stream without msgpackr extensions.
 */
export const SCHEMA = 'alexnet-stream/1';

export type RecordKind = 'item' | 'image' | 'batch';

export interface StreamHeader {
  type: 'header';
  schema: typeof SCHEMA;
  /** The kind of every record that follows. */
  kind: RecordKind;
  /** Class names indexed by label, when the producer knows them. */
  classNames?: string[];
  /** Free-form provenance: which stage produced the stream and with which options. */
  producer?: string;
  [extra: string]: unknown;
}

/** A source file to decode: `key` identifies it across the pipeline (relative path by default). */
export interface ItemRecord {
  type: 'item';
  path: string;
  label: number;
  key: string;
}

/** A decoded image: uint8 pixels in CHW order (channels = 3, RGB). */
export interface ImageRecord {
  type: 'image';
  key: string;
  label: number;
  channels: number;
  height: number;
  width: number;
  data: Uint8Array;
}

export type BatchDtype = 'uint8' | 'float32';

/** N images in one NCHW tensor; `partial` marks a last batch smaller than the batch size. */
export interface BatchRecord {
  type: 'batch';
  dtype: BatchDtype;
  shape: [number, number, number, number];
  layout: 'NCHW';
  data: Uint8Array | Float32Array;
  labels: Int32Array;
  keys: string[];
  partial?: boolean;
}

export type DataRecord = ItemRecord | ImageRecord | BatchRecord;
export type StreamRecord = StreamHeader | DataRecord;

export function makeHeader(kind: RecordKind, extra: Omit<Partial<StreamHeader>, 'type' | 'schema' | 'kind'> = {}): StreamHeader {
  return { type: 'header', schema: SCHEMA, kind, ...extra };
}
