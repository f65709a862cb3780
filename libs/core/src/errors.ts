/**
 * Errors a user can hit. `exitCode` follows the Unix convention the CLI maps them to:
 * 2 for bad usage / bad input that stops the whole job, 1 for everything else.
 */
export class AlexnetStreamError extends Error {
  constructor(message: string, readonly exitCode: number = 1) {
    super(message);
    this.name = new.target.name;
  }
}

/** Bad option or argument: a message that names the option, what was expected, what was given. */
export class UsageError extends AlexnetStreamError {
  constructor(message: string) {
    super(message, 2);
  }
}

/** A record stream or file that is malformed, foreign, or inconsistent with what a stage needs. */
export class InputError extends AlexnetStreamError {
  constructor(message: string) {
    super(message, 2);
  }
}

/** `invalidOption('--size', 'an integer >= 1', given)` → a UsageError in one consistent shape. */
export function invalidOption(name: string, expected: string, given: unknown): UsageError {
  const shown = typeof given === 'string' ? JSON.stringify(given) : String(given);
  return new UsageError(`Expected ${expected} for ${name} but received ${shown}`);
}
