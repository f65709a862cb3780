/**
 * The order and completeness rules of a record stream (DESIGN §4), in one place, for every
 * consumer: the stream decoder (bytes) and every stage that takes records in code (decode,
 * mean, batch, augment, the shard writer, inspect, the trainer's stdin loader).
 *
 *   header, then records of the header's kind, then a trailer that counts them, then nothing.
 *
 * `StreamTally.see` checks each record's place and counts it; `StreamTally.end` is called when
 * the input ends and throws unless the trailer came and agreed. A consumer finalises nothing
 * (mean.npy, index.json, a summary, a checkpoint of a --stdin run) before `end` has returned.
 */
import { InputError } from '@alexnet-stream/core';
import { imagesIn, type RecordKind, type StreamHeader, type StreamRecord, type StreamTrailer } from './records';

export class StreamTally {
  header: StreamHeader | undefined;
  trailer: StreamTrailer | undefined;
  /** Data records seen so far. */
  records = 0;
  /** Images in them (1 per item or image record, N per batch). */
  images = 0;

  /**
   * `source` names the input in messages ("stdin", a file, "input"); `stage` the consumer
   * ("decode"); `accept` the record kinds it takes (a stream of another kind is refused at its
   * header).
   */
  constructor(
    readonly source: string,
    private readonly accept?: readonly RecordKind[],
    private readonly stage?: string,
  ) {}

  /** What the input is, for messages: "the image stream from alexnet-stream decode". */
  describe(): string {
    if (!this.header) return `${this.source}`;
    return `${this.source}: the ${this.header.kind} stream${this.header.producer ? ` from ${this.header.producer}` : ''}`;
  }

  /** Check one (validated) record's place in the stream and count it. `where` names it. */
  see(record: StreamRecord, where: string): void {
    if (this.trailer) {
      throw new InputError(`${where}: a ${record.type} record after the stream's trailer (two streams concatenated? each stage reads one stream)`, {
        code: 'ERR_STREAM_CONCATENATED',
      });
    }
    if (!this.header) {
      if (record.type !== 'header') {
        throw new InputError(
          `${this.source}: stream does not start with an alexnet-stream header (its first record is a ${record.type} record); pipe the output of an alexnet-stream stage`,
          { code: 'ERR_STREAM_NO_HEADER' },
        );
      }
      if (this.accept && !this.accept.includes(record.kind)) {
        throw new InputError(
          `${this.source}: ${this.stage ? `${this.stage} reads` : 'this stage reads'} ${this.accept.join(' or ')} records but the stream carries ${record.kind} records`,
          { code: 'ERR_STREAM_INVALID' },
        );
      }
      this.header = record;
      return;
    }
    if (record.type === 'header') throw new InputError(`${where}: a second header in the middle of the stream`, { code: 'ERR_STREAM_INVALID' });
    if (record.type === 'trailer') {
      this.checkTrailer(record, where);
      this.trailer = record;
      return;
    }
    if (record.type !== this.header.kind) {
      throw new InputError(`${where}: ${record.type} record in a stream of ${this.header.kind} records`, { code: 'ERR_STREAM_INVALID' });
    }
    this.records += 1;
    this.images += imagesIn(record);
  }

  private checkTrailer(trailer: StreamTrailer, where: string): void {
    const by = trailer.producer ?? this.header?.producer ?? 'its producer';
    if (trailer.records !== this.records) {
      throw new InputError(
        `${where}: the trailer says ${by} wrote ${trailer.records} records, but ${this.records} arrived; records were lost or added on the way`,
        { code: 'ERR_STREAM_TRAILER_MISMATCH' },
      );
    }
    if (trailer.images !== undefined && trailer.images !== this.images) {
      throw new InputError(`${where}: the trailer says ${by} wrote ${trailer.images} images, but the ${this.records} records hold ${this.images}`, {
        code: 'ERR_STREAM_TRAILER_MISMATCH',
      });
    }
  }

  /** Whether the whole stream has been seen (the trailer arrived and agreed). */
  get complete(): boolean {
    return this.trailer !== undefined;
  }

  /** At the end of the input: the trailer, or an error that says the stream is incomplete. */
  end(): StreamTrailer {
    if (!this.header) {
      throw new InputError(`${this.source}: empty stream (no header); pipe the output of an alexnet-stream stage`, { code: 'ERR_STREAM_NO_HEADER' });
    }
    if (!this.trailer) {
      const who = this.header.producer ?? 'the stage that wrote it';
      throw new InputError(
        `${this.describe()} ended after ${this.records} record${this.records === 1 ? '' : 's'} without its trailer: ` +
          `${who} (or a stage between it and this one) stopped before finishing (killed, or failed: see its message); ` +
          'the stream is incomplete and nothing was finalised from it',
        { code: 'ERR_STREAM_NO_TRAILER' },
      );
    }
    return this.trailer;
  }

  /** `skipped` of the input's trailer (0 when it does not say), for the next trailer. */
  get skippedUpstream(): number {
    return this.trailer?.skipped ?? 0;
  }
}
