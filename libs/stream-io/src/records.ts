/**
 * Record types of an alexnet-stream (DESIGN §4). A stream is a header, records of one kind,
 * and a trailer that counts them: the trailer is how a stream proves it is whole (a pipe loses
 * its producer's exit status; a stream that ends without its trailer was cut short). In memory,
 * pixel and label arrays are typed arrays; on the wire they are msgpack `bin` (raw
 * little-endian bytes) with the dtype named, so that any msgpack reader (Python's msgpack +
 * numpy.frombuffer, say) can read a stream without msgpackr extensions; the header and the
 * trailer are plain maps too.
 */
export const SCHEMA = 'alexnet-stream/2';
/** The schema of streams written before the trailer existed (shard files of older data dirs). */
export const LEGACY_SCHEMA = 'alexnet-stream/1';

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
  /** Image and batch streams: the side of every (square) image, when the producer knows it. */
  imageSize?: number;
  /** Batch streams: the most images a batch record holds, when the producer knows it. */
  batchSize?: number;
  /** Batch streams: the dtype of every batch, when the producer knows it. */
  dtype?: BatchDtype;
  [extra: string]: unknown;
}

/**
 * The last record of every stream: what its producer wrote. A consumer counts the records
 * (and, in a batch stream, the images) it received and compares; a stream that ends without
 * a trailer, or whose counts disagree, is incomplete and nothing is finalised from it.
 */
export interface StreamTrailer {
  type: 'trailer';
  /** Data records between the header and this trailer. */
  records: number;
  /** Batch streams: images in those batches. */
  images?: number;
  /**
   * Source items dropped upstream so far and not in this stream (files decode could not
   * decode, images `batch --drop-last` dropped), added up stage by stage; absent where the
   * producer cannot know (a shard file, a partial read of a set).
   */
  skipped?: number;
  /** The stage that wrote the trailer. */
  producer?: string;
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
export type StreamRecord = StreamHeader | DataRecord | StreamTrailer;

export function makeHeader(kind: RecordKind, extra: Omit<Partial<StreamHeader>, 'type' | 'schema' | 'kind'> = {}): StreamHeader {
  return { type: 'header', schema: SCHEMA, kind, ...extra };
}

export function makeTrailer(counts: Omit<StreamTrailer, 'type'>): StreamTrailer {
  const trailer: StreamTrailer = { type: 'trailer', records: counts.records };
  if (counts.images !== undefined) trailer.images = counts.images;
  if (counts.skipped !== undefined) trailer.skipped = counts.skipped;
  if (counts.producer !== undefined) trailer.producer = counts.producer;
  return trailer;
}

/** Images a data record carries: 1 for an item or an image, N for a batch. */
export function imagesIn(record: DataRecord): number {
  return record.type === 'batch' ? record.shape[0] : 1;
}

/**
 * A whole stream from a header and its records: header, records, then a trailer that counts
 * them (for sources in code: tests, loaders, prepare's item list).
 */
export function* wholeStream(
  header: StreamHeader,
  records: Iterable<DataRecord>,
  options: { skipped?: number; producer?: string } = {},
): Generator<StreamRecord> {
  yield header;
  let count = 0;
  let images = 0;
  for (const record of records) {
    count += 1;
    images += imagesIn(record);
    yield record;
  }
  yield makeTrailer({
    records: count,
    ...(header.kind === 'batch' ? { images } : {}),
    skipped: options.skipped,
    producer: options.producer ?? header.producer,
  });
}
