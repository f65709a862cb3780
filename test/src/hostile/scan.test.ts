/**
 * Hostile data set folders for `scan` and `prepare` (issue 11, items 3 and 18): symbolic-link
 * loops (a link up the tree, two loops, a class folder that is another class folder), class
 * folder names that classes.txt cannot keep (a newline, leading white space), and special
 * entries (a broken link). Loops must end, warn once each, and never give an image twice or
 * under a wrong label; bad names must stop the job with a clear error before anything is written.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import type { ItemRecord } from '@alexnet-stream/stream-io';
import { decodeRecords } from '../pipeline-helpers';
import { A, clearError, cli, scratch, sh } from './stream-fixtures';

const dir = scratch('scan');

async function jpeg(path: string, value: number): Promise<void> {
  writeFileSync(
    path,
    await sharp({ create: { width: 24, height: 16, channels: 3, background: { r: value, g: 255 - value, b: 40 } } })
      .jpeg()
      .toBuffer(),
  );
}

/** ds/a/1.jpg, ds/b/2.jpg (two real files), plus whatever `extra` adds. */
async function dataset(name: string, extra: (root: string) => void): Promise<string> {
  const root = join(dir, name);
  mkdirSync(join(root, 'a'), { recursive: true });
  mkdirSync(join(root, 'b'), { recursive: true });
  await jpeg(join(root, 'a', '1.jpg'), 10);
  await jpeg(join(root, 'b', '2.jpg'), 200);
  extra(root);
  return root;
}

async function scan(root: string): Promise<{ status: number[]; items: ItemRecord[]; stderr: string }> {
  const r = sh(dir, `${A} scan ${root}`);
  const records = r.status[0] === 0 ? await decodeRecords(r.stdout) : [];
  return { status: r.status, items: records.filter((x): x is ItemRecord => x.type === 'item'), stderr: r.stderr };
}

test('a link up the tree (ln -s .. ds/b/up): 2 images with their own labels, a warning, exit 0', async () => {
  const root = await dataset('up', (r) => symlinkSync('..', join(r, 'b', 'up')));
  const { status, items, stderr } = await scan(root);
  assert.deepEqual(status, [0], stderr);
  assert.deepEqual(
    items.map((i) => [i.key, i.label]),
    [
      ['a/1.jpg', 0],
      ['b/2.jpg', 1],
    ],
  );
  clearError(stderr, /scan: warning: skipped \S*b\/up: the same folder as \S*up, already scanned \(a link loop or a duplicate\)/);
});

test('two loops and a class folder linked to another class: bounded, each folder once, labels kept', async () => {
  const root = await dataset('loops', (r) => {
    mkdirSync(join(r, 'b', 'deep', 'deeper'), { recursive: true });
    symlinkSync('../../..', join(r, 'b', 'deep', 'deeper', 'top')); // → root
    symlinkSync('../../a', join(r, 'b', 'deep', 'to-a')); // → class a, from inside b
    symlinkSync('.', join(r, 'a', 'self')); // → itself
    symlinkSync('a', join(r, 'c')); // class folder c is class folder a
  });
  const started = Date.now();
  const { status, items, stderr } = await scan(root);
  assert.deepEqual(status, [0], stderr);
  assert.ok(Date.now() - started < 20_000, 'ends promptly');
  // classes a, b, c: c keeps its label 2 but lists nothing (its images are a's)
  assert.deepEqual(
    items.map((i) => [i.key, i.label]),
    [
      ['a/1.jpg', 0],
      ['b/2.jpg', 1],
    ],
  );
  assert.match(stderr, /class folder \S*\/c is the same folder as \S*\/a \(a link\); its label 2 is kept, with no images of its own/);
  assert.match(stderr, /skipped \S*a\/self: the same folder as/);
  assert.match(stderr, /skipped \S*deeper\/top: the same folder as/);
  assert.match(stderr, /skipped \S*deep\/to-a: the same folder as/);
  // prepare over the same folder: the same two images, once each
  const p = cli(dir, ['prepare', '--train', root, '--out', join(dir, 'loops-data'), '--size', '16', '--batch-size', '2']);
  assert.equal(p.status, 0, p.stderr);
  const manifest = JSON.parse(readFileSync(join(dir, 'loops-data', 'prepare.json'), 'utf8')) as { train: { images: number }; classNames: string[] };
  assert.equal(manifest.train.images, 2);
  assert.deepEqual(manifest.classNames, ['a', 'b', 'c']);
});

test('a broken link and a loop of file links are skipped with a warning each, not silently', async () => {
  const root = await dataset('broken', (r) => {
    symlinkSync('missing.jpg', join(r, 'a', 'gone.jpg'));
    symlinkSync('loop2.jpg', join(r, 'b', 'loop1.jpg'));
    symlinkSync('loop1.jpg', join(r, 'b', 'loop2.jpg'));
  });
  const { status, items, stderr } = await scan(root);
  assert.deepEqual(status, [0], stderr);
  assert.equal(items.length, 2);
  assert.match(stderr, /skipped \S*a\/gone\.jpg: a broken symbolic link/);
  assert.match(stderr, /skipped \S*b\/loop1\.jpg: a loop of symbolic links/);
});

test('class folder names that classes.txt cannot keep (newline, leading space) are refused before anything is written', async () => {
  for (const [name, bad] of [
    ['newline', 'dog\ncat'],
    ['space', ' cat'],
    ['tab', 'c\tat'],
  ]) {
    const root = await dataset(`names-${name}`, (r) => mkdirSync(join(r, bad)));
    const s = sh(dir, `${A} scan ${root} > /dev/null`);
    assert.deepEqual(s.status, [2], s.stderr);
    const quoted = JSON.stringify(bad).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    clearError(s.stderr, new RegExp(`class folder: class name ${quoted} (contains a control character|starts or ends with white space)`), name);
    const out = join(dir, `names-${name}-data`);
    const p = cli(dir, ['prepare', '--train', root, '--out', out, '--size', '16']);
    assert.equal(p.status, 2, p.stderr);
    clearError(p.stderr, /rename it/);
    assert.ok(!existsSync(out) && !existsSync(`${out}.partial`), 'nothing written');
  }
  // a classes.txt with such a line is refused too (scan --classes), naming file and line
  writeFileSync(join(dir, 'list.txt'), 'a/1.jpg 0\n');
  writeFileSync(join(dir, 'classes.txt'), 'a\nb\u0007c\n');
  const r = sh(dir, `${A} scan --list list.txt --root ${join(dir, 'names-space')} --classes classes.txt > /dev/null`);
  assert.deepEqual(r.status, [2]);
  clearError(r.stderr, /classes\.txt:2: class name "b\\u0007c" contains a control character/);
});

test('what held: class folders with spaces inside their names, hidden entries and a flat file stay as before', async () => {
  const root = await dataset('held', (r) => {
    mkdirSync(join(r, 'golden retriever'));
    mkdirSync(join(r, '.hidden'));
    writeFileSync(join(r, 'README.txt'), 'not a class');
  });
  await jpeg(join(root, 'golden retriever', 'g.jpg'), 90);
  await jpeg(join(root, '.hidden', 'h.jpg'), 90);
  const { status, items } = await scan(root);
  assert.deepEqual(status, [0]);
  assert.deepEqual(
    items.map((i) => [i.key, i.label]),
    [
      ['a/1.jpg', 0],
      ['b/2.jpg', 1],
      ['golden retriever/g.jpg', 2],
    ],
  );
  const p = cli(dir, ['prepare', '--train', root, '--out', join(dir, 'held-data'), '--size', '16', '--batch-size', '2']);
  assert.equal(p.status, 0, p.stderr);
  assert.equal(readFileSync(join(dir, 'held-data', 'classes.txt'), 'utf8'), 'a\nb\ngolden retriever\n');
  assert.ok(readdirSync(join(dir, 'held-data')).includes('mean.npy'));
});

test('Caffe list lines the stream format cannot carry (a label past int32, a NUL in the path, a 2 MB path) are refused by scan and prepare naming file:line', async () => {
  const root = await dataset('lists', () => undefined);
  const lists: [string, string, RegExp][] = [
    ['big-label.txt', 'a/1.jpg 2147483648\n', /big-label\.txt:1: field "label" should be an integer from 0 to 2147483647 but is 2147483648/],
    ['nul.txt', 'a/1.jpg 0\na/\u00001.jpg 1\n', /nul\.txt:2: field "path" should be a path without NUL characters/],
    ['long.txt', `${'x'.repeat(2_000_000)} 0\n`, /long\.txt:1: the path is 2000000 bytes long, more than the 4096 a file system opens/],
  ];
  for (const [name, text, pattern] of lists) {
    writeFileSync(join(dir, name), text);
    const r = sh(dir, `${A} scan --list ${name} --root ${root} > items.msgpack`);
    assert.deepEqual(r.status, [2], `${name}: ${r.stderr}`);
    clearError(r.stderr, pattern, name);
    const p = cli(dir, ['prepare', '--train', root, '--val', root, '--val-list', join(dir, name), '--out', join(dir, `${name}-data`), '--size', '16']);
    assert.equal(p.status, 2, `prepare --val-list ${name}: ${p.stderr}`);
    // (prepare knows the class count, so a big label is refused as out of range for it)
    clearError(p.stderr, new RegExp(`${name.replace('.', '\\.')}:\\d: `), `prepare --val-list ${name}`);
  }
  // what held: CRLF, a byte-order mark, blank lines, spaces inside a path
  mkdirSync(join(root, 'with space'));
  await jpeg(join(root, 'with space', 'x y.jpg'), 70);
  writeFileSync(join(dir, 'held.txt'), '\ufeffa/1.jpg 0\r\n\r\n  \nwith space/x y.jpg 1\r\n');
  const r = sh(dir, `${A} scan --list held.txt --root ${root}`);
  assert.deepEqual(r.status, [0], r.stderr);
  const items = (await decodeRecords(r.stdout)).filter((x): x is ItemRecord => x.type === 'item');
  assert.deepEqual(
    items.map((i) => [i.key, i.label]),
    [
      ['a/1.jpg', 0],
      ['with space/x y.jpg', 1],
    ],
  );
});
