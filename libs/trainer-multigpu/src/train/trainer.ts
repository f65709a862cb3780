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
import type { BatchStream, LoadedBatch } from './loader';
import { BatchStacker } from './batch-stacker';
import { lrAfterEpoch } from './lr-policy';
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
  /** The lr the epoch was trained with. */
  lr: number;
}

/** The loop's position and memory: what a checkpoint's state.json holds besides config and RNGs. */
export interface TrainState {
  epochsCompleted: number;
  /** Iterations already done inside epoch `epochsCompleted + 1` (0 at an epoch boundary). */
  iterationInEpoch: number;
  /** Iterations done in total. */
  iteration: number;
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
  config: Pick<TrainConfig, 'n_epochs' | 'print_freq' | 'print_train_error' | 'snapshot_freq' | 'sync_every' | 'sync_momentum' | 'lr_policy' | 'lr_step' | 'lr_adapt_threshold'>;
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

const now = (): number => performance.now();

function cloneState(s: TrainState): TrainState {
  return { ...s, valRecord: s.valRecord.map((v) => ({ ...v })) };
}

/** Sum validation metrics over a pass, averaged (then re-multiplied) over the worker group. */
export async function validate(engine: TrainingEngine, stream: BatchStream, group: WorkerGroup): Promise<{ top1Error: number; top5Error: number; loss: number; images: number }> {
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

export async function runTrainingLoop(options: TrainLoopOptions): Promise<TrainSummary> {
  const { config, engine, group, train } = options;
  const emit = (e: TrainEvent): void => options.onEvent?.(e);
  const isRoot = group.rank === 0;
  const s = cloneState(options.state);
  const startIteration = s.iteration;
  let lastCheckpoint: string | undefined;
  let waitMs = 0;
  /** The advice of a divergence: resume from the newest checkpoint there is, at a lower lr. */
  const divergenceAdvice = (lr: number): MessageRender => {
    const from = lastCheckpoint ?? options.resumedFrom;
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
  };
  let trainMs = 0;
  let imagesRun = 0;

  const checkpoint = async (reason: 'snapshot' | 'max-iters' | 'final'): Promise<void> => {
    await group.barrier?.();
    if (isRoot) {
      lastCheckpoint = await options.writeCheckpoint(cloneState(s), reason);
      emit({ type: 'checkpoint', path: lastCheckpoint, reason });
    }
    await group.barrier?.();
  };
  const summary = (stopReason: StopReason): TrainSummary => ({
    state: cloneState(s),
    stopReason,
    iterationsRun: s.iteration - startIteration,
    imagesRun,
    waitFraction: trainMs > 0 ? waitMs / trainMs : 0,
    trainSeconds: trainMs / 1000,
    lastCheckpoint,
  });
  const finish = (stopReason: StopReason): TrainSummary => {
    const result = summary(stopReason);
    emit({ type: 'done', summary: result });
    return result;
  };
  const syncWeights = async (): Promise<void> => {
    engine.setWeights(await group.averageWeights(engine.getWeights()));
    // Velocities stay local as in the seed, unless sync_momentum: then the same all-reduce.
    if (config.sync_momentum) engine.setVelocities(await group.averageWeights(engine.getVelocities()));
  };

  // Engines that run several steps per call (onnxruntime: stepGroup) get stacked batches.
  const stepsPerRun = engine.stepGroup ? Math.max(1, engine.stepsPerRun ?? 1) : 1;
  const stacker = stepsPerRun > 1 ? new BatchStacker(stepsPerRun) : undefined;

  if (group.worldSize > 1 && group.broadcastWeights) engine.setWeights(await group.broadcastWeights(engine.getWeights()));
  emit({ type: 'start', epochs: config.n_epochs, iterationsPerEpoch: train.iterationsPerEpoch, state: cloneState(s), worldSize: group.worldSize });
  if (options.maxIters !== undefined && s.iteration >= options.maxIters) {
    await checkpoint('max-iters'); // `--max-iters 0`: the initial state (e.g. after --init) as a checkpoint
    return finish('max-iters');
  }

  while (s.epochsCompleted < config.n_epochs) {
    const epoch = s.epochsCompleted + 1;
    const stream = train.open(epoch, s.iterationInEpoch);
    emit({ type: 'epoch-start', epoch, iterations: train.iterationsPerEpoch, startIteration: s.iterationInEpoch });
    // The print window: sums since the last log line.
    let windowLoss = 0;
    let windowErrors = 0;
    let windowImages = 0;
    let windowWaitMs = 0;
    let windowStart = now();
    let endOfInput = false;
    // The next run of the engine: one step, or a group of up to `limit` stacked batches of one
    // size (a batch of another size, a partial last one, waits in `pending` for the next run).
    let pending: LoadedBatch | undefined;
    let streamEnded = false;
    const take = async (): Promise<LoadedBatch | null> => {
      if (pending) {
        const batch = pending;
        pending = undefined;
        return batch;
      }
      if (streamEnded) return null;
      const batch = await stream.next();
      streamEnded = batch === null;
      return batch;
    };
    const releasePending = (): void => {
      if (pending) stream.release(pending);
      pending = undefined;
    };
    const nextRun = async (limit: number): Promise<(() => Promise<BatchMetrics[]>) | null> => {
      if (!stacker || limit === 1) {
        const batch = await take();
        if (!batch) return null;
        return async () => {
          const metrics = await engine.step(batch, s.lr);
          stream.release(batch);
          return [metrics];
        };
      }
      stacker.clear();
      while (stacker.count < limit) {
        const batch = await take();
        if (!batch) break;
        if (!stacker.accepts(batch)) {
          pending = batch;
          break;
        }
        stacker.add(batch);
        stream.release(batch);
      }
      if (stacker.count === 0) return null;
      return () => engine.stepGroup!(stacker.group(), s.lr);
    };
    try {
      for (;;) {
        // A finished epoch ends here, before the max-iters check, so that a stop at an epoch
        // boundary still validates that epoch and writes its regular checkpoint.
        if (s.iterationInEpoch >= train.iterationsPerEpoch) {
          stream.cancel();
          break;
        }
        if (options.maxIters !== undefined && s.iteration >= options.maxIters) {
          releasePending();
          stream.cancel();
          await checkpoint('max-iters');
          return finish('max-iters');
        }
        // A group never runs past a point where the loop must stop between two steps: the end of
        // the epoch, --max-iters, a progress line (its img/s spans whole groups) or a sync.
        const groupLimit = Math.min(
          stepsPerRun,
          train.iterationsPerEpoch - s.iterationInEpoch,
          (options.maxIters ?? Infinity) - s.iteration,
          config.print_freq - (s.iteration % config.print_freq),
          group.worldSize > 1 ? config.sync_every - (s.iteration % config.sync_every) : Infinity,
        );
        const t0 = now();
        const run = await nextRun(groupLimit);
        const t1 = now();
        if (!run) break;
        const stepMetrics = await run();
        const t2 = now();
        waitMs += t1 - t0;
        windowWaitMs += t1 - t0;
        trainMs += t2 - t0;
        for (const metrics of stepMetrics) {
          if (!Number.isFinite(metrics.loss)) {
            const advice = divergenceAdvice(s.lr);
            const where = `iteration ${s.iteration + 1} (epoch ${epoch}, batch ${s.iterationInEpoch + 1})`;
            throw new TrainingDivergedError((name) => `${where}: the loss is ${metrics.loss}; training stopped. ${advice(name)}`);
          }
          s.iteration += 1;
          s.iterationInEpoch += 1;
          imagesRun += metrics.size;
          options.afterStep?.(s.iteration, metrics);
          if (group.worldSize > 1 && s.iteration % config.sync_every === 0) await syncWeights();
          windowLoss += metrics.loss * metrics.size;
          windowErrors += metrics.top1Errors;
          windowImages += metrics.size;
          emit({ type: 'step', epoch, iteration: s.iteration, iterationInEpoch: s.iterationInEpoch, images: metrics.size });
          if (s.iteration % config.print_freq === 0) {
            // The window's sums over all workers (a collective: every rank reaches this iteration).
            const [lossSum, errors, images] = (await group.averageMetrics([windowLoss, windowErrors, windowImages])).map((v) => v * group.worldSize);
            const elapsedMs = now() - windowStart;
            const entry: TrainLogEntry = {
              iteration: s.iteration,
              epoch,
              loss: lossSum / images,
              ...(config.print_train_error ? { top1Error: errors / images } : {}),
              images: Math.round(images),
              lr: s.lr,
              imagesPerSecond: images / Math.max(1e-9, elapsedMs / 1000),
              waitFraction: elapsedMs > 0 ? Math.min(1, windowWaitMs / elapsedMs) : 0,
              time: new Date().toISOString(),
            };
            if (isRoot) {
              emit({ type: 'log', entry });
              await options.appendLog?.(entry);
            }
            windowLoss = windowErrors = windowImages = windowWaitMs = 0;
            windowStart = now();
          }
        }
      }
      if (train.iterationsPerEpoch === Infinity) endOfInput = true;
    } catch (err) {
      releasePending();
      stream.cancel();
      throw err;
    }

    // The epoch is complete.
    s.epochsCompleted = epoch;
    s.iterationInEpoch = 0;
    if (options.val) {
      const v = await validate(engine, options.val.open(epoch), group);
      const result: ValidationResult = { epoch, iteration: s.iteration, ...v, lr: s.lr };
      // Weights that give a NaN or infinite validation loss have diverged even when the training
      // loss still looks finite (dead ReLUs hide it): stop before they become a checkpoint.
      if (v.images > 0 && !Number.isFinite(v.loss)) {
        const advice = divergenceAdvice(s.lr);
        throw new TrainingDivergedError(
          (name) => `epoch ${epoch} validation: the loss is ${v.loss}; training stopped before this epoch's checkpoint. ${advice(name)}`,
        );
      }
      s.valRecord.push(result);
      if (isRoot) {
        emit({ type: 'validation', result });
        await options.recordValidation?.(s.valRecord.map((r) => ({ ...r })));
      }
      const decision = lrAfterEpoch(config, s.lr, epoch, s.valRecord.map((r) => r.top1Error), s.lastLrChangeEpoch);
      if (decision.changed) {
        s.lr = decision.lr;
        s.lastLrChangeEpoch = epoch;
        if (isRoot) emit({ type: 'lr', epoch, lr: s.lr, reason: decision.reason! });
      }
    } else if (config.lr_policy === 'step') {
      const decision = lrAfterEpoch(config, s.lr, epoch, [], s.lastLrChangeEpoch);
      if (decision.changed) {
        s.lr = decision.lr;
        s.lastLrChangeEpoch = epoch;
        if (isRoot) emit({ type: 'lr', epoch, lr: s.lr, reason: decision.reason! });
      }
    }
    const last = epoch === config.n_epochs || endOfInput;
    if (epoch % config.snapshot_freq === 0 || last) await checkpoint(last ? 'final' : 'snapshot');
    if (endOfInput) return finish('end-of-input');
  }
  return finish('completed');
}
