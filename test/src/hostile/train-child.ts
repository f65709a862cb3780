/**
 * A child process for training.test.ts: `runTraining` with a config and options given as JSON,
 * SIGKILLed just before one step of one of its checkpoint writes.
 *
 *   node train-child.js '<json: { config, maxIters?, resume?, killAt?: { write, step } }>'
 *
 * `killAt.write` counts checkpoint writes from 1; `killAt.step` is an atomic-dir.ts step name.
 */
import { resolveConfig, runTraining, TrainConfig } from '@alexnet-stream/trainer-multigpu';

interface ChildArgs {
  config: Partial<TrainConfig>;
  maxIters?: number;
  resume?: boolean;
  killAt?: { write: number; step: string };
}

const args = JSON.parse(process.argv[2]) as ChildArgs;
let writes = 0;
runTraining(resolveConfig(args.config), {
  maxIters: args.maxIters,
  resume: args.resume,
  onCheckpointStep(step) {
    if (step === 'mkdir-temp') writes++;
    if (args.killAt && writes === args.killAt.write && step === args.killAt.step) process.kill(process.pid, 'SIGKILL');
  },
}).then(
  (r) => process.stdout.write(`${JSON.stringify({ iteration: r.state.iteration, stopReason: r.stopReason })}\n`),
  (err) => {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(1);
  },
);
