/**
 * What the trainer writes at the top of `weights_dir` besides checkpoints (DESIGN §4):
 *
 * - `val_record.json`: `ValidationResult[]`, one per validated epoch (the report reads it);
 * - `val_record.npy`: float64 `[epochs, 3]` = (top-1 error, top-5 error, loss) per epoch, the
 *   shape of the seed's `val_record` (a list of `[error, error_top_5, cost]`), for its tools;
 * - `train_log.jsonl`: one `TrainLogEntry` per `print_freq` iterations (the report's train curves).
 *
 * val_record files are rewritten atomically (temp + rename) after each validation and on
 * resume (from the resumed checkpoint's state, so they never describe epochs the run has gone
 * back on); train_log.jsonl is appended to, and on resume cut back to the resumed iteration. A
 * reader ignores a torn last line (a process killed mid-append).
 *
 * Reading back validates every entry against its schema (these files can be edited, damaged or
 * foreign): a wrong field is an InputError naming the file, the line and the field. Extreme numbers are valid
 * (1e308, negative, ±Infinity from a `1e999` literal) and a metric may be null (what
 * JSON.stringify makes of NaN: a validation pass over no images); the report renders them.
 */
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  describeWriteError,
  encodeNpy,
  InputError,
  lazySchema,
  makeDirectorySync,
  OutputError,
  parseWithSchema,
  readErrorCode,
  readUserFile,
  writeFileAtomic,
  type Zod,
} from '@alexnet-stream/core';
import type { TrainLogEntry, ValidationResult } from './trainer';

export const VAL_RECORD_JSON = 'val_record.json';
export const VAL_RECORD_NPY = 'val_record.npy';
export const TRAIN_LOG = 'train_log.jsonl';

export function valRecordArray(record: ValidationResult[]): Float64Array {
  const out = new Float64Array(record.length * 3);
  record.forEach((r, i) => {
    out[3 * i] = r.top1Error;
    out[3 * i + 1] = r.top5Error;
    out[3 * i + 2] = r.loss;
  });
  return out;
}

export async function writeValRecord(weightsDir: string, record: ValidationResult[]): Promise<void> {
  makeDirectorySync(weightsDir, 'weights_dir'); // not Node's recursive mkdir: it loops forever under /proc
  await writeFileAtomic(join(weightsDir, VAL_RECORD_JSON), `${JSON.stringify(record, null, 1)}\n`);
  await writeFileAtomic(join(weightsDir, VAL_RECORD_NPY), encodeNpy(valRecordArray(record), [record.length, 3]));
}

/** Line (1-based) of each character offset: for messages that name a line of a JSON file. */
function lineAt(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < Math.min(offset, text.length); i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

/** Offsets where the elements of a top-level JSON array begin (for "entry 3, line 17"). */
function arrayElementOffsets(text: string): number[] {
  const out: number[] = [];
  let depth = 0;
  let inString = false;
  let expectElement = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (depth === 1 && expectElement && !/\s/.test(c) && c !== ']') {
      out.push(i);
      expectElement = false;
    }
    if (c === '"') inString = true;
    else if (c === '[' || c === '{') {
      depth++;
      if (depth === 1 && c === '[') expectElement = true;
    } else if (c === ']' || c === '}') depth--;
    else if (c === ',' && depth === 1) expectElement = true;
  }
  return out;
}

/**
 * The entries of val_record.json (and of a checkpoint's state.json `val_record`) and of
 * train_log.jsonl, as zod schemas. Fields are listed in the order the trainer writes them, which
 * is the order of a parsed entry's keys (a rewritten file reads the same). Numbers are any JSON
 * number (±Infinity from a `1e999` literal included); a metric may be null, read back as NaN.
 */
function buildRunFileSchemas(z: Zod) {
  const COUNT = 'an integer >= 0';
  const count = z.int({ error: COUNT }).min(0, { error: COUNT });
  const number = z.custom<number>((v) => typeof v === 'number', { error: 'a number' });
  const metric = z.custom<number | null>((v) => typeof v === 'number' || v === null, { error: 'a number or null' }).transform((v) => v ?? Number.NaN);
  const validationResult = z.looseObject(
    {
      epoch: count,
      iteration: count,
      top1Error: metric,
      top5Error: metric,
      loss: metric,
      images: count.optional(),
      lr: number.optional(),
    },
    { error: 'a JSON object' },
  );
  const trainLogEntry = z.looseObject(
    {
      iteration: count,
      epoch: count,
      loss: metric,
      top1Error: metric.optional(),
      images: number.optional(),
      lr: number,
      imagesPerSecond: number,
      waitFraction: number,
      time: z.string({ error: 'a string' }).optional(),
    },
    { error: 'a JSON object' },
  );
  return { validationResult, trainLogEntry };
}

/** The schemas of val_record entries and train log lines (built on first use: core's schema.ts says why). */
export const runFileSchemas = lazySchema(buildRunFileSchemas);

/**
 * Validate a parsed val_record (from val_record.json): every entry a ValidationResult. `where(i)`
 * names entry i in messages. Throws an InputError naming the entry and the field. (Entries written
 * before `images` and `lr` were recorded lack them; the report shows those as unknown.)
 */
export function checkValRecord(entries: unknown[], source: string, where: (i: number) => string = (i) => `entry ${i + 1}`): ValidationResult[] {
  const schema = runFileSchemas().validationResult;
  return entries.map(
    (entry, i) =>
      parseWithSchema(schema, entry, {
        where: `${source}: ${where(i)}`,
        errorClass: InputError,
        hint: 'not a validation result (epoch, iteration, top1Error, top5Error, loss)',
      }) as ValidationResult,
  );
}

/** A val_record.json holds one small entry per epoch; a train log one line per `print_freq` iterations. */
const MAX_VAL_RECORD_BYTES = 64 << 20;
const MAX_TRAIN_LOG_BYTES = 512 << 20;

/** A file of `weightsDir` as text: a regular file of at most `maxBytes`; undefined when absent. */
async function readRunFile(path: string, what: string, maxBytes: number): Promise<string | undefined> {
  try {
    return (await readUserFile(path, what, maxBytes)).toString('utf8');
  } catch (err) {
    if (readErrorCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

export async function readValRecord(weightsDir: string): Promise<ValidationResult[]> {
  const path = join(weightsDir, VAL_RECORD_JSON);
  const text = await readRunFile(path, 'validation record', MAX_VAL_RECORD_BYTES);
  if (text === undefined) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text) as unknown;
  } catch (err) {
    const message = (err as Error).message;
    const position = /position (\d+)/.exec(message);
    throw new InputError(`${path}${position ? `:${lineAt(text, Number(position[1]))}` : ''}: not valid JSON (${message}); a validation record is a JSON list`);
  }
  if (!Array.isArray(parsed)) throw new InputError(`${path}: not a validation record (a JSON list of results, one per epoch)`);
  const offsets = arrayElementOffsets(text);
  return checkValRecord(parsed, path, (i) => `entry ${i + 1}${offsets[i] !== undefined ? ` (line ${lineAt(text, offsets[i])})` : ''}`);
}

export async function appendTrainLog(weightsDir: string, entry: TrainLogEntry): Promise<void> {
  makeDirectorySync(weightsDir, 'weights_dir'); // not Node's recursive mkdir: it loops forever under /proc
  const path = join(weightsDir, TRAIN_LOG);
  await appendFile(path, `${JSON.stringify(entry)}\n`).catch((err: unknown) => {
    // A torn last line is what readTrainLog expects after a failure; the error is one line, exit 2.
    throw new OutputError(`${path}: cannot append to the training log: ${describeWriteError(err)}`, { cause: err });
  });
}

/**
 * Entries of train_log.jsonl. A last line that does not parse is a line torn by a kill (the
 * writer appends) and is skipped; any other bad line is an InputError naming the file and line.
 */
export async function readTrainLog(weightsDir: string): Promise<TrainLogEntry[]> {
  const path = join(weightsDir, TRAIN_LOG);
  const text = await readRunFile(path, 'training log', MAX_TRAIN_LOG_BYTES);
  if (text === undefined) return [];
  const lines = text.split('\n');
  // The last non-empty line, when the file does not end with a newline, may be torn.
  const torn = text.endsWith('\n') ? -1 : lines.length - 1;
  const out: TrainLogEntry[] = [];
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let entry: unknown;
    try {
      entry = JSON.parse(line);
    } catch (err) {
      if (i === torn) return; // a line torn by a kill: skip it
      throw new InputError(`${path}:${i + 1}: not valid JSON (${(err as Error).message}); each line of a training log is one JSON object`);
    }
    const parsed = parseWithSchema(runFileSchemas().trainLogEntry, entry, {
      where: `${path}:${i + 1}`,
      errorClass: InputError,
      hint: 'not a training log entry (iteration, epoch, loss, lr, imagesPerSecond, waitFraction)',
    });
    out.push(parsed as TrainLogEntry);
  });
  return out;
}

/**
 * Keep only entries up to `iteration` (resume goes back there), rewriting the file atomically;
 * this also drops a torn last line, so that the next append starts on a line of its own.
 */
export async function truncateTrainLog(weightsDir: string, iteration: number): Promise<void> {
  const entries = await readTrainLog(weightsDir);
  const kept = entries.filter((e) => e.iteration <= iteration);
  makeDirectorySync(weightsDir, 'weights_dir'); // not Node's recursive mkdir: it loops forever under /proc
  await writeFileAtomic(join(weightsDir, TRAIN_LOG), kept.map((e) => `${JSON.stringify(e)}\n`).join(''));
}
