/**
 * The training loop (the seed's train.py): epochs of SGD steps, validation after each epoch,
 * the lr policy, checkpoints every `snapshot_freq` epochs, and an exact stop at `--max-iters`.
 *
 * Everything the loop touches comes in through `TrainLoopOptions` (engine, batch sources,
 * worker group, checkpoint writer, log sink), so it runs the same with the onnxruntime engine,
 * the tfjs engine on a tiny spec in tests, one worker or several. It reports what happens as
 * `TrainEvent`s; rendering them (lines, a progress bar) is the CLI's business.
 *
 * Exactness of resume: the loop's whole state is `TrainState` (+ the engine's weights,
 * velocities and dropout RNG); the data of iteration j of epoch e is a pure function of
 * (seed, e, j) (see loader-core). A run resumed from a checkpoint therefore performs the very
 * same float operations as one that never stopped.
 */
import { AlexnetStreamError, type MessageRender } from '@alexnet-stream/core';
import type { ModelSpec } from '@alexnet-stream/model-alexnet';
import type { BatchMetrics, TrainingEngine } from '../engine';
import type { TrainConfig } from './config';
import type { BatchStream } from './loader';
import { lrAfterEpoch, lrAtIteration } from './lr-policy';
import { PrintWindow, StepFeed, stackerFor } from './step-feed';
import type { WorkerGroup } from './worker-group';

/** One validation pass (an element of val_record.json). */
export interface ValidationResult {
  epoch: number;
  /** Global iteration count when it ran. */
  iteration: number;
  top1Error: number;
  top5Error: number;
  loss: number;
  images: number;
  /** The lr the epoch was trained with (under a per-iteration schedule: its last step's). */
  lr: number;
}

/** The loop's position and memory: what a checkpoint's state.json holds besides config and RNGs. */
export interface TrainState {
  epochsCompleted: number;
  /** Iterations already done inside epoch `epochsCompleted + 1` (0 at an epoch boundary). */
  iterationInEpoch: number;
  /** Iterations done in total. */
  iteration: number;
  /** The base lr (lr-policy.ts): what `step`/`auto` divide and `--resume --lr` replaces; each step's lr is `lrAtIteration` of it. */
  lr: number;
  /** Epoch after which lr last changed (0: never); the `auto` policy waits two epochs after a change. */
  lastLrChangeEpoch: number;
  valRecord: ValidationResult[];
}

export function initialState(config: Pick<TrainConfig, 'learning_rate'>): TrainState {
  // The seed keeps lr as float32; so do we, so that lr / 10 matches it exactly.
  return { epochsCompleted: 0, iterationInEpoch: 0, iteration: 0, lr: Math.fround(config.learning_rate), lastLrChangeEpoch: 0, valRecord: [] };
}

/** A line of train_log.jsonl (one per print_freq iterations). */
export interface TrainLogEntry {
  iteration: number;
  epoch: number;
  /** Mean loss over the images of all workers since the previous line. */
  loss: number;
  /** Top-1 error over the same images (when print_train_error). */
  top1Error?: number;
  /** Images trained on since the previous line, by all workers together (absent in older logs). */
  images?: number;
  /** The lr of the window's last step. */
  lr: number;
  imagesPerSecond: number;
  /** Fraction of the window's time the engine waited for data. */
  waitFraction: number;
  /** ISO time. */
  time: string;
}

export type StopReason = 'completed' | 'max-iters' | 'end-of-input';

export interface TrainSummary {
  state: TrainState;
  stopReason: StopReason;
  /** Iterations run by this process (not counting resumed ones). */
  iterationsRun: number;
  imagesRun: number;
  /** Fraction of training time the engine thread waited for a batch. */
  waitFraction: number;
  trainSeconds: number;
  lastCheckpoint?: string;
}

export type TrainEvent =
  | { type: 'start'; epochs: number; iterationsPerEpoch: number; state: TrainState; worldSize: number }
  | { type: 'epoch-start'; epoch: number; iterations: number; startIteration: number }
  | { type: 'step'; epoch: number; iteration: number; iterationInEpoch: number; images: number }
  | { type: 'log'; entry: TrainLogEntry }
  | { type: 'validation'; result: ValidationResult }
  | { type: 'lr'; epoch: number; lr: number; reason: string }
  | { type: 'checkpoint'; path: string; reason: 'snapshot' | 'max-iters' | 'final' }
  | { type: 'done'; summary: TrainSummary };

/** Training produced a NaN or infinite loss: stop, keep the last checkpoint, exit 1. */
export class TrainingDivergedError extends AlexnetStreamError {
  constructor(message: string | MessageRender) {
    super(message, { code: 'ERR_TRAINING_DIVERGED' });
  }
}

/** A source of training batches: one stream per epoch, from a position. */
export interface TrainSource {
  /** Iterations per epoch for this worker; Infinity for a stream of unknown length (stdin). */
  iterationsPerEpoch: number;
  open(epoch: number, startIteration: number): BatchStream;
}

export interface ValSource {
  open(epoch: number): BatchStream;
}

export interface TrainLoopOptions {
  config: Pick<
    TrainConfig,
    | 'n_epochs'
    | 'print_freq'
    | 'print_train_error'
    | 'snapshot_freq'
    | 'sync_every'
    | 'sync_momentum'
    | 'lr_policy'
    | 'lr_step'
    | 'lr_adapt_threshold'
    | 'lr_warmup_epochs'
    | 'lr_min'
    | 'lr_power'
  >;
  spec: ModelSpec;
  engine: TrainingEngine;
  group: WorkerGroup;
  train: TrainSource;
  val?: ValSource;
  state: TrainState;
  /** Stop when the global iteration count reaches this, writing a checkpoint of that exact state. */
  maxIters?: number;
  /** The checkpoint this run resumed from (what a divergence before the next checkpoint falls back to). */
  resumedFrom?: string;
  /** Write a checkpoint of `state` (rank 0 only); returns its path. */
  writeCheckpoint(state: TrainState, reason: 'snapshot' | 'max-iters' | 'final'): Promise<string>;
  /** After each validation, with the whole record so far (rank 0 only): val_record.json/.npy. */
  recordValidation?(record: ValidationResult[]): Promise<void>;
  /** Append a line to train_log.jsonl (rank 0 only). */
  appendLog?(entry: TrainLogEntry): Promise<void>;
  onEvent?(event: TrainEvent): void;
  /** Called after every step (tests use it to simulate failures). */
  afterStep?(iteration: number, metrics: BatchMetrics): void;
}

function cloneState(s: TrainState): TrainState {
  return { ...s, valRecord: s.valRecord.map((v) => ({ ...v })) };
}

/** Sum validation metrics over a pass, averaged (then re-multiplied) over the worker group. */
export async function validate(
  engine: TrainingEngine,
  stream: BatchStream,
  group: WorkerGroup,
): Promise<{ top1Error: number; top5Error: number; loss: number; images: number }> {
  let lossSum = 0;
  let top1 = 0;
  let top5 = 0;
  let images = 0;
  for (;;) {
    const batch = await stream.next();
    if (!batch) break;
    const m = await engine.evaluate(batch);
    stream.release(batch);
    lossSum += m.loss * m.size;
    top1 += m.top1Errors;
    top5 += m.top5Errors;
    images += m.size;
  }
  const mean = await group.averageMetrics([lossSum, top1, top5, images]);
  const [l, t1, t5, n] = mean.map((v) => v * group.worldSize);
  if (!(n > 0)) return { top1Error: NaN, top5Error: NaN, loss: NaN, images: 0 };
  return { top1Error: t1 / n, top5Error: t5 / n, loss: l / n, images: Math.round(n) };
}

export function runTrainingLoop(options: TrainLoopOptions): Promise<TrainSummary> {
  return new TrainingLoop(options).run();
}

type CheckpointReason = 'snapshot' | 'max-iters' | 'final';

/** One run of the loop: its state and counters, and the steps of an epoch as methods. */
class TrainingLoop {
  private readonly s: TrainState;
  private readonly startIteration: number;
  private readonly isRoot: boolean;
  private readonly stepsPerRun: number;
  /** Stacks batches for engines that run several steps per call; one for the whole run (its buffers are reused). */
  private readonly stacker: ReturnType<typeof stackerFor>;
  private lastCheckpoint: string | undefined;
  private waitMs = 0;
  private trainMs = 0;
  private imagesRun = 0;
  /** The lr of the last step run (what the log line and the validation record report). */
  private lastLr: number;

  constructor(private readonly o: TrainLoopOptions) {
    this.s = cloneState(o.state);
    this.lastLr = this.s.lr;
    this.startIteration = this.s.iteration;
    this.isRoot = o.group.rank === 0;
    this.stacker = stackerFor(o.engine);
    this.stepsPerRun = this.stacker?.capacity ?? 1;
  }

  async run(): Promise<TrainSummary> {
    const { config, engine, group, train } = this.o;
    const s = this.s;
    if (group.worldSize > 1) engine.setWeights(await group.broadcastWeights(engine.getWeights()));
    this.emit({ type: 'start', epochs: config.n_epochs, iterationsPerEpoch: train.iterationsPerEpoch, state: cloneState(s), worldSize: group.worldSize });
    if (this.maxItersReached()) {
      await this.checkpoint('max-iters'); // `maxIters: 0`: the initial state (e.g. after init) as a checkpoint
      return this.finish('max-iters');
    }
    while (s.epochsCompleted < config.n_epochs) {
      const epoch = s.epochsCompleted + 1;
      const end = await this.trainEpoch(epoch);
      if (end === 'max-iters') {
        await this.checkpoint('max-iters');
        return this.finish('max-iters');
      }
      s.epochsCompleted = epoch;
      s.iterationInEpoch = 0;
      await this.endEpoch(epoch);
      const endOfInput = end === 'end-of-input';
      const last = epoch === config.n_epochs || endOfInput;
      if (epoch % config.snapshot_freq === 0 || last) await this.checkpoint(last ? 'final' : 'snapshot');
      if (endOfInput) return this.finish('end-of-input');
    }
    return this.finish('completed');
  }

  private emit(e: TrainEvent): void {
    this.o.onEvent?.(e);
  }

  /** The lr of step `iteration` (0-based, global): the schedule's, from the current base lr. */
  private lrAt(iteration: number): number {
    return lrAtIteration(this.o.config, this.s.lr, iteration, this.o.train.iterationsPerEpoch);
  }

  private maxItersReached(): boolean {
    return this.o.maxIters !== undefined && this.s.iteration >= this.o.maxIters;
  }

  /**
   * The steps of `epoch` from where the state stands: 'complete' at the epoch's end, 'max-iters'
   * at the stop (the feed cancelled), 'end-of-input' when a stream of unknown length ran out.
   */
  private async trainEpoch(epoch: number): Promise<'complete' | 'max-iters' | 'end-of-input'> {
    const { train } = this.o;
    const s = this.s;
    const feed = new StepFeed(train.open(epoch, s.iterationInEpoch), this.o.engine, this.stacker);
    this.emit({ type: 'epoch-start', epoch, iterations: train.iterationsPerEpoch, startIteration: s.iterationInEpoch });
    const window = new PrintWindow();
    try {
      for (;;) {
        // A finished epoch ends here, before the max-iters check, so that a stop at an epoch
        // boundary still validates that epoch and writes its regular checkpoint.
        if (s.iterationInEpoch >= train.iterationsPerEpoch) {
          feed.cancel();
          return 'complete';
        }
        if (this.maxItersReached()) {
          feed.cancel();
          return 'max-iters';
        }
        const t0 = performance.now();
        // Each step's lr from the schedule, read when the run starts (steps k = 0, 1, … of it).
        const run = await feed.next(this.runLimit(), (k) => (this.lastLr = this.lrAt(s.iteration + k)));
        const t1 = performance.now();
        if (!run) return train.iterationsPerEpoch === Infinity ? 'end-of-input' : 'complete';
        const stepMetrics = await run();
        // A lost peer stops this worker at the next step, not only at the next sync (sync_every may be large).
        if (this.o.group.error) throw this.o.group.error;
        this.waitMs += t1 - t0;
        window.waitMs += t1 - t0;
        this.trainMs += performance.now() - t0;
        for (const metrics of stepMetrics) await this.afterStep(epoch, metrics, window);
      }
    } catch (err) {
      feed.cancel();
      throw err;
    }
  }

  /**
   * The most steps the next run may take: a group never runs past a point where the loop must
   * stop between two steps: the end of the epoch, maxIters, a progress line (its img/s spans
   * whole groups) or a sync.
   */
  private runLimit(): number {
    const { config, group, train, maxIters } = this.o;
    const s = this.s;
    return Math.min(
      this.stepsPerRun,
      train.iterationsPerEpoch - s.iterationInEpoch,
      (maxIters ?? Infinity) - s.iteration,
      config.print_freq - (s.iteration % config.print_freq),
      group.worldSize > 1 ? config.sync_every - (s.iteration % config.sync_every) : Infinity,
    );
  }

  /** Account for one step: divergence, counters, the sync every sync_every steps, the log line every print_freq. */
  private async afterStep(epoch: number, metrics: BatchMetrics, window: PrintWindow): Promise<void> {
    const { config, group } = this.o;
    const s = this.s;
    if (!Number.isFinite(metrics.loss)) {
      const advice = this.divergenceAdvice(s.lr);
      const where = `iteration ${s.iteration + 1} (epoch ${epoch}, batch ${s.iterationInEpoch + 1})`;
      throw new TrainingDivergedError((name) => `${where}: the loss is ${metrics.loss}; training stopped. ${advice(name)}`);
    }
    s.iteration += 1;
    s.iterationInEpoch += 1;
    this.imagesRun += metrics.size;
    this.o.afterStep?.(s.iteration, metrics);
    if (group.worldSize > 1 && s.iteration % config.sync_every === 0) await this.syncWeights();
    window.add(metrics);
    this.emit({ type: 'step', epoch, iteration: s.iteration, iterationInEpoch: s.iterationInEpoch, images: metrics.size });
    if (s.iteration % config.print_freq === 0) await this.logWindow(epoch, window);
  }

  /** Average weights (and with sync_momentum, velocities) over the workers: the seed's exchange. */
  private async syncWeights(): Promise<void> {
    const { engine, group, config } = this.o;
    engine.setWeights(await group.averageWeights(engine.getWeights()));
    // Velocities stay local as in the seed, unless sync_momentum: then the same all-reduce.
    if (config.sync_momentum) engine.setVelocities(await group.averageWeights(engine.getVelocities()));
  }

  /** The print window's figures over all workers (a collective: every rank reaches this iteration); rank 0 logs them. */
  private async logWindow(epoch: number, window: PrintWindow): Promise<void> {
    const { config, group } = this.o;
    const s = this.s;
    const [lossSum, errors, images] = (await group.averageMetrics([window.lossSum, window.errors, window.images])).map((v) => v * group.worldSize);
    const elapsedMs = performance.now() - window.startedAt;
    const entry: TrainLogEntry = {
      iteration: s.iteration,
      epoch,
      loss: lossSum / images,
      ...(config.print_train_error ? { top1Error: errors / images } : {}),
      images: Math.round(images),
      lr: this.lastLr,
      imagesPerSecond: images / Math.max(1e-9, elapsedMs / 1000),
      waitFraction: elapsedMs > 0 ? Math.min(1, window.waitMs / elapsedMs) : 0,
      time: new Date().toISOString(),
    };
    if (this.isRoot) {
      this.emit({ type: 'log', entry });
      await this.o.appendLog?.(entry);
    }
    window.reset();
  }

  /** The epoch is complete: validate it (when there is a val set) and let the lr policy decide. */
  private async endEpoch(epoch: number): Promise<void> {
    const { config } = this.o;
    const s = this.s;
    if (this.o.val) {
      await this.validateEpoch(epoch);
      this.applyLrPolicy(
        epoch,
        s.valRecord.map((r) => r.top1Error),
      );
    } else if (config.lr_policy === 'step') {
      this.applyLrPolicy(epoch, []);
    }
  }

  private async validateEpoch(epoch: number): Promise<void> {
    const { engine, group } = this.o;
    const s = this.s;
    const v = await validate(engine, this.o.val!.open(epoch), group);
    const result: ValidationResult = { epoch, iteration: s.iteration, ...v, lr: this.lastLr };
    // Weights that give a NaN or infinite validation loss have diverged even when the training
    // loss still looks finite (dead ReLUs hide it): stop before they become a checkpoint.
    if (v.images > 0 && !Number.isFinite(v.loss)) {
      const advice = this.divergenceAdvice(s.lr);
      throw new TrainingDivergedError(
        (name) => `epoch ${epoch} validation: the loss is ${v.loss}; training stopped before this epoch's checkpoint. ${advice(name)}`,
      );
    }
    s.valRecord.push(result);
    if (this.isRoot) {
      this.emit({ type: 'validation', result });
      await this.o.recordValidation?.(s.valRecord.map((r) => ({ ...r })));
    }
  }

  private applyLrPolicy(epoch: number, top1Errors: number[]): void {
    const s = this.s;
    const decision = lrAfterEpoch(this.o.config, s.lr, epoch, top1Errors, s.lastLrChangeEpoch);
    if (!decision.changed) return;
    s.lr = decision.lr;
    s.lastLrChangeEpoch = epoch;
    if (this.isRoot) this.emit({ type: 'lr', epoch, lr: s.lr, reason: decision.reason! });
  }

  /** Every worker waits for rank 0's checkpoint, so that none races ahead of the state a resume starts from. */
  private async checkpoint(reason: CheckpointReason): Promise<void> {
    const { group } = this.o;
    await group.barrier();
    if (this.isRoot) {
      this.lastCheckpoint = await this.o.writeCheckpoint(cloneState(this.s), reason);
      this.emit({ type: 'checkpoint', path: this.lastCheckpoint, reason });
    }
    await group.barrier();
  }

  /** The advice of a divergence: resume from the newest checkpoint there is, at a lower lr. */
  private divergenceAdvice(lr: number): MessageRender {
    const from = this.lastCheckpoint ?? this.o.resumedFrom;
    const now = Number(lr.toPrecision(6)); // lr is float32: show it without float32's decimal tail
    const lower = Number((lr / 10).toPrecision(3));
    return (name) => {
      // Named as flags (the CLI): a command line; as this API's names: its options.
      const flags = name('resume').startsWith('-');
      const resumeLower = flags
        ? `\`train … ${name('resume')} ${name('learningRate')} ${lower}\` (or ${name('learning_rate')}=${lower})`
        : `{ resume: true, learningRate: ${lower} } (or learning_rate: ${lower} in the config)`;
      return from
        ? `${from} is the last checkpoint, intact: resume from it with a lower learning rate, e.g. ${resumeLower}: ` +
            `a learning rate given with ${name('resume')} replaces the checkpoint's (${now})`
        : `no checkpoint was written yet: start again with a lower learning rate than ${now}, e.g. ${flags ? `${name('learningRate')} ${lower}` : `learning_rate: ${lower}`}`;
    };
  }

  private finish(stopReason: StopReason): TrainSummary {
    const summary: TrainSummary = {
      state: cloneState(this.s),
      stopReason,
      iterationsRun: this.s.iteration - this.startIteration,
      imagesRun: this.imagesRun,
      waitFraction: this.trainMs > 0 ? this.waitMs / this.trainMs : 0,
      trainSeconds: this.trainMs / 1000,
      lastCheckpoint: this.lastCheckpoint,
    };
    this.emit({ type: 'done', summary });
    return summary;
  }
}
