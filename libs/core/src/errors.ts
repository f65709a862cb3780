/**
 * Errors a user can hit, for every library of the project (undici's pattern: a class per kind,
 * a stable `code` a program can test instead of the message, the underlying error as `cause`).
 * `exitCode` follows the Unix convention the CLI maps them to: 2 for bad usage / bad input /
 * an output that cannot be written (the whole job cannot go on), 1 for everything else.
 *
 * Options are checked by `check.ts`, whose `InvalidParameterError` names the API parameter. A
 * message that names parameters is given as a function of how to name them (`MessageRender`),
 * so that the CLI can say the same thing in terms of its flags (`--crop` for `crop`).
 */

export interface ErrorDetails {
  /** Stable identifier of the kind of failure (`ERR_SHARD_CHECKSUM`); defaults per class. */
  code?: string;
  /** The error this one explains (a file system error, a parse error). */
  cause?: unknown;
}

/** How a caller names a parameter in messages: the library's own name by default, a CLI flag in the CLI. */
export type ParameterNamer = (parameter: string) => string;

/**
 * A message that names API parameters through `name` (`${name('crop')} must be …`): the library
 * renders it with its own names, the CLI with its flags (`renamed`). Write it to read well both ways.
 */
export type MessageRender = (name: ParameterNamer) => string;

const ownName: ParameterNamer = (parameter) => parameter;

export class AlexnetStreamError extends Error {
  /** Stable identifier of the kind of failure: test this, not the message. */
  readonly code: string;
  readonly exitCode: number;
  /** The parameters the message names (when it was given as a `MessageRender`), in order. */
  readonly parameters: readonly string[];
  private readonly render: MessageRender | undefined;

  constructor(message: string | MessageRender, options: ErrorDetails & { exitCode?: number } = {}) {
    const parameters: string[] = [];
    const text =
      typeof message === 'string'
        ? message
        : message((p) => {
            if (!parameters.includes(p)) parameters.push(p);
            return ownName(p);
          });
    super(text, options.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = new.target.name;
    this.code = options.code ?? 'ERR_ALEXNET_STREAM';
    this.exitCode = options.exitCode ?? 1;
    this.parameters = parameters;
    this.render = typeof message === 'string' ? undefined : message;
  }

  /**
   * This error with its parameters named by `name` (the CLI: `--crop` for `crop`); the same
   * class, code, cause and stack. An error that names no parameter is returned as it is.
   */
  renamed(name: ParameterNamer): this {
    if (!this.render) return this;
    const copy = Object.create(Object.getPrototypeOf(this) as object) as this;
    for (const key of Reflect.ownKeys(this)) Object.defineProperty(copy, key, Object.getOwnPropertyDescriptor(this, key)!);
    Object.defineProperty(copy, 'message', { value: this.render(name), writable: true, configurable: true, enumerable: false });
    return copy;
  }
}

/** Bad usage: an option, an argument or a combination of them that cannot work (exit 2). */
export class UsageError extends AlexnetStreamError {
  constructor(message: string | MessageRender, options: ErrorDetails = {}) {
    super(message, { ...options, code: options.code ?? 'ERR_USAGE', exitCode: 2 });
  }
}

/** A record stream or file that is malformed, foreign, or inconsistent with what a stage needs (exit 2). */
export class InputError extends AlexnetStreamError {
  constructor(message: string | MessageRender, options: ErrorDetails = {}) {
    super(message, { ...options, code: options.code ?? 'ERR_INPUT', exitCode: 2 });
  }
}

/**
 * An output that cannot be written (no space, read-only file system, a folder where a file
 * goes, …): the job cannot go on, exit 2. The file system's error is the `cause`; `errno` is
 * its code (`ENOSPC`, …) when it has one.
 */
export class OutputError extends AlexnetStreamError {
  readonly errno: string | undefined;
  constructor(message: string | MessageRender, options: ErrorDetails = {}) {
    super(message, { ...options, code: options.code ?? 'ERR_OUTPUT', exitCode: 2 });
    const errno = (options.cause as NodeJS.ErrnoException | undefined)?.code;
    this.errno = typeof errno === 'string' ? errno : undefined;
  }
}

/** A value as a message shows it: strings quoted (so that "" and " " are visible), the rest as JSON or text. */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint' || value === undefined || value === null) return String(value);
  if (typeof value === 'function') return 'a function';
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
  try {
    const text = JSON.stringify(value);
    return text.length > 200 ? `${text.slice(0, 200)}…` : text;
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/**
 * One parameter had a value it cannot take: "Expected <expected> for <parameter> but received
 * <value>" (sharp's `invalidParameterError`). `code` ERR_INVALID_PARAMETER.
 */
export class InvalidParameterError extends UsageError {
  constructor(
    readonly parameter: string,
    readonly expected: string,
    readonly received: unknown,
    options: ErrorDetails = {},
  ) {
    super((name) => `Expected ${expected} for ${name(parameter)} but received ${describeValue(received)}`, {
      ...options,
      code: options.code ?? 'ERR_INVALID_PARAMETER',
    });
  }
}

/** `invalidParameter('crop', 'an integer >= 1', 0)`: an InvalidParameterError, to throw. */
export function invalidParameter(parameter: string, expected: string, received: unknown): InvalidParameterError {
  return new InvalidParameterError(parameter, expected, received);
}

/** A system error (ENOENT, ENOSPC, …): the errors that wrap these describe them in their own words. */
function isSystemError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code);
}

/**
 * The whole story of an error, for a user: its message, then, for each `cause` the message
 * does not already tell, ": " and that cause's message ("the model does not fit the config:
 * conv1: output shape [0, 0] is empty …"). System errors (ENOENT, …) are not appended: the
 * error that wraps one says what it means (describeReadError, describeWriteError).
 */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  let text = err.message;
  const seen = new Set<unknown>([err]);
  for (let cause = err.cause; cause instanceof Error && !seen.has(cause); cause = cause.cause) {
    seen.add(cause);
    if (isSystemError(cause) || text.includes(cause.message)) continue;
    text += `: ${cause.message}`;
  }
  return text;
}
