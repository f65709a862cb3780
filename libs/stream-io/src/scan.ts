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
import { type Dirent, promises as fs, type Stats } from 'node:fs';
import * as path from 'node:path';
import { check, checkOptional, describeReadError, InputError, readUserFile, Rng } from '@alexnet-stream/core';
import { checkClassName, validateItem } from './record-validation';
import type { ItemRecord } from './records';

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

export interface ListOptions {
  /** Told about each folder skipped as a loop or a duplicate, and each broken link (one line each). */
  onWarning?: (message: string) => void;
}

/** A folder's identity: device and inode, the same whichever link or mount it is reached through. */
function folderId(st: Stats): string {
  return `${st.dev}:${st.ino}`;
}

async function readFolder(dir: string): Promise<Dirent[]> {
  try {
    const entries = await fs.readdir(dir, { withFileTypes: true });
    return entries.sort((a, b) => byCodePoint(a.name, b.name));
  } catch (err) {
    throw new InputError(`${dir}: cannot read the folder (${describeReadError(err)})`);
  }
}

/**
 * Image files under `dir`, depth first, as paths relative to `dir`, each folder's entries in
 * sorted order; hidden entries are skipped. Links are followed, but every folder is entered at
 * most once (by device + inode, shared in `visited` across the whole data set): a link back up
 * the tree, or to a folder listed elsewhere, is skipped with a warning, so a loop never makes
 * duplicates under the wrong label and the walk is bounded by the real tree. The walk keeps
 * its own stack (no recursion), so a deep tree cannot overflow the call stack.
 */
async function listImagesUnder(dir: string, visited: Map<string, string>, options: ListOptions): Promise<string[]> {
  const out: string[] = [];
  const stack: { rel: string; entries: Dirent[]; next: number }[] = [{ rel: '', entries: await readFolder(dir), next: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    if (top.next >= top.entries.length) {
      stack.pop();
      continue;
    }
    const entry = top.entries[top.next++];
    if (entry.name.startsWith('.')) continue;
    const rel = top.rel ? path.join(top.rel, entry.name) : entry.name;
    const full = path.join(dir, rel);
    let isDir = entry.isDirectory();
    let isFile = entry.isFile();
    let st: Stats | undefined;
    if (entry.isSymbolicLink() || isDir) {
      try {
        st = await fs.stat(full); // follows links
      } catch (err) {
        options.onWarning?.(`skipped ${full}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'a broken symbolic link' : describeReadError(err)}`);
        continue;
      }
      isDir = st.isDirectory();
      isFile = st.isFile();
    }
    if (isDir) {
      const id = folderId(st!);
      const first = visited.get(id);
      if (first !== undefined) {
        options.onWarning?.(`skipped ${full}: the same folder as ${first}, already scanned (a link loop or a duplicate); its images are listed once`);
        continue;
      }
      visited.set(id, full);
      stack.push({ rel, entries: await readFolder(full), next: 0 });
    } else if (isFile && isImageFile(entry.name)) out.push(rel);
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
export async function listClassFolders(root: string, options: ListOptions = {}): Promise<ItemList> {
  const st = await statOrThrow(root, 'data set folder');
  if (!st.isDirectory()) throw new InputError((name) => `data set folder ${root} is not a folder (for a list file use ${name('list')})`);
  const absRoot = path.resolve(root);
  const classes: { name: string; dir: string; stats: Stats }[] = [];
  for (const entry of await readFolder(absRoot)) {
    if (entry.name.startsWith('.')) continue;
    if (!entry.isDirectory() && !entry.isSymbolicLink()) continue;
    const dir = path.join(absRoot, entry.name);
    const stats = await fs.stat(dir).catch(() => undefined);
    if (!stats?.isDirectory()) continue;
    checkClassName(entry.name, `${absRoot}: class folder`);
    classes.push({ name: entry.name, dir, stats });
  }
  // readFolder sorted the entries: code-point order, the seed's label order.
  const classNames = classes.map((c) => c.name);
  // Every class folder (and the root) is claimed first, so that a link from one class into
  // another (or up to the root) is skipped whichever comes first in sorted order.
  const visited = new Map<string, string>([[folderId(st), absRoot]]);
  const duplicates = new Set<string>();
  for (const c of classes) {
    const first = visited.get(folderId(c.stats));
    if (first !== undefined) {
      options.onWarning?.(
        `class folder ${c.dir} is the same folder as ${first} (a link); its label ${classNames.indexOf(c.name)} is kept, with no images of its own`,
      );
      duplicates.add(c.name);
    } else visited.set(folderId(c.stats), c.dir);
  }
  const items: ItemRecord[] = [];
  for (let label = 0; label < classes.length; label++) {
    const { name, dir } = classes[label];
    if (duplicates.has(name)) continue;
    for (const rel of await listImagesUnder(dir, visited, options)) {
      const relToRoot = path.join(name, rel);
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
  const text = (await readUserFile(listFile, 'list file', MAX_LIST_FILE_BYTES)).toString('utf8');
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
    // No file system opens a longer path (PATH_MAX), and no reader takes an item record over 1 MiB.
    if (Buffer.byteLength(file) > MAX_PATH_BYTES) {
      throw new InputError(`${where}: the path is ${Buffer.byteLength(file)} bytes long, more than the ${MAX_PATH_BYTES} a file system opens`);
    }
    const item: ItemRecord = { type: 'item', path: path.resolve(absRoot, file), label, key: toKey(file) };
    // The rules every reader applies (a label within int32, no NUL in a path): a line that breaks
    // them is refused here, naming it, not written into a stream the next stage must refuse.
    validateItem(item as unknown as Record<string, unknown>, where);
    items.push(item);
  }
  return { classNames: classNames ?? [], items };
}

/** Linux's PATH_MAX: the longest path open() takes. */
const MAX_PATH_BYTES = 4096;

/** The largest list file read (ImageNet's train.txt is ~40 MB). */
const MAX_LIST_FILE_BYTES = 1 << 30;
/** The largest class names file read. */
const MAX_CLASS_NAMES_BYTES = 64 << 20;

/**
 * Read a `classes.txt` (one class name per line, label order). Lines are trimmed (CRLF, stray
 * spaces) and blank lines skipped; class names never start or end with white space (scan
 * refuses such folders), so nothing of a name is lost.
 */
export async function readClassNames(file: string): Promise<string[]> {
  await statOrThrow(file, 'class names file');
  const text = (await readUserFile(file, 'class names file', MAX_CLASS_NAMES_BYTES)).toString('utf8');
  const names: string[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const name = line.trim();
    if (name !== '') names.push(checkClassName(name, `${file}:${i + 1}`));
  });
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
  if (shard) check.shard('shard', shard);
  checkOptional.integer('limit', limit, { min: 0 });
  check.seed('seed', seed);
  let out = items.slice();
  if (shuffle) new Rng(seed).shuffle(out);
  if (shard && shard.count > 1) out = out.filter((_, i) => i % shard.count === shard.index);
  if (limit !== undefined && out.length > limit) out = out.slice(0, limit);
  return out;
}
