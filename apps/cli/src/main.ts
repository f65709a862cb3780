import { Command } from 'commander';
import { commands } from './commands';
import { PROGRAM, reportError } from './cli-support';

export function buildProgram(): Command {
  const program = new Command(PROGRAM)
    .description(
      'AlexNet as composable streaming dataflow: JPEGs -> msgpack batches -> training on onnxruntime -> ONNX.\n' +
        'Stages read records on stdin and write records on stdout, so they pipe together.',
    )
    .version(require('../package.json').version)
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const register of commands) register(program);
  return program;
}

export function main(argv: string[]): void {
  // commander reports its own usage errors with exit code 1; we use 2 for usage (Unix tradition).
  const program = buildProgram();
  program.exitOverride((err) => {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0);
    process.exit(2);
  });
  program.parseAsync(argv).catch((err) => {
    process.exitCode = reportError('', err);
  });
}
