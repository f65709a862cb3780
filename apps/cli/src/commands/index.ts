/**
 * Every command of the CLI, one module each (`./<name>`). A module exports `register(program)`
 * and keeps only wiring there: the work itself lives in a library.
 *
 * Modules are loaded on demand: a pipeline stage such as `decode` should not pay for loading
 * onnxruntime, tfjs and zeromq at start-up (~0.15-0.2 s of CPU per process, measured), since
 * a shell pipeline starts one process per stage.
 */
import type { Command } from 'commander';
import type { TrainWorker } from '../multi-worker';

/** What a program is built for besides its arguments: `worker` builds a `train` that is one worker of a group. */
export interface CommandContext {
  trainWorker?: TrainWorker;
}

export type Register = (program: Command, context?: CommandContext) => void;

/** Command names in the order `--help` lists them; each is also its module's file name. */
export const COMMAND_NAMES = [
  'scan',
  'decode',
  'make-demo-data',
  'mean',
  'batch',
  'read',
  'augment',
  'inspect',
  'prepare',
  'import',
  'export',
  'predict',
  'validate',
  'serve',
  'train',
  'report',
  'worker',
] as const;

export function loadCommand(name: (typeof COMMAND_NAMES)[number]): Register {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return (require(`./${name}`) as { register: Register }).register;
}
