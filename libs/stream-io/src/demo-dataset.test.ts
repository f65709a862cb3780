import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { DEMO_CLASSES, generateDemoDataset } from './demo-dataset';
import { listClassFolders, readCaffeList } from './scan';

function filesOf(dir: string, prefix = ''): string[] {
  return readdirSync(join(dir, prefix), { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? filesOf(dir, join(prefix, e.name)) : [join(prefix, e.name)]))
    .sort();
}

test('demo data set: layout, labels agree with scan, sizes/qualities vary, same seed → identical bytes', async () => {
  const a = mkdtempSync(join(tmpdir(), 'demo-a-'));
  const b = mkdtempSync(join(tmpdir(), 'demo-b-'));
  const c = mkdtempSync(join(tmpdir(), 'demo-c-'));
  try {
    const opts = { seed: 7, trainPerClass: 4, valPerClass: 2 };
    const summary = await generateDemoDataset(a, opts);
    await generateDemoDataset(b, opts);
    await generateDemoDataset(c, { ...opts, seed: 8 });
    assert.deepEqual(summary, { classNames: [...DEMO_CLASSES], train: 24, val: 12 });
    assert.ok(DEMO_CLASSES.length >= 5);
    const files = filesOf(a);
    assert.deepEqual(files, filesOf(b));
    assert.equal(files.filter((f) => f.endsWith('.jpg')).length, 36);
    for (const f of files) assert.ok(readFileSync(join(a, f)).equals(readFileSync(join(b, f))), `${f} differs between two runs with the same seed`);
    assert.ok(!readFileSync(join(a, 'train/disk/disk_0000.jpg')).equals(readFileSync(join(c, 'train/disk/disk_0000.jpg'))), 'another seed gives other images');
    // scan agrees with the generator's labels, for the folders and for both lists
    const scanned = await listClassFolders(join(a, 'train'));
    assert.deepEqual(scanned.classNames, [...DEMO_CLASSES]);
    const trainList = await readCaffeList(join(a, 'train.txt'), join(a, 'train'), scanned.classNames);
    assert.deepEqual(
      trainList.items.map((i) => [i.key, i.label]),
      scanned.items.map((i) => [i.key, i.label]),
    );
    const val = await readCaffeList(join(a, 'val.txt'), join(a, 'val'), scanned.classNames);
    assert.equal(val.items.length, 12);
    assert.deepEqual([...new Set(val.items.map((i) => i.label))].sort(), [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(readFileSync(join(a, 'classes.txt'), 'utf8').trim().split('\n'), [...DEMO_CLASSES]);
    // real JPEGs of varied sizes within 160..520
    const sizes = new Set<string>();
    for (const item of scanned.items) {
      const meta = await sharp(item.path).metadata();
      assert.equal(meta.format, 'jpeg');
      assert.ok(meta.width! >= 160 && meta.width! <= 520 && meta.height! >= 160 && meta.height! <= 520, `${item.key}: ${meta.width}x${meta.height}`);
      sizes.add(`${meta.width}x${meta.height}`);
    }
    assert.ok(sizes.size >= 20, `sizes vary (${sizes.size} distinct of 24)`);
  } finally {
    for (const d of [a, b, c]) rmSync(d, { recursive: true, force: true });
  }
});
