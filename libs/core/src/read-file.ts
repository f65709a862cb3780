/**
 * Reading a file a user named (an image, a mean image, a class list, a shard): only a regular
 * file, and at most a bounded number of bytes.
 *
 * The file is opened first (read-only and non-blocking, so that opening a FIFO does not wait
 * for a writer) and the open descriptor is checked with fstat: a check of the path before
 * opening could be answered by one file and the open by another. A FIFO, a device
 * (`/dev/zero` never ends), a socket or a folder is refused with what it is; a regular file
 * larger than the limit is refused before anything is allocated for it. So memory is bounded
 * by the limit, never by what the file system holds.
 */
import { close, closeSync, constants, fstat, fstatSync, open, openSync, read, readSync, type Stats } from 'node:fs';
import { InputError } from './errors';

/** Default bound on one image file's size (`decode --max-file-bytes`): far above any photo. */
export const DEFAULT_MAX_IMAGE_FILE_BYTES = 128 << 20;

/** A file that is not a regular file, or is larger than allowed; `code` says which. */
export class FileRefusedError extends InputError {
  declare readonly code: 'ERR_NOT_REGULAR_FILE' | 'ERR_FILE_TOO_LARGE';
  constructor(message: string, code: 'ERR_NOT_REGULAR_FILE' | 'ERR_FILE_TOO_LARGE') {
    super(message, { code });
  }
}

/** What a non-regular file is, in a few words. */
export function fileKind(st: Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return st.isFile() ? 'a regular file' : 'not a regular file';
}

export function formatBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} bytes`;
}

/** Refuse a descriptor that is not a regular file or is larger than `maxBytes` (its fstat). */
function refusal(st: Stats, maxBytes: number, limitName: string): FileRefusedError | undefined {
  if (!st.isFile()) return new FileRefusedError(`not a regular file (${fileKind(st)})`, 'ERR_NOT_REGULAR_FILE');
  if (st.size > maxBytes) return new FileRefusedError(`file is ${formatBytes(st.size)}, more than ${limitName}`, 'ERR_FILE_TOO_LARGE');
  return undefined;
}

// O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer;
// reads of a regular file ignore it.
const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0);
/** Read size of files whose fstat size is 0 (some special regular files): they are read to EOF. */
const CHUNK = 64 << 10;

export interface ReadBoundedOptions {
  /** Refuse files larger than this. */
  maxBytes: number;
  /** Names the limit in messages (default: "the 128.0 MiB limit"). */
  limitName?: string;
}

/**
 * Read a whole regular file, at most `maxBytes`, with callbacks (decode's thread: cheaper than
 * a chain of promises). Errors: the fs error (ENOENT, EACCES, …) or a `FileRefusedError`.
 */
export function readRegularFile(path: string, options: ReadBoundedOptions, callback: (err: Error | null, data?: Buffer) => void): void {
  const limitName = options.limitName ?? `the ${formatBytes(options.maxBytes)} limit`;
  open(path, OPEN_FLAGS, (openErr, fd) => {
    if (openErr) return callback(openErr);
    const finish = (err: Error | null, data?: Buffer): void => close(fd, () => callback(err, data));
    fstat(fd, (statErr, st) => {
      if (statErr) return finish(statErr);
      const refused = refusal(st, options.maxBytes, limitName);
      if (refused) return finish(refused);
      let buffer = Buffer.allocUnsafe(st.size > 0 ? st.size : Math.min(CHUNK, options.maxBytes + 1));
      let filled = 0;
      const step = (): void => {
        if (filled === buffer.length) {
          if (st.size > 0) {
            finish(null, buffer); // read what fstat said; a file growing now is not waited for
            return;
          }
          if (buffer.length > options.maxBytes) {
            finish(new FileRefusedError(`file is more than ${limitName}`, 'ERR_FILE_TOO_LARGE'));
            return;
          }
          const bigger = Buffer.allocUnsafe(Math.min(2 * buffer.length, options.maxBytes + 1));
          buffer.copy(bigger);
          buffer = bigger;
        }
        read(fd, buffer, filled, buffer.length - filled, null, (readErr, bytesRead) => {
          if (readErr) return finish(readErr);
          if (bytesRead === 0) return finish(null, buffer.subarray(0, filled)); // EOF (a file that shrank: what is there)
          filled += bytesRead;
          step();
        });
      };
      step();
    });
  });
}

/** `readRegularFile` as a promise. */
export function readRegularFileAsync(path: string, options: ReadBoundedOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => readRegularFile(path, options, (err, data) => (err ? reject(err) : resolve(data!))));
}

/** `readRegularFile` on the calling thread (decode's worker threads, whose job is to block). */
export function readRegularFileSync(path: string, options: ReadBoundedOptions): Buffer {
  const limitName = options.limitName ?? `the ${formatBytes(options.maxBytes)} limit`;
  const fd = openSync(path, OPEN_FLAGS);
  try {
    const st = fstatSync(fd);
    const refused = refusal(st, options.maxBytes, limitName);
    if (refused) throw refused;
    let buffer = Buffer.allocUnsafe(st.size > 0 ? st.size : Math.min(CHUNK, options.maxBytes + 1));
    let filled = 0;
    for (;;) {
      if (filled === buffer.length) {
        if (st.size > 0) return buffer;
        if (buffer.length > options.maxBytes) throw new FileRefusedError(`file is more than ${limitName}`, 'ERR_FILE_TOO_LARGE');
        const bigger = Buffer.allocUnsafe(Math.min(2 * buffer.length, options.maxBytes + 1));
        buffer.copy(bigger);
        buffer = bigger;
      }
      const bytesRead = readSync(fd, buffer, filled, buffer.length - filled, null);
      if (bytesRead === 0) return buffer.subarray(0, filled);
      filled += bytesRead;
    }
  } finally {
    closeSync(fd);
  }
}

/** Why a file could not be read, in a few words (ENOENT → "no such file", a refusal → its reason). */
export function describeReadError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOENT':
      return 'no such file';
    case 'EISDIR':
      return 'is a folder, not a file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ELOOP':
      return 'a loop of symbolic links';
    case 'ENXIO':
      return 'not a regular file (a socket or a device without a driver)';
    case 'ERR_NOT_REGULAR_FILE':
    case 'ERR_FILE_TOO_LARGE':
      return e.message;
    default:
      return e?.code ? `cannot read (${e.code})` : e instanceof Error ? e.message : String(err);
  }
}

/**
 * Read a file a user named for a given purpose (a mean image, a class list, a shard index):
 * a regular file of at most `maxBytes`, or an `InputError` that names it, what it was for,
 * and why it cannot be read.
 */
export async function readUserFile(path: string, what: string, maxBytes: number): Promise<Buffer> {
  try {
    return await readRegularFileAsync(path, { maxBytes, limitName: `the ${formatBytes(maxBytes)} a ${what} may take` });
  } catch (err) {
    throw userFileError(path, what, err);
  }
}

/** `readUserFile` on the calling thread (model and checkpoint loading, which are synchronous). */
export function readUserFileSync(path: string, what: string, maxBytes: number): Buffer {
  try {
    return readRegularFileSync(path, { maxBytes, limitName: `the ${formatBytes(maxBytes)} a ${what} may take` });
  } catch (err) {
    throw userFileError(path, what, err);
  }
}

/**
 * The InputError of `readUserFile`: code ERR_FILE_TOO_LARGE or ERR_INPUT_FILE; `cause` keeps the
 * original (its `code`: ENOENT, ERR_NOT_REGULAR_FILE, …).
 */
function userFileError(path: string, what: string, err: unknown): InputError {
  return new InputError(`${path}: cannot read the ${what}: ${describeReadError(err)}`, {
    code: (err as FileRefusedError).code === 'ERR_FILE_TOO_LARGE' ? 'ERR_FILE_TOO_LARGE' : 'ERR_INPUT_FILE',
    cause: err,
  });
}

/** The file-system code behind a `readUserFile` error (`'ENOENT'` for a missing file), if any. */
export function readErrorCode(err: unknown): string | undefined {
  const cause = (err as { cause?: unknown })?.cause ?? err;
  return (cause as NodeJS.ErrnoException | undefined)?.code;
}
