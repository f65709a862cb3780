/**
 * Every command of the CLI, one module each. A module exports `register(program)` and keeps
 * only wiring there: the work itself lives in a library.
 */
import type { Command } from 'commander';
import * as scan from './scan';
import * as decode from './decode';
import * as makeDemoData from './make-demo-data';

export type Register = (program: Command) => void;

export const commands: Register[] = [
  scan.register,
  decode.register,
  makeDemoData.register,
];
