#!/usr/bin/env node
// Debian's `dataset-fashion-mnist` (apt-get install dataset-fashion-mnist: the four IDX files of
// zalandoresearch/fashion-mnist under /usr/share/datasets/fashion-mnist) as a JPEG data set the
// project's own CLI reads: class folders for training, a flat test folder with a Caffe-style list.
//
//   node bench/tta/fashion-mnist.mjs --out <dir> [--train-per-class 1000] [--test-per-class 200]
//                                    [--size 128] [--source /usr/share/datasets/fashion-mnist]
//
// The selection is fixed and deterministic: the first `--train-per-class` images of each class
// in the order of train-images-idx3-ubyte (10 x 1,000 = 10,000 by default) and the first
// `--test-per-class` of each class in t10k-images-idx3-ubyte (10 x 200 = 2,000): balanced classes,
// the same files on every machine. Each 28x28 grey image is enlarged to --size x --size (sharp,
// bilinear) and written as a grey JPEG (quality 95); the decoders turn grey into RGB.
//
// Output (built in <dir>.partial/ and renamed to <dir> when complete, so <dir> is whole or absent):
//   <dir>/train/<k>-<name>/<k>-<name>-<idx>.jpg   <idx>: the image's index in the IDX file
//   <dir>/test/test-<idx>.jpg
//   <dir>/test.txt       Caffe-style "test-<idx>.jpg <label>" lines (relative to test/)
//   <dir>/classes.txt    the 10 folder names in label order (sorted names = labels, as scan assigns them)
//   <dir>/selection.json what was taken from where
// An existing complete <dir> (with selection.json of the same options) is kept as it is.
import { createRequire } from 'node:module';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

export const DEFAULT_SOURCE = '/usr/share/datasets/fashion-mnist';
/** Folder names sort in label order (0..9), so `scan` assigns the dataset's own labels. */
export const CLASS_FOLDERS = ['0-tshirt-top', '1-trouser', '2-pullover', '3-dress', '4-coat', '5-sandal', '6-shirt', '7-sneaker', '8-bag', '9-ankle-boot'];

function readIdx(path, magic) {
  if (!existsSync(path)) {
    throw new Error(`${path}: not found; install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --source <dir>`);
  }
  const bytes = gunzipSync(readFileSync(path));
  const found = bytes.readUInt32BE(0);
  if (found !== magic) throw new Error(`${path}: IDX magic ${found}, expected ${magic}`);
  const count = bytes.readUInt32BE(4);
  if (magic === 2049) {
    if (bytes.length !== 8 + count) throw new Error(`${path}: ${bytes.length} bytes for ${count} labels`);
    return { count, labels: bytes.subarray(8) };
  }
  const rows = bytes.readUInt32BE(8),
    cols = bytes.readUInt32BE(12);
  if (bytes.length !== 16 + count * rows * cols) throw new Error(`${path}: ${bytes.length} bytes for ${count} images of ${rows}x${cols}`);
  return { count, rows, cols, pixels: bytes.subarray(16) };
}

/** The first `perClass` indices of each class, in file order. */
export function selectBalanced(labels, perClass, classes = 10) {
  const taken = new Array(classes).fill(0);
  const picked = [];
  for (let i = 0; i < labels.length && picked.length < perClass * classes; i++) {
    const label = labels[i];
    if (taken[label] < perClass) {
      taken[label]++;
      picked.push(i);
    }
  }
  const short = taken.findIndex((n) => n < perClass);
  if (short >= 0) throw new Error(`class ${short} has only ${taken[short]} images, ${perClass} asked for`);
  return picked;
}

async function writeJpeg(sharp, images, index, size, path) {
  const { rows, cols, pixels } = images;
  const raw = pixels.subarray(index * rows * cols, (index + 1) * rows * cols);
  await sharp(Buffer.from(raw), { raw: { width: cols, height: rows, channels: 1 } })
    .resize(size, size, { kernel: 'linear', fit: 'fill' })
    .jpeg({ quality: 95 })
    .toFile(path);
}

export async function convertFashionMnist({ out, source = DEFAULT_SOURCE, trainPerClass = 1000, testPerClass = 200, size = 128, log = () => {} }) {
  const target = resolve(out);
  const selection = { source, trainPerClass, testPerClass, size, rule: 'first N of each class in IDX file order' };
  const marker = join(target, 'selection.json');
  if (existsSync(marker)) {
    const had = JSON.parse(readFileSync(marker, 'utf8'));
    if (['trainPerClass', 'testPerClass', 'size'].every((k) => had[k] === selection[k])) {
      log(`fashion-mnist: ${target} is complete (${had.train} train, ${had.test} test images): kept`);
      return { dir: target, ...had };
    }
    throw new Error(`${target} holds another selection (${JSON.stringify(had)}): remove it or choose another --out`);
  }
  if (existsSync(target)) throw new Error(`${target} exists but is not a complete conversion (no selection.json): remove it or choose another --out`);
  const sharp = require('sharp');
  const partial = `${target}.partial`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(join(partial, 'test'), { recursive: true });
  for (const name of CLASS_FOLDERS) mkdirSync(join(partial, 'train', name), { recursive: true });

  const started = Date.now();
  const sets = [
    { name: 'train', images: 'train-images-idx3-ubyte.gz', labels: 'train-labels-idx1-ubyte.gz', perClass: trainPerClass },
    { name: 'test', images: 't10k-images-idx3-ubyte.gz', labels: 't10k-labels-idx1-ubyte.gz', perClass: testPerClass },
  ];
  const counts = {};
  const testLines = [];
  for (const set of sets) {
    const images = readIdx(join(source, set.images), 2051);
    const { labels } = readIdx(join(source, set.labels), 2049);
    if (labels.length !== images.count) throw new Error(`${set.labels}: ${labels.length} labels for ${images.count} images`);
    const picked = selectBalanced(labels, set.perClass);
    // Bounded concurrency: sharp runs on libuv's pool; 8 in flight keeps both cores busy.
    let next = 0;
    const worker = async () => {
      while (next < picked.length) {
        const index = picked[next++];
        const label = labels[index];
        const id = String(index).padStart(5, '0');
        const path =
          set.name === 'train' ? join(partial, 'train', CLASS_FOLDERS[label], `${CLASS_FOLDERS[label]}-${id}.jpg`) : join(partial, 'test', `test-${id}.jpg`);
        await writeJpeg(sharp, images, index, size, path);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    if (set.name === 'test') for (const index of picked) testLines.push(`test-${String(index).padStart(5, '0')}.jpg ${labels[index]}`);
    counts[set.name] = picked.length;
    log(`fashion-mnist: ${set.name}: ${picked.length} images (${set.perClass} per class) from ${join(source, set.images)}`);
  }
  writeFileSync(join(partial, 'test.txt'), `${testLines.join('\n')}\n`);
  writeFileSync(join(partial, 'classes.txt'), `${CLASS_FOLDERS.join('\n')}\n`);
  const done = { ...selection, train: counts.train, test: counts.test, seconds: (Date.now() - started) / 1000 };
  writeFileSync(join(partial, 'selection.json'), `${JSON.stringify(done, null, 2)}\n`);
  renameSync(partial, target);
  log(`fashion-mnist: wrote ${target} in ${done.seconds.toFixed(1)} s`);
  return { dir: target, ...done };
}

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    const integer = (name) => {
      const v = Number(value());
      if (!Number.isInteger(v) || v < 1) throw new Error(`${name}: expected a positive integer`);
      return v;
    };
    if (flag === '--out') opts.out = value();
    else if (flag === '--source') opts.source = value();
    else if (flag === '--train-per-class') opts.trainPerClass = integer(flag);
    else if (flag === '--test-per-class') opts.testPerClass = integer(flag);
    else if (flag === '--size') opts.size = integer(flag);
    else throw new Error(`unknown option ${flag}`);
  }
  if (!opts.out) throw new Error('--out <dir> is required');
  return opts;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const opts = parseArgs(process.argv.slice(2));
    await convertFashionMnist({ ...opts, log: (m) => process.stderr.write(`${m}\n`) });
  } catch (err) {
    process.stderr.write(`fashion-mnist: ${err.message}\n`);
    process.exit(2);
  }
}
