import type { NamedTensors } from '@alexnet-stream/core';
/**
 * The seam between the training loop and multi-worker data parallelism (DESIGN §6).
 *
 * The loop calls, on every worker, in the same order:
 * - `broadcastWeights(weights)` once before the first step, so that every
 *   replica starts from rank 0's weights (they are equal anyway when seeded alike; this also
 *   covers `--init` and `--resume` read on each host);
 * - `averageWeights(weights)` every `sync_every` iterations, with the engine's weights
 *   (`engine.getWeights()`, names in `parameterList(spec)` order); the group replaces each
 *   array's contents, in place, by the mean over all workers, and the loop gives the result
 *   to `engine.setWeights` (the seed exchanged and averaged weights after every iteration);
 *   with `sync_momentum`, right after it, `averageWeights(engine.getVelocities())` likewise
 *   (to `engine.setVelocities`);
 * - `averageMetrics(values)` after each validation pass, with this worker's partial sums
 *   `[lossSum, top1Errors, top5Errors, images]`; it returns the element-wise mean over workers
 *   (the loop multiplies by `worldSize` to get totals); and every `print_freq` iterations with
 *   the print window's `[lossSum, top1Errors, images]`, so that rank 0 logs the group's figures;
 * - `barrier()` before rank 0 writes a checkpoint and after it, so that no
 *   worker races ahead of a checkpoint that a resume would start from;
 * - `close()` once, when training ends or fails.
 *
 * Only rank 0 prints, writes `train_log.jsonl`, `val_record.*` and checkpoints. Each rank reads
 * the training batches `k` with `k % worldSize === rank` (see `planEpoch`), so workers see
 * disjoint data, as the seed's two GPUs did.
 *
 * `SingleProcessGroup` is the one-worker group: averaging over one worker is the identity.
 * The ZeroMQ implementation (`ZmqWorkerGroup` in src/distributed) is the other one; it plugs in
 * as `runTraining(config, { group })`.
 */

export interface WorkerGroup {
  /** 0-based index of this worker; rank 0 writes files and prints. */
  readonly rank: number;
  /** Number of workers (>= 1). */
  readonly worldSize: number;
  /** Replace each tensor, in place, by its element-wise mean over all workers (every rank ends bit-identical); returns `tensors`. */
  averageWeights(tensors: NamedTensors): Promise<NamedTensors>;
  /** Copy rank 0's tensors to every rank, in place; returns `tensors`. */
  broadcastWeights(tensors: NamedTensors): Promise<NamedTensors>;
  /** Element-wise mean of `values` over all workers (same length on every worker), summed in rank order. */
  averageMetrics(values: number[]): Promise<number[]>;
  /** Wait until every worker has reached this point. */
  barrier(): Promise<void>;
  /** Leave together (every worker calls it at the end). */
  close(): Promise<void>;
  /** This worker failed on its own: the others stop, naming it; never waits for them. */
  abort(reason: string): Promise<void>;
  /** The failure that stopped the group (a lost peer), once there is one: the loop checks it between steps. */
  readonly error?: Error;
}

export class SingleProcessGroup implements WorkerGroup {
  readonly rank = 0;
  readonly worldSize = 1;
  async averageWeights(tensors: NamedTensors): Promise<NamedTensors> {
    return tensors; // the mean over one worker is its own value
  }
  async broadcastWeights(tensors: NamedTensors): Promise<NamedTensors> {
    return tensors;
  }
  async averageMetrics(values: number[]): Promise<number[]> {
    return values.slice();
  }
  async barrier(): Promise<void> {}
  async close(): Promise<void> {}
  async abort(): Promise<void> {}
}
