/**
 * `train --config config.yaml [flags]`: the seed's train.py. Wiring only: flags → config
 * overrides (validated by the same schema as the YAML file), the library's `runTraining`, and
 * its events rendered on stderr (lines every print_freq iterations; a progress bar on a TTY).
 * stdout gets one JSON line at the end (the summary), for scripts.
 */
import type { Command } from 'commander';
import { invalidParameter, UsageError } from '@alexnet-stream/core';
import {
  checkConfigValue,
  type ConfigKey,
  isConfigKey,
  readConfigFile,
  resolveConfig,
  runTraining,
  suggestKey,
  type TrainConfig,
  type TrainEvent,
  ENGINE_NAMES,
} from '@alexnet-stream/trainer-multigpu';
import { checkDevices } from '@alexnet-stream/onnx-export';
import { parse as parseYaml } from 'yaml';
import { action, flagNamer, parseInteger, parseNumber, PROGRAM, stdinRecords } from '../cli-support';
import { Progress } from '../progress';
import type { CommandContext } from '.';
import { launchLocalWorkers, localWorkerCount } from '../multi-worker';

interface TrainCliOptions {
  config?: string;
  data?: string;
  weightsDir?: string;
  init?: string;
  maxIters?: number;
  epochs?: number;
  resume?: boolean | number;
  engine?: string;
  devices?: string;
  batchSize?: number;
  lr?: number;
  seed?: number;
  stdin?: boolean;
  set: string[];
  workers?: number;
  syncMomentum?: boolean;
}

/** runTraining's parameters and config keys as this command's messages name them (the rest by their flags). */
const TRAIN_NAMES: Record<string, string> = {
  stdinRecords: '--stdin',
  learningRate: '--lr',
  learning_rate: '--set learning_rate',
  data_dir: 'data_dir in the config or pass --data <dir>',
  weights_dir: 'weights_dir (--weights-dir)',
};

function parseResume(value: string): number {
  return parseInteger('--resume', 0)(value);
}

function collectSet(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** `key=value` (value in YAML syntax) → a validated override. */
function parseSetOption(item: string): [ConfigKey, unknown] {
  const eq = item.indexOf('=');
  if (eq <= 0) throw invalidParameter('--set', 'key=value (a config key and a YAML value)', item);
  const key = item.slice(0, eq).trim();
  if (!isConfigKey(key)) {
    const suggestion = suggestKey(key);
    throw new UsageError(`--set: unknown config key "${key}"${suggestion ? `; did you mean "${suggestion}"?` : ''}`);
  }
  let value: unknown;
  try {
    value = parseYaml(item.slice(eq + 1));
  } catch {
    value = item.slice(eq + 1);
  }
  return [key, checkConfigValue(key, value, `--set ${key}`)];
}

function overridesFrom(opts: TrainCliOptions): Partial<TrainConfig> {
  const o: Record<string, unknown> = {};
  for (const item of opts.set) {
    const [key, value] = parseSetOption(item);
    o[key] = value;
  }
  const flag = (key: ConfigKey, value: unknown, name: string) => {
    if (value !== undefined) o[key] = checkConfigValue(key, value, name);
  };
  flag('data_dir', opts.data, '--data');
  flag('weights_dir', opts.weightsDir, '--weights-dir');
  flag('n_epochs', opts.epochs, '--epochs');
  flag('engine', opts.engine, '--engine');
  flag('devices', opts.devices, '--devices');
  flag('batch_size', opts.batchSize, '--batch-size');
  flag('learning_rate', opts.lr, '--lr');
  flag('seed', opts.seed, '--seed');
  flag('sync_momentum', opts.syncMomentum, '--sync-momentum');
  return o as Partial<TrainConfig>;
}

/** lr is float32 (as the seed's): show it without float32's decimal tail. */
const lrText = (lr: number): string => String(Number(lr.toPrecision(6)));
const pct = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '-' : `${(100 * v).toFixed(2)}%`);

/** Renders library events on stderr: plain lines, plus a bar for the current epoch on a TTY. */
class TrainRenderer {
  private bar: Progress | undefined;
  private readonly tty = Boolean(process.stderr.isTTY);

  line(text: string): void {
    if (this.bar && this.tty) process.stderr.write('\r\x1b[K');
    process.stderr.write(`${PROGRAM} train: ${text}\n`);
  }

  notice = (message: string): void => this.line(message);

  onEvent = (e: TrainEvent): void => {
    switch (e.type) {
      case 'start': {
        const per = Number.isFinite(e.iterationsPerEpoch) ? `${e.iterationsPerEpoch} iterations per epoch` : 'batches from stdin';
        this.line(
          `${e.epochs} epochs, ${per}${e.worldSize > 1 ? `, ${e.worldSize} workers` : ''}; starting at iteration ${e.state.iteration}, lr ${lrText(e.state.lr)}`,
        );
        break;
      }
      case 'epoch-start':
        this.bar?.stop();
        this.bar = this.tty
          ? new Progress({
              label: `epoch ${e.epoch}`,
              unit: 'iters',
              total: Number.isFinite(e.iterations) ? e.iterations - e.startIteration : undefined,
              enabled: true,
            })
          : undefined;
        break;
      case 'step':
        this.bar?.tick();
        break;
      case 'log': {
        const l = e.entry;
        this.line(
          `iteration ${l.iteration} (epoch ${l.epoch}): loss ${l.loss.toFixed(4)}` +
            (l.top1Error !== undefined ? `, train error ${pct(l.top1Error)}` : '') +
            `, lr ${lrText(l.lr)}, ${l.imagesPerSecond.toFixed(1)} img/s, waited for data ${(100 * l.waitFraction).toFixed(1)}%`,
        );
        break;
      }
      case 'validation':
        this.bar?.stop();
        this.bar = undefined;
        this.line(
          `epoch ${e.result.epoch} validation: top-1 error ${pct(e.result.top1Error)}, top-5 error ${pct(e.result.top5Error)}, loss ${e.result.loss.toFixed(4)} (${e.result.images} images)`,
        );
        break;
      case 'lr':
        this.line(`learning rate -> ${lrText(e.lr)} after epoch ${e.epoch} (${e.reason})`);
        break;
      case 'checkpoint':
        this.line(`checkpoint ${e.path}${e.reason === 'max-iters' ? ' (--max-iters reached)' : ''}`);
        break;
      case 'done': {
        this.bar?.stop();
        this.bar = undefined;
        const s = e.summary;
        const rate = s.trainSeconds > 0 ? s.imagesRun / s.trainSeconds : 0;
        this.line(
          `${s.stopReason === 'completed' ? 'done' : `stopped (${s.stopReason})`}: ${s.iterationsRun} iterations, ${s.imagesRun} images in ${s.trainSeconds.toFixed(1)} s ` +
            `(${rate.toFixed(1)} img/s); the engine waited for data ${(100 * s.waitFraction).toFixed(1)}% of the time`,
        );
        break;
      }
    }
  };

  stop(): void {
    this.bar?.stop();
  }
}

export function register(program: Command, context: CommandContext = {}): void {
  program
    .command('train')
    .summary('train AlexNet on a data dir (or float32 batches on stdin), with validation, checkpoints and resume')
    .description(
      "Train from a config file (the seed's config.yaml keys plus ours; see docs/training.md), flags override it.\n" +
        'Every print_freq iterations a line on stderr; every epoch a validation (top-1, top-5, loss) appended\n' +
        'to <weights_dir>/val_record.json; a checkpoint <weights_dir>/epoch-NNNN/ every snapshot_freq epochs.\n' +
        '--max-iters stops at exactly that iteration with a checkpoint; --resume continues exactly from one.\n' +
        'stdout: one JSON line summarising the run.',
    )
    .option('--config <file>', 'config.yaml (keys: see docs/training.md "Config keys"); without it, defaults + flags')
    .option('--data <data-dir>', 'data_dir: shard dir with train/val sets and mean.npy (from prepare)')
    .option('--weights-dir <dir>', 'weights_dir: checkpoints, val_record, train_log')
    .option('--init <checkpoint>', 'start from pretrained weights (checkpoint dir or .safetensors); fc8 of another class count is re-initialised')
    .option('--max-iters <n>', 'stop when the iteration count reaches n, writing a checkpoint of that exact state', parseInteger('--max-iters', 0))
    .option('--epochs <n>', 'n_epochs', parseInteger('--epochs', 1))
    .option('--resume [epoch]', "continue from the latest checkpoint in weights_dir (or that epoch's)", parseResume)
    .option('--engine <name>', `engine: ${ENGINE_NAMES.join(' or ')}`)
    .option('--devices <list>', 'devices, comma-separated: cpu, webgpu, cuda:0, … (one worker each); docs/gpus.md')
    .option('--batch-size <n>', 'batch_size', parseInteger('--batch-size', 1))
    .option('--lr <x>', "learning_rate; with --resume it replaces the checkpoint's lr (e.g. after a NaN loss)", parseNumber('--lr', 0, 1e6))
    .option('--seed <n>', 'seed', parseInteger('--seed', 0, 0xffffffff))
    .option('--stdin', 'train on float32 batch records from stdin (read | augment | train --stdin)')
    .option('--set <key=value>', 'any config key (repeatable), e.g. --set lr_policy=auto --set lr_step=[10,20]', collectSet, [])
    .option(
      '--workers <n>',
      'n local worker processes averaging weights over ZeroMQ (default: one per --devices entry); docs/multi-worker.md',
      parseInteger('--workers', 1),
    )
    .option(
      '--sync-momentum',
      'sync_momentum: with several workers, average the momentum velocities too at each sync (default: they stay local, as in the seed)',
    )
    .action(
      action(
        'train',
        async (opts: TrainCliOptions, command: Command) => {
          const file = opts.config ? await readConfigFile(opts.config) : {};
          const overrides = overridesFrom(opts);
          // A learning rate on the command line of a resumed run replaces the checkpoint's lr (the
          // library says so on stderr); the config keeps the run's configured initial lr, so that
          // the next plain --resume does not take the flag's value for a change of config.
          const resuming = opts.resume !== undefined ? opts.resume !== false : resolveConfig(file, overrides).resume_train;
          const learningRate = resuming ? overrides.learning_rate : undefined;
          if (resuming) delete overrides.learning_rate;
          const resolved = resolveConfig(file, overrides);
          // A device this machine cannot have fails here, in one line, before any data is read.
          if (resolved.engine === 'onnxruntime') checkDevices(resolved.devices);
          // Multi-worker (docs/multi-worker.md): launch local workers, or be one.
          const worker = context.trainWorker;
          const workers = worker ? 1 : localWorkerCount(resolved, opts.workers);
          if (workers > 1) return launchLocalWorkers({ workers, devices: resolved.devices, trainArgs: process.argv.slice(3) });
          const config = worker ? worker.adjust(resolved) : resolved;
          const group = worker ? await worker.join(config) : undefined;
          const renderer = new TrainRenderer();
          try {
            const result = await runTraining(config, {
              group,
              maxIters: opts.maxIters,
              resume: opts.resume,
              init: opts.init,
              learningRate,
              stdinRecords: opts.stdin ? stdinRecords(['batch'], undefined, 'train --stdin') : undefined,
              onEvent: worker?.quiet ? undefined : renderer.onEvent,
              onNotice: worker?.quiet ? undefined : renderer.notice,
              nameParameter: flagNamer(command, TRAIN_NAMES),
            });
            if (worker?.quiet) return;
            const best = result.state.valRecord.reduce<(typeof result.state.valRecord)[number] | undefined>(
              (b, r) => (!b || r.top1Error < b.top1Error ? r : b),
              undefined,
            );
            const last = result.state.valRecord[result.state.valRecord.length - 1];
            process.stdout.write(
              `${JSON.stringify({
                stopReason: result.stopReason,
                epochsCompleted: result.state.epochsCompleted,
                iteration: result.state.iteration,
                lr: result.state.lr,
                checkpoint: result.lastCheckpoint ?? null,
                weightsDir: result.weightsDir,
                lastValidation: last ?? null,
                bestValidation: best ?? null,
                imagesPerSecond: result.trainSeconds > 0 ? result.imagesRun / result.trainSeconds : null,
                waitFraction: result.waitFraction,
              })}\n`,
            );
          } finally {
            renderer.stop();
          }
        },
        TRAIN_NAMES,
      ),
    );
}
