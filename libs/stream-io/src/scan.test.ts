import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError } from '@alexnet-stream/core';
import { listClassFolders, readCaffeList, selectItems, isImageFile } from './scan';

function tree(files: string[]): string {
  const root = mkdtempSync(join(tmpdir(), 'scan-'));
  for (const f of files) {
    mkdirSync(join(root, f, '..'), { recursive: true });
    writeFileSync(join(root, f), 'x');
  }
  return root;
}

test('isImageFile: image extensions, any case', () => {
  for (const name of ['a.jpg', 'a.JPEG', 'b.Png', 'c.webp', 'd.TIF', 'e.tiff', 'f.bmp', 'g.GIF']) assert.ok(isImageFile(name), name);
  for (const name of ['a.txt', 'jpg', 'a.jpg.tmp', 'README']) assert.ok(!isImageFile(name), name);
});

test('listClassFolders: sorted folder names are labels, images sorted, keys relative with /', async () => {
  const root = tree(['n02/b.JPEG', 'n02/a.jpeg', 'n01/x.jpg', 'n01/notes.txt', 'n01/sub/y.png', 'n03/.hidden.jpg', '.git/z.jpg', 'stray.jpg']);
  try {
    const { classNames, items } = await listClassFolders(root);
    assert.deepEqual(classNames, ['n01', 'n02', 'n03']); // n03 empty but keeps its label
    assert.deepEqual(
      items.map((i) => [i.key, i.label]),
      [
        ['n01/sub/y.png', 0],
        ['n01/x.jpg', 0],
        ['n02/a.jpeg', 1],
        ['n02/b.JPEG', 1],
      ],
    );
    assert.equal(items[3].path, join(root, 'n02/b.JPEG'));
    assert.ok(items.every((i) => i.type === 'item'));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('listClassFolders: a missing folder is an InputError naming it', async () => {
  await assert.rejects(listClassFolders('/nonexistent/data'), (e: Error) => e instanceof InputError && /\/nonexistent\/data does not exist/.test(e.message));
});

test('readCaffeList: paths with spaces, blank lines, CRLF; bad lines name file:line', async () => {
  const root = tree([]);
  try {
    const list = join(root, 'val.txt');
    writeFileSync(list, 'a/one.JPEG 3\r\n\r\nmy photos/two.jpg 0\r\n   \n');
    const { items } = await readCaffeList(list, root, ['a', 'b', 'c', 'd']);
    assert.deepEqual(
      items.map((i) => [i.key, i.label]),
      [
        ['a/one.JPEG', 3],
        ['my photos/two.jpg', 0],
      ],
    );
    assert.equal(items[1].path, join(root, 'my photos/two.jpg'));
    writeFileSync(list, 'a.jpg 1\nb.jpg\n');
    await assert.rejects(readCaffeList(list, root), (e: Error) => e instanceof InputError && e.message.startsWith(`${list}:2:`));
    writeFileSync(list, 'a.jpg 1\nb.jpg -2\n');
    await assert.rejects(readCaffeList(list, root), new RegExp(`${list}:2: label "-2"`));
    writeFileSync(list, 'a.jpg 4\n');
    await assert.rejects(readCaffeList(list, root, ['a', 'b']), /:1: label 4 is out of range for 2 classes/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('selectItems: seeded shuffle, shards partition the set, limit after shard', () => {
  const items = Array.from({ length: 101 }, (_, i) => i);
  const a = selectItems(items, { shuffle: true, seed: 5 });
  assert.deepEqual(a, selectItems(items, { shuffle: true, seed: 5 }));
  assert.notDeepEqual(a, items);
  assert.notDeepEqual(a, selectItems(items, { shuffle: true, seed: 6 }));
  assert.deepEqual(
    [...a].sort((x, y) => x - y),
    items,
  );
  const shards = [0, 1, 2].map((index) => selectItems(items, { shuffle: true, seed: 5, shard: { index, count: 3 } }));
  assert.deepEqual(
    shards.map((s) => s.length),
    [34, 34, 33],
  );
  assert.deepEqual(
    shards.flat().sort((x, y) => x - y),
    items,
  );
  assert.deepEqual(
    shards[1],
    a.filter((_, i) => i % 3 === 1),
  );
  assert.deepEqual(selectItems(items, { shuffle: true, seed: 5, shard: { index: 1, count: 3 }, limit: 4 }), shards[1].slice(0, 4));
  assert.deepEqual(items.length, 101); // input untouched
  assert.throws(() => selectItems(items, { shard: { index: 3, count: 3 } }), /Expected i\/N with 0 <= i < N \(e.g. 0\/4\) for shard but received "3\/3"/);
});
