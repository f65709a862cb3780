/**
 * Stacks loaded batches of one size into a reused buffer: the input of an engine's `stepGroup`
 * (several SGD steps in one run). Each batch is copied in as it arrives, so its loader buffer can
 * go back to the loader at once: the loader's queue_depth stays the bound on its memory, and a
 * group larger than the queue cannot deadlock. Memory: capacity x the largest batch, allocated
 * when first needed.
 */
import type { BatchGroup, EngineBatch } from '../engine';

export class BatchStacker {
  private data = new Float32Array(0);
  private labels = new Int32Array(0);
  /** Values per batch of the current group (all its batches have the same size). */
  private valuesPerBatch = 0;
  /** Batches stacked so far, and their common size (images per batch). */
  count = 0;
  size = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`BatchStacker: capacity must be a positive integer, got ${capacity}`);
  }

  /** Whether `batch` can join this group: room left, and the same size as the batches in it. */
  accepts(batch: EngineBatch): boolean {
    return this.count < this.capacity && (this.count === 0 || (batch.size === this.size && batch.data.length === this.valuesPerBatch));
  }

  add(batch: EngineBatch): void {
    if (!this.accepts(batch))
      throw new Error(`BatchStacker: a batch of ${batch.size} images cannot join ${this.count} of ${this.size} (capacity ${this.capacity})`);
    if (this.count === 0) {
      this.size = batch.size;
      this.valuesPerBatch = batch.data.length;
      if (this.data.length < this.capacity * batch.data.length) this.data = new Float32Array(this.capacity * batch.data.length);
      if (this.labels.length < this.capacity * batch.size) this.labels = new Int32Array(this.capacity * batch.size);
    }
    this.data.set(batch.data, this.count * this.valuesPerBatch);
    this.labels.set(batch.labels, this.count * this.size);
    this.count += 1;
  }

  /** The stacked batches (views of the reused buffers: valid until the next `clear`). */
  group(): BatchGroup {
    return {
      data: this.data.subarray(0, this.count * this.valuesPerBatch),
      labels: this.labels.subarray(0, this.count * this.size),
      size: this.size,
      count: this.count,
    };
  }

  clear(): void {
    this.count = 0;
  }
}
