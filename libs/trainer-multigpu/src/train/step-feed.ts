/**
 * What the training loop runs next, and what it prints: `StepFeed` turns an epoch's batch
 * stream into engine runs (one step, or a group of up to `limit` stacked batches of one size for
 * engines with `stepGroup`); `PrintWindow` sums the steps since the last log line.
 */
import type { BatchMetrics, TrainingEngine } from '../engine';
import { BatchStacker } from './batch-stacker';
import type { BatchStream, LoadedBatch } from './loader';

/** One run of the engine, ready to go: its steps' metrics in order. */
export type EngineRun = () => Promise<BatchMetrics[]>;

export class StepFeed {
  /** A batch of another size (or a partial last one) waits here for the next run. */
  private pending: LoadedBatch | undefined;
  private ended = false;

  constructor(
    private readonly stream: BatchStream,
    private readonly engine: TrainingEngine,
    private readonly stacker: BatchStacker | undefined,
  ) {}

  /**
   * The next run of at most `limit` steps, or null at the end of the stream. Step k of the run
   * (0, 1, …) trains at `lrOfStep(k)`, asked in order when the run starts (a per-iteration
   * schedule gives each step of a group its own lr).
   */
  async next(limit: number, lrOfStep: (k: number) => number): Promise<EngineRun | null> {
    const { engine, stream, stacker } = this;
    if (!stacker || limit === 1) {
      const batch = await this.take();
      if (!batch) return null;
      return async () => {
        const metrics = await engine.step(batch, lrOfStep(0));
        stream.release(batch);
        return [metrics];
      };
    }
    stacker.clear();
    while (stacker.count < limit) {
      const batch = await this.take();
      if (!batch) break;
      if (!stacker.accepts(batch)) {
        this.pending = batch;
        break;
      }
      stacker.add(batch);
      stream.release(batch);
    }
    if (stacker.count === 0) return null;
    return () => {
      const lrs = Array.from({ length: stacker.count }, (_, k) => lrOfStep(k));
      return engine.stepGroup!(stacker.group(), lrs);
    };
  }

  /** Stop the epoch's stream early, releasing the batch that waits. */
  cancel(): void {
    if (this.pending) this.stream.release(this.pending);
    this.pending = undefined;
    this.stream.cancel();
  }

  private async take(): Promise<LoadedBatch | null> {
    if (this.pending) {
      const batch = this.pending;
      this.pending = undefined;
      return batch;
    }
    if (this.ended) return null;
    const batch = await this.stream.next();
    this.ended = batch === null;
    return batch;
  }
}

/** Engines that run several steps per call (onnxruntime: stepGroup) get stacked batches. */
export function stackerFor(engine: TrainingEngine): BatchStacker | undefined {
  const stepsPerRun = engine.stepGroup ? Math.max(1, engine.stepsPerRun ?? 1) : 1;
  return stepsPerRun > 1 ? new BatchStacker(stepsPerRun) : undefined;
}

/** Sums of this worker's steps since the last log line. */
export class PrintWindow {
  lossSum = 0;
  errors = 0;
  images = 0;
  waitMs = 0;
  startedAt = performance.now();

  add(metrics: BatchMetrics): void {
    this.lossSum += metrics.loss * metrics.size;
    this.errors += metrics.top1Errors;
    this.images += metrics.size;
  }

  reset(): void {
    this.lossSum = this.errors = this.images = this.waitMs = 0;
    this.startedAt = performance.now();
  }
}
