/**
 * A worker process for the distributed tests (not a test itself): joins a ZeroMQ group with
 * the options given as JSON in argv[2], runs a scenario, prints one JSON line per result on
 * stdout, and exits with the error's exit code (message on stderr) on failure.
 */
import { AlexnetStreamError } from '@alexnet-stream/core';
import { checksumTensors } from '../checksum';
import { joinGroup, type ZmqGroupOptions } from '../zmq-group';
import { fixtureTensors } from './fixture-data';

export interface FixtureArgs extends ZmqGroupOptions {
  scenario: 'allreduce' | 'forever';
  /** After the averages: a broadcast of rank 0's round-0 tensors and a metrics average. */
  alsoCollectives?: boolean;
  sizes: number[];
  rounds?: number;
  seed?: number;
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/**
 * Report and end by unwinding, not process.exit(): the group's control sockets linger, and a
 * process that ends normally waits for what they still have to send (a refusal, an abort).
 */
function die(err: unknown): void {
  const code = err instanceof AlexnetStreamError ? err.exitCode : 1;
  process.stderr.write(`group-worker rank ${args.rank}: ${(err as Error).message}\n`);
  process.exitCode = code;
}

const args = JSON.parse(process.argv[2]) as FixtureArgs;

async function main(): Promise<void> {
  // A failure rejects the scenario's next call (and `die` reports it); onFatal has nothing to add.
  const group = await joinGroup({ ...args, onFatal: () => undefined });
  print({ rank: group.rank, event: 'joined' });
  if (args.scenario === 'allreduce') {
    for (let round = 0; round < (args.rounds ?? 1); round++) {
      const tensors = fixtureTensors(args.sizes, group.rank, round, args.seed);
      await group.averageWeights(tensors);
      const data = Object.keys(tensors)
        .sort()
        .map((k) => Buffer.from(tensors[k].buffer).toString('base64'));
      print({ rank: group.rank, round, checksum: checksumTensors(tensors), data });
    }
    if (args.alsoCollectives) {
      const tensors = fixtureTensors(args.sizes, group.rank, 0, args.seed);
      await group.broadcastWeights(tensors);
      print({ rank: group.rank, broadcastChecksum: checksumTensors(tensors) });
      const values = await group.averageMetrics([group.rank, 10 * group.rank + 1, group.rank === 0 ? Number.NaN : 1]);
      print({ rank: group.rank, values: values.map((v) => (Number.isNaN(v) ? 'NaN' : v)) });
    }
  } else if (args.scenario === 'forever') {
    // A training loop stand-in: sync, "compute", sync, … until a peer dies.
    for (let round = 0; ; round++) {
      await group.averageWeights(fixtureTensors(args.sizes, group.rank, round, args.seed));
      if (round === 0) print({ rank: group.rank, event: 'synced' });
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  await group.close();
  print({ rank: group.rank, event: 'closed' });
}

main().catch(die);
