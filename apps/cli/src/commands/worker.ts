/**
 * `worker --rank r --world-size n --coordinator tcp://host:port <train options>`: one worker of
 * a multi-worker (multi-host) training run. Rank 0 binds the coordinator endpoint, the others
 * connect; every `sync_every` iterations they average their weights over ZeroMQ. Rank, world
 * size and coordinator may instead come from a launcher's environment (mpirun, srun, torchrun
 * style RANK/WORLD_SIZE, MASTER_ADDR/MASTER_PORT, ALEXNET_STREAM_COORDINATOR). Every other
 * option is `train`'s, with the same meaning.
 */
import type { Command } from 'commander';
import { AlexnetStreamError, UsageError } from '@alexnet-stream/core';
import { checkGroupOptions, resolveLaunch } from '@alexnet-stream/trainer-multigpu';
import { action, parseInteger, PROGRAM } from '../cli-support';
import { defaultPeerTimeoutMs, makeTrainWorker } from '../multi-worker';

/** How long a worker whose group failed may take to unwind (its step in progress, its cleanup) before it is stopped. */
const FATAL_UNWIND_MS = 60_000;

interface WorkerCliOptions {
  rank?: number;
  worldSize?: number;
  coordinator?: string;
  peerTimeoutMs: number;
  rendezvousTimeoutMs: number;
  transfer: 'fp32' | 'fp16';
  frameKb: number;
  advertiseHost?: string;
  localWorldSize?: number;
  device?: string;
}

export function register(program: Command): void {
  program
    .command('worker')
    .summary('one worker of a multi-worker / multi-host training run (train options + rank, world size, coordinator)')
    .description(
      'Start one of N training workers; rank 0 binds --coordinator, the others connect to it. All workers\n' +
        'must be started with the same config and model (checked at start). Weights are averaged over a\n' +
        'ZeroMQ ring every sync_every iterations (velocities too with --sync-momentum), as are the training\n' +
        'and validation metrics; only rank 0 prints and writes checkpoints. A lost worker\n' +
        'stops all within --peer-timeout-ms (exit 1, naming it); restart all with --resume to continue.\n' +
        'Rank/world size also from OMPI_COMM_WORLD_RANK/SIZE (mpirun), SLURM_PROCID/NTASKS (srun), RANK/WORLD_SIZE;\n' +
        'the coordinator from ALEXNET_STREAM_COORDINATOR or MASTER_ADDR + MASTER_PORT.\n' +
        `Example: ${PROGRAM} worker --rank 1 --world-size 2 --coordinator tcp://10.0.0.1:5555 --config config.yaml`,
    )
    .option('--rank <r>', "this worker's rank, 0..n-1", parseInteger('--rank'))
    .option('--world-size <n>', 'number of workers', parseInteger('--world-size'))
    .option('--coordinator <endpoint>', 'tcp://HOST:PORT (rank 0 binds it; HOST must reach rank 0) or ipc:///path (one host)')
    .option(
      '--peer-timeout-ms <ms>',
      'a silent or dead peer stops the run within this bound (default: ALEXNET_STREAM_PEER_TIMEOUT_MS, else 30000)',
      parseInteger('--peer-timeout-ms'),
      defaultPeerTimeoutMs(),
    )
    .option('--rendezvous-timeout-ms <ms>', 'how long to wait for all workers to start', parseInteger('--rendezvous-timeout-ms'), 120_000)
    .option('--transfer <precision>', 'weights on the wire: fp32 (exact) or fp16 (half the bytes; rounds weights to float16 at each sync)', 'fp32')
    .option('--frame-kb <kb>', 'ZeroMQ message size for weight frames', parseInteger('--frame-kb', 4, 1 << 20), 4096)
    .option('--advertise-host <host>', 'address other hosts reach this worker at (default: ALEXNET_STREAM_HOST, else the first non-loopback IPv4)')
    .option('--local-world-size <n>', 'workers on this host, to split its cores (default: from the launcher, else 1)', parseInteger('--local-world-size', 1))
    .option('--device <device>', "this worker's device (cpu, webgpu, cuda:0, …), overriding the config's devices")
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[train-options...]', "the train command's options (see train --help)")
    .action(
      action('worker', async (trainArgs: string[], opts: WorkerCliOptions) => {
        const launch = resolveLaunch({ rank: opts.rank, worldSize: opts.worldSize, coordinator: opts.coordinator });
        const settings = {
          rank: launch.rank,
          worldSize: launch.worldSize,
          coordinator: launch.coordinator,
          peerTimeoutMs: opts.peerTimeoutMs,
          rendezvousTimeoutMs: opts.rendezvousTimeoutMs,
          transfer: opts.transfer,
          frameElements: (opts.frameKb * 1024) / 4,
        };
        checkGroupOptions(settings); // refused here, before train's options are read
        const worker = makeTrainWorker({
          ...settings,
          advertiseHost: opts.advertiseHost,
          localWorldSize: opts.localWorldSize ?? launch.localWorldSize,
          device: opts.device,
          onFatal: (err) => {
            // The training loop sees the failure after the step in progress (group.error) and
            // unwinds: train reports it, the group's last messages go out (its control sockets
            // linger, and a process that ends normally waits for them), the process ends.
            // Should something keep it from unwinding, stop it after a bound; checkpoints are
            // written to a temp dir and renamed, so the last one is whole either way.
            setTimeout(() => {
              if (!process.exitCode) process.stderr.write(`${PROGRAM} worker: rank ${launch.rank}: ${err.message}\n`);
              process.exit(process.exitCode || (err instanceof AlexnetStreamError ? err.exitCode : 1));
            }, FATAL_UNWIND_MS).unref();
          },
        });
        // Imported here, not at the top: main.ts loads this module.
        const { buildProgram } = require('../main') as typeof import('../main');
        const train = buildProgram('train', { trainWorker: worker });
        train.exitOverride((err) => {
          throw new UsageError(`invalid train options for worker: ${err.message}`, { cause: err });
        });
        try {
          await train.parseAsync(['train', ...trainArgs], { from: 'user' });
        } finally {
          // train reports its own errors and sets the exit code; the group must still be left.
          await worker.finish(!process.exitCode);
        }
      }),
    );
}
