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
 */
import { appendFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { encodeNpy, InputError, makeDirectorySync, writeFileAtomic } from '@alexnet-stream/stream-io';
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

export async function readValRecord(weightsDir: string): Promise<ValidationResult[]> {
  const path = join(weightsDir, VAL_RECORD_JSON);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new InputError(`${path}: cannot read (${(err as Error).message})`);
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    if (!Array.isArray(parsed)) throw new Error('not a list');
    return parsed as ValidationResult[];
  } catch (err) {
    throw new InputError(`${path}: not a validation record (${(err as Error).message})`);
  }
}

export async function appendTrainLog(weightsDir: string, entry: TrainLogEntry): Promise<void> {
  makeDirectorySync(weightsDir, 'weights_dir'); // not Node's recursive mkdir: it loops forever under /proc
  await appendFile(join(weightsDir, TRAIN_LOG), `${JSON.stringify(entry)}\n`);
}

/** Entries of train_log.jsonl, skipping a torn or unparsable line. */
export async function readTrainLog(weightsDir: string): Promise<TrainLogEntry[]> {
  let text: string;
  try {
    text = await readFile(join(weightsDir, TRAIN_LOG), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: TrainLogEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const e = JSON.parse(line) as TrainLogEntry;
      if (typeof e.iteration === 'number' && typeof e.loss === 'number') out.push(e);
    } catch {
      // a line torn by a kill: skip it
    }
  }
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
