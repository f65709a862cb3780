/**
 * Multi-worker training from the CLI (DESIGN §6), two halves:
 *
 * - `worker` (commands/worker.ts) makes a TrainWorker and runs the `train` command built with it
 *   (buildProgram's context) on the remaining arguments; `train` asks it for the group and for
 *   this worker's view of the config (its own device, its share of the cores), and keeps quiet
 *   on ranks other than 0.
 * - `train --devices a,b` / `--workers N` without a TrainWorker launches N local `worker`
 *   processes on an ipc coordinator in a temp dir, forwards rank 0's output, and stops all of
 *   them as soon as one fails (exit status non-zero, naming the rank).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { readRegularFileSync, UsageError, withTrainingAllocator } from '@alexnet-stream/core';
import {
  checksumTensors,
  joinGroup,
  threadsPerWorker,
  type TrainConfig,
  type WorkerGroup,
  type ZmqGroupOptions,
  type ZmqWorkerGroup,
} from '@alexnet-stream/trainer-multigpu';
import { PROGRAM } from './cli-support';

export interface TrainWorker {
  readonly rank: number;
  readonly worldSize: number;
  /** Ranks other than 0 print nothing but errors (rank 0 speaks for the group). */
  readonly quiet: boolean;
  /** The config as this worker runs it: its own device, its share of the host's cores. */
  adjust(config: TrainConfig): TrainConfig;
  /** Rendezvous with the others; refuses a config or model that differs from rank 0's. */
  join(config: TrainConfig): Promise<WorkerGroup>;
  /** After `train` returns: leave together (ok) or tell the others this rank failed. */
  finish(ok: boolean): Promise<void>;
}

export interface WorkerSettings extends Omit<ZmqGroupOptions, 'identity' | 'onFatal'> {
  /** This worker's device (overrides config.devices), from the local launcher. */
  device?: string;
  /** Workers sharing this host, to split its cores (intra_op_threads 0 = auto). */
  localWorldSize?: number;
  onFatal(err: Error): void;
}

/**
 * What must be equal on every worker: the config except what may differ per worker or host
 * (devices, thread count, paths), and the model (preset, input size, spec file contents).
 */
export function workerIdentity(config: TrainConfig): Record<string, unknown> {
  const {
    devices: _d,
    intra_op_threads: _t,
    data_dir: _dd,
    weights_dir: _w,
    mean_file: _m,
    spec_file,
    ...shared
  } = config as TrainConfig & { mean_file?: unknown };
  let specText: string | null = null;
  if (spec_file) {
    try {
      specText = readRegularFileSync(spec_file, { maxBytes: 16 << 20 }).toString('utf8');
    } catch {
      specText = `unreadable: ${spec_file}`; // runTraining reports it properly
    }
  }
  return { config: shared, modelSpec: { preset: config.preset, inputSize: config.input_size, specFile: specText } };
}

export function makeTrainWorker(settings: WorkerSettings): TrainWorker {
  let group: ZmqWorkerGroup | undefined;
  return {
    rank: settings.rank,
    worldSize: settings.worldSize,
    quiet: settings.rank !== 0,
    adjust(config) {
      const devices = settings.device ? [settings.device] : config.devices;
      const threads = config.intra_op_threads > 0 ? config.intra_op_threads : threadsPerWorker(cpus().length, settings.localWorldSize ?? 1);
      return { ...config, devices, intra_op_threads: threads };
    },
    async join(config) {
      group = await joinGroup({ ...settings, identity: workerIdentity(config) });
      const checksumDir = process.env.ALEXNET_STREAM_SYNC_CHECKSUMS;
      return checksumDir ? logSyncChecksums(group, join(checksumDir, `rank-${settings.rank}.txt`)) : group;
    },
    async finish(ok) {
      if (!group) return;
      if (ok) await group.close();
      else await group.abort(`worker rank ${settings.rank} failed (its error is above)`);
    },
  };
}

/**
 * Debug/test aid (ALEXNET_STREAM_SYNC_CHECKSUMS=dir): append the checksum of the weights after
 * every average to dir/rank-R.txt, so that replicas can be compared sync by sync.
 */
function logSyncChecksums(group: ZmqWorkerGroup, file: string): WorkerGroup {
  return {
    rank: group.rank,
    worldSize: group.worldSize,
    averageWeights: async (tensors) => {
      const out = await group.averageWeights(tensors);
      appendFileSync(file, `${checksumTensors(out)}\n`);
      return out;
    },
    broadcastWeights: (tensors) => group.broadcastWeights(tensors),
    averageMetrics: (values) => group.averageMetrics(values),
    barrier: () => group.barrier(),
    close: () => group.close(),
    abort: (reason) => group.abort(reason),
    get error() {
      return group.error;
    },
  };
}

/** How many local workers `train` should launch: --workers, else one per listed device. */
export function localWorkerCount(config: TrainConfig, workers: number | undefined): number {
  const devices = config.devices.length;
  if (workers !== undefined && devices > 1 && workers !== devices) {
    throw new UsageError(
      `--workers ${workers} but --devices lists ${devices} devices (${config.devices.join(',')}): give one device per worker, or one device for all`,
    );
  }
  return workers ?? devices;
}

/** --peer-timeout-ms's default: ALEXNET_STREAM_PEER_TIMEOUT_MS, else 30 s. */
export function defaultPeerTimeoutMs(): number {
  const env = Number(process.env.ALEXNET_STREAM_PEER_TIMEOUT_MS);
  return Number.isInteger(env) && env >= 200 ? env : 30_000;
}

export interface LaunchOptions {
  workers: number;
  devices: string[];
  /** The `train` arguments as typed (after the command name). */
  trainArgs: string[];
  peerTimeoutMs?: number;
  binPath?: string;
}

/**
 * Run `workers` local worker processes and wait for them. Resolves with the exit code: 0 when
 * all succeed; otherwise the first failure's code (each worker prints why; we add which).
 */
export async function launchLocalWorkers(options: LaunchOptions): Promise<number> {
  const { workers } = options;
  if (options.trainArgs.includes('--stdin')) {
    throw new UsageError(`--stdin feeds one process; with ${workers} workers each reads its own part of data_dir: drop --stdin or train with one worker`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'alexnet-stream-workers-'));
  const coordinator = `ipc://${join(dir, 'coordinator')}`;
  const bin = options.binPath ?? process.argv[1];
  const peerTimeoutMs = options.peerTimeoutMs ?? defaultPeerTimeoutMs();
  const children: ChildProcess[] = [];
  let firstFailure: { rank: number; code: number } | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const forward = (signal: NodeJS.Signals) => () => children.forEach((c) => c.exitCode === null && c.kill(signal));
  const onSigint = forward('SIGINT');
  const onSigterm = forward('SIGTERM');
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  try {
    const exits = [...Array(workers).keys()].map((rank) => {
      const device = options.devices.length > 1 ? options.devices[rank] : options.devices[0];
      const args = [
        bin,
        'worker',
        '--rank',
        String(rank),
        '--world-size',
        String(workers),
        '--coordinator',
        coordinator,
        '--local-world-size',
        String(workers),
        '--device',
        device,
        ...options.trainArgs,
      ];
      // Rank 0 speaks for the group on our stdout/stderr; the others are quiet but for errors.
      // Workers start with the training allocator settings (core's allocator-env: fewer page faults).
      const child = spawn(process.execPath, args, {
        stdio: ['ignore', rank === 0 ? 'inherit' : 'ignore', 'inherit'],
        env: withTrainingAllocator(process.env),
      });
      children.push(child);
      return new Promise<number>((resolve) => {
        child.on('error', (err) => {
          process.stderr.write(`${PROGRAM} train: cannot start worker rank ${rank}: ${err.message}\n`);
          resolve(1);
        });
        child.on('exit', (code, signal) => {
          const status = code ?? 128 + (signal === 'SIGKILL' ? 9 : signal === 'SIGTERM' ? 15 : 1);
          if (status !== 0 && !firstFailure) {
            firstFailure = { rank, code: status };
            if (signal) process.stderr.write(`${PROGRAM} train: worker rank ${rank} (pid ${child.pid}) was killed by ${signal}\n`);
            // The others notice the lost peer themselves and exit with a message naming it; if
            // one hangs regardless (say, stuck in a step), stop it after the detection bound.
            killTimer = setTimeout(() => children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL')), peerTimeoutMs + 10_000);
          }
          resolve(status);
        });
      });
    });
    const codes = await Promise.all(exits);
    if (!firstFailure) return 0;
    const failed = codes.map((c, r) => (c !== 0 ? `rank ${r} (${c})` : '')).filter(Boolean);
    process.stderr.write(`${PROGRAM} train: ${failed.length} of ${workers} workers failed: ${failed.join(', ')}; the first was rank ${firstFailure.rank}\n`);
    return firstFailure.code === 2 ? 2 : 1;
  } finally {
    if (killTimer) clearTimeout(killTimer);
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    rmSync(dir, { recursive: true, force: true });
  }
}
