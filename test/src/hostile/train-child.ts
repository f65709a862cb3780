/**
 * A child process for training.test.ts, train-cli.test.ts and concurrency.test.ts: `runTraining`
 * with a config and options given as JSON, SIGKILLed just before one step of one of its
 * checkpoint writes (`killAt`), or held there (`holdAt`): it writes `held` to stdout and waits
 * until its stdin gives a byte or ends, so that a test has a run under way for as long as it
 * needs, without a sleep in the trainer.
 *
 *   node train-child.js '<json: { config, maxIters?, resume?, killAt?: { write, step }, holdAt?: { write, step } }>'
 *
 * `write` counts checkpoint writes from 1; `step` is an atomic-dir.ts step name.
 */
import { readSync } from 'node:fs';
import { resolveConfig, runTraining, type TrainConfig } from '@alexnet-stream/trainer-multigpu';

interface ChildArgs {
  config: Partial<TrainConfig>;
  maxIters?: number;
  resume?: boolean;
  killAt?: { write: number; step: string };
  holdAt?: { write: number; step: string };
}

/** Block this thread (the checkpoint hook is synchronous) until stdin gives a byte or ends. */
function waitForStdin(): void {
  for (;;) {
    try {
      readSync(0, Buffer.alloc(1));
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10); // a non-blocking stdin: try again
    }
  }
}

const args = JSON.parse(process.argv[2]) as ChildArgs;
let writes = 0;
runTraining(resolveConfig(args.config), {
  maxIters: args.maxIters,
  resume: args.resume,
  onCheckpointStep(step) {
    if (step === 'mkdir-temp') writes++;
    if (args.killAt && writes === args.killAt.write && step === args.killAt.step) process.kill(process.pid, 'SIGKILL');
    if (args.holdAt && writes === args.holdAt.write && step === args.holdAt.step) {
      process.stdout.write('held\n');
      waitForStdin();
    }
  },
}).then(
  (r) => process.stdout.write(`${JSON.stringify({ iteration: r.state.iteration, stopReason: r.stopReason })}\n`),
  (err) => {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(1);
  },
);
