/**
 * What every command shares: turning errors into one clear stderr line and an exit code,
 * wiring record streams to stdin/stdout, turning option text into values, and naming the
 * libraries' parameters by this program's flags.
 *
 * Options are checked once, by the library that takes them: the parsers here only turn text
 * into numbers, words or lists (an integer literal, a size with a suffix) and leave ranges to
 * the library. A library error names its parameters (`batchSize`); `action` renders it with
 * the command's flags (`--size`): the option whose attribute has that name, or the command's
 * own map where a flag's name differs from the parameter's.
 */
import type { Readable, Writable } from 'node:stream';
import type { Command } from 'commander';
import { AlexnetStreamError, describeError, describeWriteError, invalidParameter, type ParameterNamer } from '@alexnet-stream/core';
import { RecordDecoder, RecordEncoder, type RecordKind } from '@alexnet-stream/stream-io';

export const PROGRAM = 'alexnet-stream';

/** Names by flag: the library parameter `p` as this command's option (or `names`' entry), else as it is. */
export type FlagNames = Record<string, string> | ((parameter: string) => string | undefined);

/**
 * How `command` names a library parameter: `names` first (a flag whose name differs from the
 * parameter's: `batch --size` is `batchSize`), then the option whose attribute is the parameter
 * (`--max-file-bytes` is `maxFileBytes`), else the parameter as it is (a config key, an
 * environment variable).
 */
export function flagNamer(command: Command | undefined, names: FlagNames = {}): ParameterNamer {
  const byAttribute = new Map((command?.options ?? []).map((o) => [o.attributeName(), o.long ?? o.flags]));
  return (parameter) => {
    const named = typeof names === 'function' ? names(parameter) : Object.hasOwn(names, parameter) ? names[parameter] : undefined;
    return named ?? byAttribute.get(parameter) ?? parameter;
  };
}

/**
 * Print an error the way a Unix tool does: one line, the error and the causes it does not tell
 * itself (`describeError`), with library parameters named by `name`; a stack trace only with
 * ALEXNET_STREAM_DEBUG=1.
 */
export function reportError(command: string, err: unknown, name?: ParameterNamer): number {
  const debug = process.env.ALEXNET_STREAM_DEBUG === '1';
  const who = command ? `${PROGRAM} ${command}` : PROGRAM;
  if (err instanceof AlexnetStreamError) {
    process.stderr.write(`${who}: ${describeError(name ? err.renamed(name) : err)}\n`);
    if (debug && err.stack) process.stderr.write(`${err.stack}\n`);
    return err.exitCode;
  }
  const e = err as NodeJS.ErrnoException;
  if (e && e.code === 'EPIPE') return 0; // downstream closed early (`| head`): not our failure
  process.stderr.write(`${who}: ${describeError(err)}\n`);
  if (debug && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
  else process.stderr.write(`(set ALEXNET_STREAM_DEBUG=1 for a stack trace)\n`);
  return 1;
}

/** What a command loses when stdout closes before it has written everything (see `stdoutRequiredFor`). */
let lostWhenStdoutCloses: string | undefined;
let stdoutGuarded = false;
/** Whether this command reads records on stdin (stdinRecords). */
let readsStdin = false;

/**
 * The one place where every command's stdout failures are handled (records, summaries,
 * predictions alike), installed by `action()`:
 * - EPIPE: the reader went away (`predict … | head -1`). Normal for a CLI: exit at once,
 *   quietly, with status 0, as `yes | head` stops; unless the command has declared an output
 *   that would then be lost (`stdoutRequiredFor`), which is an error naming it, status 2.
 * - any other error (ENOSPC from a full disk or /dev/full, EIO): one clear line, status 2.
 * Without it, a write error on stdout is an unhandled 'error' event: a stack trace.
 */
export function guardStdout(command: string): void {
  if (stdoutGuarded) return;
  stdoutGuarded = true;
  const who = command ? `${PROGRAM} ${command}` : PROGRAM;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') {
      if (lostWhenStdoutCloses === undefined) process.exit(0);
      process.stderr.write(`${who}: stdout was closed by the next stage before the stream ended (EPIPE); ${lostWhenStdoutCloses}\n`);
      process.exit(2);
    }
    process.stderr.write(`${who}: cannot write to stdout: ${describeWriteError(err)}\n`);
    process.exit(2);
  });
  // stderr is where errors go; if it fails too (2>/dev/full), there is nowhere left to say so.
  process.stderr.on('error', () => undefined);
}

/**
 * Declare that closing stdout early loses something besides stdout (`mean --out m.npy` would
 * not be written): an early EPIPE then exits 2 with `lost` in the message.
 */
export function stdoutRequiredFor(lost: string): void {
  lostWhenStdoutCloses = lost;
}

/**
 * Wrap a commander action: awaits it, reports any error (library parameters named by the
 * command's flags, see `flagNamer`; `names` for flags named otherwise than their parameter)
 * and sets the exit code. The action may return a number to set the exit code itself (e.g. 1
 * under --strict after skipped files).
 */
// biome-ignore lint/suspicious/noConfusingVoidType: an action that sets no exit code is an async function returning nothing, whose type is Promise<void>
export function action<A extends unknown[]>(command: string, fn: (...args: A) => Promise<number | void> | number | void, names?: FlagNames) {
  return async (...args: A): Promise<void> => {
    guardStdout(command);
    try {
      const code = await fn(...args);
      if (typeof code === 'number') process.exitCode = code;
    } catch (err) {
      // commander passes the command last: its options name the parameters
      const cmd = args[args.length - 1] as Command | undefined;
      process.exitCode = reportError(command, err, flagNamer(cmd && typeof cmd === 'object' && 'options' in cmd ? cmd : undefined, names));
    } finally {
      // A command that stopped early (bad input) must not wait for the rest of its input:
      // stdin would keep the process alive until the producer ends (a record that claims
      // 4 GiB, then silence). Closing it tells the producer, as a reader that exits does.
      if (readsStdin) process.stdin.destroy();
    }
  };
}

/**
 * Records from stdin (validated, header first, trailer last: the decoder fails on a stream
 * that ends without it), refusing streams of other kinds. Bytes start flowing at once; an
 * error found before the consumer starts reading (garbage, an empty or cut-short stream while
 * `train` is still building its engine) is kept on the stream, and the consumer gets it when
 * it reads (a pipeline rejects with it, an async iterator throws it), never as an unhandled
 * 'error' event.
 */
export function stdinRecords(accept: RecordKind[], highWaterMark?: number, stage?: string): RecordDecoder {
  if (process.stdin.isTTY) {
    throw invalidParameter('stdin', `a record stream piped from another ${PROGRAM} stage`, 'a terminal');
  }
  readsStdin = true;
  const decoder = new RecordDecoder({ accept, source: 'stdin', highWaterMark, stage });
  decoder.on('error', () => undefined); // kept as decoder.errored, for the consumer (see above)
  process.stdin.on('error', (err) => decoder.destroy(err));
  return process.stdin.pipe(decoder);
}

/** A sink that frames records onto stdout with backpressure (stdout errors: see `guardStdout`). */
export function stdoutRecords(): { encoder: RecordEncoder; done: Promise<void> } {
  const encoder = new RecordEncoder();
  const done = new Promise<void>((resolve, reject) => {
    encoder.on('error', reject);
    encoder.on('end', () => resolve());
  });
  encoder.pipe(process.stdout);
  return { encoder, done };
}

/**
 * An integer literal (`--size 256`). The range is the library's to check; `min`/`max` only for
 * an option that no library takes as it is (`worker --frame-kb`, a unit of this program's).
 */
export function parseInteger(name: string, min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      const range =
        min === Number.MIN_SAFE_INTEGER && max === Number.MAX_SAFE_INTEGER
          ? 'an integer'
          : max === Number.MAX_SAFE_INTEGER
            ? `an integer >= ${min}`
            : `an integer between ${min} and ${max}`;
      throw invalidParameter(name, range, value);
    }
    return n;
  };
}

/** A number literal (`--val-split 0.1`); its range is the library's to check (`min`/`max`: as for parseInteger). */
export function parseNumber(name: string, min = -Infinity, max = Infinity) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      throw invalidParameter(name, min === -Infinity && max === Infinity ? 'a number' : `a number between ${min} and ${max}`, value);
    }
    return n;
  };
}

/** A size in bytes: an integer, or one with a binary suffix `k`, `M`, `G` (`64M` = 64 MiB). */
export function parseByteSize(name: string) {
  return (value: string): number => {
    const m = /^\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*$/.exec(value);
    const scale = m ? { '': 1, k: 1 << 10, m: 1 << 20, g: 1 << 30 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g'] : NaN;
    const n = m ? Number(m[1]) * scale : NaN;
    if (!Number.isSafeInteger(n) || n < 1) throw invalidParameter(name, 'a size in bytes >= 1 (an integer, or with a k, M or G suffix: 64M)', value);
    return n;
  };
}

/** `--shard i/N` → { index, count } (the library checks 0 <= index < count). */
export function parseShard(name: string) {
  return (value: string): { index: number; count: number } => {
    const m = /^(\d+)\/(\d+)$/.exec(value.trim());
    if (!m) throw invalidParameter(name, 'i/N with 0 <= i < N (e.g. 0/4)', value);
    return { index: Number(m[1]), count: Number(m[2]) };
  };
}

/**
 * `--devices cpu,webgpu` → ['cpu', 'webgpu']. Only the names are checked here (this module loads
 * no native code); onnx-export's devices.ts says, in one line, what a device lacks on this machine.
 */
export function parseDeviceList(value: string): string[] {
  const devices = value.split(',').map((d) => d.trim());
  if (!devices.every((d) => /^(cpu|(webgpu|cuda)(:\d{1,3})?)$/.test(d))) {
    throw invalidParameter('--devices', 'a comma-separated list of cpu, webgpu[:<index>], cuda[:<index>]', value);
  }
  return devices;
}

export type { Readable, Writable };
