/**
 * What every command shares: turning errors into one clear stderr line and an exit code,
 * wiring record streams to stdin/stdout, and parsing option values at the boundary.
 */
import { Readable, Writable } from 'node:stream';
import { AlexnetStreamError, describeWriteError, invalidOption } from '@alexnet-stream/core';
import { RecordDecoder, RecordEncoder, RecordKind } from '@alexnet-stream/stream-io';

export const PROGRAM = 'alexnet-stream';

/** Print an error the way a Unix tool does; a stack trace only with ALEXNET_STREAM_DEBUG=1. */
export function reportError(command: string, err: unknown): number {
  const debug = process.env.ALEXNET_STREAM_DEBUG === '1';
  const who = command ? `${PROGRAM} ${command}` : PROGRAM;
  if (err instanceof AlexnetStreamError) {
    process.stderr.write(`${who}: ${err.message}\n`);
    if (debug && err.stack) process.stderr.write(`${err.stack}\n`);
    return err.exitCode;
  }
  const e = err as NodeJS.ErrnoException & { exitCode?: unknown };
  if (e && e.code === 'EPIPE') return 0; // downstream closed early (`| head`): not our failure
  const message = e instanceof Error ? e.message : String(err);
  process.stderr.write(`${who}: ${message}\n`);
  // Libraries that cannot depend on stream-io (onnx-export's format errors) still carry an
  // exitCode: their message is already the whole story, as for AlexnetStreamError.
  if (typeof e?.exitCode === 'number') return e.exitCode;
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
 * Wrap a commander action: awaits it, reports any error and sets the exit code. The action
 * may return a number to set the exit code itself (e.g. 1 under --strict after skipped files).
 */
export function action<A extends unknown[]>(command: string, fn: (...args: A) => Promise<number | void> | number | void) {
  return async (...args: A): Promise<void> => {
    guardStdout(command);
    try {
      const code = await fn(...args);
      if (typeof code === 'number') process.exitCode = code;
    } catch (err) {
      process.exitCode = reportError(command, err);
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
    throw invalidOption('stdin', `a record stream piped from another ${PROGRAM} stage`, 'a terminal');
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

export function parseInteger(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer between ${min} and ${max}`;
      throw invalidOption(name, range, value);
    }
    return n;
  };
}

export function parseNumber(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      throw invalidOption(name, `a number between ${min} and ${max}`, value);
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
    if (!Number.isSafeInteger(n) || n < 1) throw invalidOption(name, 'a size in bytes >= 1 (an integer, or with a k, M or G suffix: 64M)', value);
    return n;
  };
}

/** One of a fixed set of words (`--resize squash|center-crop`). */
export function parseChoice<T extends string>(name: string, choices: readonly T[]) {
  return (value: string): T => {
    if (!(choices as readonly string[]).includes(value)) throw invalidOption(name, choices.join(' or '), value);
    return value as T;
  };
}

/** `--shard i/N` → { index, count } with 0 <= index < count. */
export function parseShard(name: string) {
  return (value: string): { index: number; count: number } => {
    const m = /^(\d+)\/(\d+)$/.exec(value.trim());
    const index = m ? Number(m[1]) : NaN;
    const count = m ? Number(m[2]) : NaN;
    if (!m || count < 1 || index >= count) throw invalidOption(name, 'i/N with 0 <= i < N (e.g. 0/4)', value);
    return { index, count };
  };
}

/**
 * `--devices cpu,webgpu` → ['cpu', 'webgpu']. Only the names are checked here (this module loads
 * no native code); onnx-export's devices.ts says, in one line, what a device lacks on this machine.
 */
export function parseDeviceList(value: string): string[] {
  const devices = value.split(',').map((d) => d.trim());
  if (!devices.every((d) => /^(cpu|(webgpu|cuda)(:\d{1,3})?)$/.test(d))) {
    throw invalidOption('--devices', 'a comma-separated list of cpu, webgpu[:<index>], cuda[:<index>]', value);
  }
  return devices;
}

export type { Readable, Writable };
