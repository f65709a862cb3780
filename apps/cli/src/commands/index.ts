/**
 * Every command of the CLI, one module each. A module exports `register(program)` and keeps
 * only wiring there: the work itself lives in a library.
 */
import type { Command } from 'commander';
import * as scan from './scan';
import * as decode from './decode';
import * as makeDemoData from './make-demo-data';
import * as mean from './mean';
import * as batch from './batch';
import * as read from './read';
import * as augment from './augment';
import * as inspect from './inspect';
import * as prepare from './prepare';
import * as importCommand from './import';
import * as exportCommand from './export';
import * as predict from './predict';
import * as validate from './validate';
import * as train from './train';
import * as report from './report';
import * as worker from './worker';

export type Register = (program: Command) => void;

export const commands: Register[] = [
  scan.register,
  decode.register,
  makeDemoData.register,
  mean.register,
  batch.register,
  read.register,
  augment.register,
  inspect.register,
  prepare.register,
  importCommand.register,
  exportCommand.register,
  predict.register,
  validate.register,
  train.register,
  report.register,
  worker.register,
];
