/**
 * scan: find the source images of a data set and turn them into `item` records.
 *
 * Two layouts are understood, as in the seed and in Caffe:
 *  - ImageNet's train layout, one folder per class (`root/n01440764/*.JPEG`): sorted folder
 *    names become labels 0..K-1, the seed's order (`listClassFolders`);
 *  - a Caffe-style list, one `relative/path label` per line (`readCaffeList`).
 * `selectItems` then shuffles (seeded), shards (i/N) and limits the list. Everything here is
 * a plain async/pure function; the CLI only wires it to stdout.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { InputError, UsageError } from './errors';
import { ItemRecord } from './records';
import { Rng } from './rng';

/** File extensions taken as images, compared case-insensitively (ImageNet uses ".JPEG"). */
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff', '.bmp', '.gif'];

export function isImageFile(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

/** Code-point order, the order of Python's `sorted()` on str (the seed's label order). */
function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function toKey(relative: string): string {
  return relative.split(path.sep).join('/').replace(/\\/g, '/');
}

async function statOrThrow(p: string, what: string): Promise<import('node:fs').Stats> {
  try {
    return await fs.stat(p);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new InputError(`${what} ${p} does not exist`);
    throw new InputError(`${what} ${p} cannot be read (${e.code ?? e.message})`);
  }
}

/** Image files under `dir`, recursively, as paths relative to `dir`, sorted. Hidden entries are skipped. */
async function listImagesUnder(dir: string, prefix = ''): Promise<string[]> {
  const entries = await fs.readdir(path.join(dir, prefix), { withFileTypes: true });
  entries.sort((a, b) => byCodePoint(a.name, b.name));
  const out: string[] = [];
  for (const entry of entries) {
    if (entry.name.startsWith('.')) continue;
    const rel = prefix ? path.join(prefix, entry.name) : entry.name;
    let isDir = entry.isDirectory();
    let isFile = entry.isFile();
    if (entry.isSymbolicLink()) {
      const st = await fs.stat(path.join(dir, rel)).catch(() => undefined);
      isDir = Boolean(st?.isDirectory());
      isFile = Boolean(st?.isFile());
    }
    if (isDir) out.push(...(await listImagesUnder(dir, rel)));
    else if (isFile && isImageFile(entry.name)) out.push(rel);
  }
  return out;
}

export interface ItemList {
  /** Class names indexed by label, when known. */
  classNames: string[];
  items: ItemRecord[];
}

/**
 * ImageNet train layout: every non-hidden folder directly under `root` is a class; sorted folder
 * names (code-point order) are labels 0..K-1. Image files inside a class folder (recursively,
 * by extension, case-insensitive) are its items, sorted. A class folder without images keeps
 * its label (labels must not shift when one folder happens to be empty); files directly under
 * `root` are ignored. `path` is absolute, `key` is the path relative to `root` with forward slashes.
 */
export async function listClassFolders(root: string): Promise<ItemList> {
  const st = await statOrThrow(root, 'data set folder');
  if (!st.isDirectory()) throw new InputError(`data set folder ${root} is not a folder (for a list file use --list)`);
  const absRoot = path.resolve(root);
  const entries = await fs.readdir(absRoot, { withFileTypes: true });
  const classNames: string[] = [];
  for (const entry of entries) {
    if (entry.name.startsWith('.')) continue;
    const isDir = entry.isDirectory() || (entry.isSymbolicLink() && (await fs.stat(path.join(absRoot, entry.name)).catch(() => undefined))?.isDirectory());
    if (isDir) classNames.push(entry.name);
  }
  classNames.sort(byCodePoint);
  const items: ItemRecord[] = [];
  for (let label = 0; label < classNames.length; label++) {
    const classDir = path.join(absRoot, classNames[label]);
    for (const rel of await listImagesUnder(classDir)) {
      const relToRoot = path.join(classNames[label], rel);
      items.push({ type: 'item', path: path.join(absRoot, relToRoot), label, key: toKey(relToRoot) });
    }
  }
  return { classNames, items };
}

/**
 * A Caffe-style list (`train.txt`/`val.txt`): one `relative/path label` per line, the path
 * relative to `root` (it may contain spaces: the label is the last field). Blank lines and
 * CRLF line ends are fine; any other malformed line is an InputError naming `file:line`. When
 * `classNames` is given, labels must index it. Files are not opened here: a missing file is
 * the decoder's to report (and skip), like any other unreadable image.
 */
export async function readCaffeList(listFile: string, root: string, classNames?: string[]): Promise<ItemList> {
  const st = await statOrThrow(listFile, 'list file');
  if (!st.isFile()) throw new InputError(`list file ${listFile} is not a file`);
  const rootSt = await statOrThrow(root, 'root folder');
  if (!rootSt.isDirectory()) throw new InputError(`root folder ${root} is not a folder`);
  const absRoot = path.resolve(root);
  const text = await fs.readFile(listFile, 'utf8');
  const lines = text.split(/\r?\n/);
  const items: ItemRecord[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    const where = `${listFile}:${i + 1}`;
    const m = /^(.*\S)\s+(\S+)$/.exec(line);
    if (!m) throw new InputError(`${where}: expected "relative/path label" but found ${JSON.stringify(line)}`);
    const [, file, labelText] = m;
    if (!/^\d+$/.test(labelText) || !Number.isSafeInteger(Number(labelText))) {
      throw new InputError(`${where}: label ${JSON.stringify(labelText)} is not a non-negative integer`);
    }
    const label = Number(labelText);
    if (classNames && label >= classNames.length) {
      throw new InputError(`${where}: label ${label} is out of range for ${classNames.length} classes`);
    }
    const key = toKey(file);
    items.push({ type: 'item', path: path.resolve(absRoot, file), label, key });
  }
  return { classNames: classNames ?? [], items };
}

/** Read a `classes.txt` (one class name per line, label order). */
export async function readClassNames(file: string): Promise<string[]> {
  await statOrThrow(file, 'class names file');
  const names = (await fs.readFile(file, 'utf8')).split(/\r?\n/).map((s) => s.trim()).filter((s) => s !== '');
  if (names.length === 0) throw new InputError(`class names file ${file} lists no classes`);
  return names;
}

export interface SelectOptions {
  /** Shuffle with a seeded Rng (same seed, same order on every machine). */
  shuffle?: boolean;
  seed?: number;
  /** Keep every `count`-th item starting at `index` (after shuffling), so N machines split the work. */
  shard?: { index: number; count: number };
  /** Keep at most this many items (after sharding). */
  limit?: number;
}

/** Shuffle → shard → limit, in that order; returns a new array and leaves `items` alone. */
export function selectItems<T>(items: readonly T[], options: SelectOptions = {}): T[] {
  const { shuffle = false, seed = 0, shard, limit } = options;
  if (shard && !(Number.isInteger(shard.index) && Number.isInteger(shard.count) && shard.count >= 1 && shard.index >= 0 && shard.index < shard.count)) {
    throw new UsageError(`shard ${shard.index}/${shard.count} is not i/N with 0 <= i < N`);
  }
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 0)) throw new UsageError(`limit ${limit} is not a non-negative integer`);
  let out = items.slice();
  if (shuffle) new Rng(seed).shuffle(out);
  if (shard && shard.count > 1) out = out.filter((_, i) => i % shard.count === shard.index);
  if (limit !== undefined && out.length > limit) out = out.slice(0, limit);
  return out;
}
