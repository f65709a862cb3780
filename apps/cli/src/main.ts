import { Command } from 'commander';
import { type CommandContext, COMMAND_NAMES, loadCommand } from './commands';
import { PROGRAM, reportError } from './cli-support';

/**
 * The program with every command, or only `only` when given (what `main` does when argv names
 * a command, so that a stage loads just the libraries it uses). `context` goes to every command
 * (`worker` builds `train` with its TrainWorker).
 */
export function buildProgram(only?: string, context: CommandContext = {}): Command {
  const program = new Command(PROGRAM)
    .description(
      'AlexNet as composable streaming dataflow: JPEGs -> msgpack batches -> training on onnxruntime -> ONNX.\n' +
        'Stages read records on stdin and write records on stdout, so they pipe together.',
    )
    .version(require('../package.json').version)
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    // Set before the subcommands exist: commander copies it to each one as it is created.
    // Its usage errors would exit 1; ours exit 2, the Unix convention for bad usage.
    .exitOverride((err) => {
      const ok = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help';
      process.exit(ok ? 0 : 2);
    });
  const names = COMMAND_NAMES.filter((name) => only === undefined || name === only);
  for (const name of names.length > 0 ? names : COMMAND_NAMES) loadCommand(name)(program, context);
  for (const command of program.commands) command.description(reflow(command.description()));
  return program;
}

/**
 * Descriptions are written as source-wrapped prose; commander wraps to the terminal width
 * itself, so join wrapped lines. Blank lines (paragraphs) and lines that start with
 * indentation or a list marker (examples, lists) keep their breaks.
 */
export function reflow(text: string): string {
  return text.replace(/([^\n:])\n(?=[^\s\-*•])/g, '$1 ');
}

export function main(argv: string[]): void {
  const program = buildProgram(argv[2]);
  program.parseAsync(argv).catch((err) => {
    process.exitCode = reportError('', err);
  });
}
