/**
 * Hostile and careless input on record streams (issue 11, items 1, 8, 19, 20): streams cut
 * short (`head -c`, a stage killed with SIGKILL), records lost or added, a record that claims
 * 4 GiB, records with impossible fields, garbage on stdin, and `train --stdin` fed all of that.
 * Every consumer must fail with exit 2 and a clear message, and finalise nothing: no mean.npy,
 * no index.json, no summary, no "0" exit that a pipeline would take as success.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { makeHeader, makeTrailer, packRecord, type StreamRecord } from '@alexnet-stream/stream-io';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';
import { decodeRecords } from '../pipeline-helpers';
import { A, CLI, clearError, demoData, scratch, sh } from './stream-fixtures';

const dir = scratch('streams');
const file = (name: string) => join(dir, name);

/** Byte offsets where each record of a stream ends (packRecord re-frames exactly what stages write). */
async function recordEnds(bytes: Buffer): Promise<number[]> {
  const records = await decodeRecords(bytes);
  const ends: number[] = [];
  let at = 0;
  for (const r of records) ends.push((at += packRecord(r).length));
  assert.equal(at, bytes.length, 'the re-framed records add up to the stream');
  return ends;
}

before(async () => {
  const demo = demoData(dir);
  const r = sh(
    dir,
    [
      `${A} scan ${demo}/train --shuffle --seed 2 > items.msgpack`,
      `${A} decode --size 32 < items.msgpack > images.msgpack`,
      `${A} mean --out mean.npy < images.msgpack | ${A} batch --size 8 --out-dir data`,
      `${A} read data > batches.msgpack`,
      `${A} augment --mean mean.npy --crop 28 < batches.msgpack > f32.msgpack`,
    ].join(' && '),
  );
  assert.deepEqual(r.status, [0], r.stderr);
});

test('every consumer refuses a stream cut at a record boundary or inside a record, and finalises nothing', async () => {
  const inputs = ['items', 'images', 'batches', 'f32'];
  for (const name of inputs) {
    const bytes = readFileSync(file(`${name}.msgpack`));
    const ends = await recordEnds(bytes);
    const last = ends[ends.length - 2]; // the end of the last data record: the trailer cut off
    writeFileSync(file(`${name}-boundary.msgpack`), bytes.subarray(0, last));
    writeFileSync(file(`${name}-middle.msgpack`), bytes.subarray(0, Math.floor(bytes.length / 2) + 3));
  }
  const consumers: [string, string, string[]][] = [
    // [input, command, outputs that must not appear]
    ['items', `${A} decode --size 16 > out.msgpack`, []],
    ['images', `${A} mean --out m.npy > /dev/null`, ['m.npy']],
    ['images', `${A} batch --size 8 --out-dir cutdir`, ['cutdir/index.json']],
    ['images', `${A} batch --size 8 > /dev/null`, []],
    ['batches', `${A} mean --out m.npy > /dev/null`, ['m.npy']],
    ['batches', `${A} augment --mean mean.npy --crop 28 > /dev/null`, []],
    ['images', `${A} inspect --json > summary.json`, []],
    ['f32', `${A} inspect > summary.txt`, []],
  ];
  for (const cut of ['boundary', 'middle']) {
    for (const [input, command, outputs] of consumers) {
      const r = sh(dir, `${command} < ${input}-${cut}.msgpack`);
      assert.deepEqual(r.status, [2], `${command} < ${input}-${cut}: ${r.stderr}`);
      clearError(
        r.stderr,
        cut === 'boundary'
          ? /stdin: the \w+ stream from alexnet-stream \w+ ended after \d+ records? without its trailer/
          : /stdin: the \w+ stream .*ends in the middle of record \d+/,
        command,
      );
      for (const o of outputs) assert.ok(!existsSync(file(o)), `${o} must not be written by ${command} < ${input}-${cut}`);
      if (command.includes('summary.json')) assert.equal(readFileSync(file('summary.json'), 'utf8'), '', 'no summary of part of a stream');
      if (command.includes('summary.txt')) assert.equal(readFileSync(file('summary.txt'), 'utf8'), '');
    }
  }
});

test("the issue's pipeline: scan | head -c | decode | mean | batch fails at decode and after, writes no mean and no index", () => {
  const demo = join(dir, 'demo');
  const half = Math.floor(readFileSync(file('items.msgpack')).length / 2);
  const r = sh(dir, `${A} scan ${demo}/train | head -c ${half} | ${A} decode --size 32 | ${A} mean --out issue.npy | ${A} batch --size 16 --out-dir issue`);
  assert.deepEqual(r.status.slice(2), [2, 2, 2], r.stderr);
  clearError(r.stderr, /decode: stdin: the item stream from alexnet-stream scan ends in the middle of record \d+/);
  clearError(r.stderr, /mean: stdin: the image stream from alexnet-stream decode ended after \d+ records without its trailer/);
  assert.ok(!existsSync(file('issue.npy')), 'no mean.npy');
  assert.ok(!existsSync(file('issue/index.json')), 'no index.json');
  const read = sh(dir, `${A} read issue > /dev/null`);
  assert.deepEqual(read.status, [2]);
  clearError(read.stderr, /no index\.json/);
});

test('kill -9 of decode mid-run: mean and batch fail, name decode, and write nothing', async () => {
  const items = readFileSync(file('items.msgpack'));
  const env = { ...process.env, ALEXNET_STREAM_PROGRESS: '0' };
  const decode = spawn(process.execPath, [CLI, 'decode', '--size', '32'], { cwd: dir, stdio: ['pipe', 'pipe', 'ignore'], env });
  const mean = spawn(process.execPath, [CLI, 'mean', '--out', 'killed.npy'], { cwd: dir, stdio: [decode.stdout!, 'pipe', 'pipe'], env });
  const batch = spawn(process.execPath, [CLI, 'batch', '--size', '8', '--out-dir', 'killed'], { cwd: dir, stdio: [mean.stdout!, 'ignore', 'pipe'], env });
  let meanErr = '';
  let batchErr = '';
  mean.stderr!.on('data', (d) => (meanErr += d));
  batch.stderr!.on('data', (d) => (batchErr += d));
  const exited = (p: ReturnType<typeof spawn>) => new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
  const [meanDone, batchDone] = [exited(mean), exited(batch)];
  // half the items, then nothing more: decode works through them and waits for the rest
  decode.stdin!.write(items.subarray(0, Math.floor(items.length / 2)));
  await new Promise((r) => setTimeout(r, 3000));
  decode.kill('SIGKILL');
  const [meanCode, batchCode] = [await meanDone, await batchDone];
  assert.equal(meanCode, 2, meanErr);
  assert.equal(batchCode, 2, batchErr);
  clearError(
    meanErr,
    /stdin: the image stream from alexnet-stream decode (ended after \d+ records without its trailer|ends in the middle of record \d+).*(alexnet-stream decode .*stopped before finishing|was the producer killed)/,
  );
  assert.ok(!existsSync(file('killed.npy')), 'no mean.npy');
  assert.ok(!existsSync(file('killed/index.json')), 'no index.json');
});

test('a record lost or added on the way, or two streams concatenated, is refused by the counts', async () => {
  const bytes = readFileSync(file('images.msgpack'));
  const ends = await recordEnds(bytes);
  const lost = Buffer.concat([bytes.subarray(0, ends[3]), bytes.subarray(ends[4])]); // record 5 dropped
  writeFileSync(file('lost.msgpack'), lost);
  let r = sh(dir, `${A} batch --size 8 --out-dir lostdir < lost.msgpack`);
  assert.deepEqual(r.status, [2]);
  clearError(r.stderr, /the trailer says alexnet-stream decode wrote 60 records, but 59 arrived/);
  assert.ok(!existsSync(file('lostdir/index.json')));
  const added = Buffer.concat([bytes.subarray(0, ends[4]), bytes.subarray(ends[3])]); // record 5 twice
  writeFileSync(file('added.msgpack'), added);
  r = sh(dir, `${A} mean --out added.npy < added.msgpack > /dev/null`);
  assert.deepEqual(r.status, [2]);
  clearError(r.stderr, /wrote 60 records, but 61 arrived/);
  assert.ok(!existsSync(file('added.npy')));
  r = sh(dir, `cat images.msgpack images.msgpack | ${A} batch --size 8 > /dev/null`);
  assert.equal(r.status[1], 2, r.stderr);
  clearError(r.stderr, /a header record after the stream's trailer \(two streams concatenated\?/);
});

test('a record claiming a 4 GiB field is refused when its length prefix arrives, not after buffering it', async () => {
  const header = packRecord(makeHeader('image', { imageSize: 32 }));
  // {type: 'image', data: <bin32 of 0xfffffff0 bytes>…}: the claim, then silence on an open pipe
  const claim = Buffer.from([
    0x82,
    0xa4,
    ...Buffer.from('type'),
    0xa5,
    ...Buffer.from('image'),
    0xa4,
    ...Buffer.from('data'),
    0xc6,
    0xff,
    0xff,
    0xff,
    0xf0,
    1,
    2,
    3,
  ]);
  for (const [stage, head] of [
    ['batch', header],
    ['mean', header],
    ['inspect', packRecord(makeHeader('image'))],
  ] as const) {
    const child = spawn(process.execPath, [CLI, stage, ...(stage === 'batch' ? ['--size', '4'] : stage === 'mean' ? ['--out', 'huge.npy'] : [])], {
      cwd: dir,
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    child.stdin!.on('error', () => undefined);
    child.stdin!.write(Buffer.concat([head, claim])); // stdin stays open: a decoder waiting for 4 GiB would hang
    const started = Date.now();
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    assert.equal(code, 2, `${stage}: ${err}`);
    assert.ok(Date.now() - started < 15_000, `${stage} answered at once`);
    clearError(err, /stdin: record 2 is larger than (1\.0 MiB \(the header declares 32x32 images\)|1 GiB \(the header declares no image or batch size)/, stage);
    child.stdin!.destroy();
  }
});

test('image, item and batch records with impossible fields are refused on read, naming the field', () => {
  const packr = new Packr({ useRecords: false });
  const good = { type: 'image', key: 'k', label: 0, channels: 3, height: 2, width: 2, data: new Uint8Array(12) };
  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['height 0.5', { ...good, height: 0.5, width: 384, data: new Uint8Array(576) }, /field "height" should be an integer from 1 to 16384 but is 0\.5/],
    ['zero size', { ...good, height: 0, width: 0, data: new Uint8Array(0) }, /field "height" should be an integer from 1 to 16384 but is 0/],
    ['1 channel', { ...good, channels: 1, data: new Uint8Array(4) }, /field "channels" should be an integer from 3 to 3 but is 1/],
    ['4 channels', { ...good, channels: 4, data: new Uint8Array(16) }, /field "channels" should be an integer from 3 to 3 but is 4/],
    ['label NaN', { ...good, label: NaN }, /field "label" should be an integer from 0 to 2147483647 but is NaN/],
    ['label 1.5', { ...good, label: 1.5 }, /field "label" should be an integer .* but is 1\.5/],
    ['label -1', { ...good, label: -1 }, /field "label" .* but is -1/],
    ['label past the classes', { ...good, label: 7 }, /label 7 is out of range for the stream's 2 class names/],
    ['data short', { ...good, data: new Uint8Array(11) }, /11 pixel bytes for a 3x2x2 image \(expected 12\)/],
    ['data a string', { ...good, data: 'pixels' }, /field "data" should be binary/],
  ];
  const header = makeHeader('image', { classNames: ['a', 'b'] });
  for (const [what, record, message] of bad) {
    const bytes = Buffer.concat([packRecord(header), packr.pack(good), packr.pack(record), packRecord(makeTrailer({ records: 2 }))]);
    writeFileSync(file('bad-fields.msgpack'), bytes);
    const r = sh(dir, `${A} mean --out bad-fields.npy < bad-fields.msgpack > /dev/null`);
    assert.deepEqual(r.status, [2], `${what}: ${r.stderr}`);
    clearError(r.stderr, /stdin record 3/, what);
    clearError(r.stderr, message, what);
    assert.ok(!existsSync(file('bad-fields.npy')), `${what}: no "3x0.5x384" mean`);
  }
  // items: a label of 1.5 or an empty path; batches: a NaN-free but negative label, a 1-channel shape
  const item = packr.pack({ type: 'item', path: '/x.jpg', label: 1.5, key: 'x' });
  writeFileSync(file('bad-item.msgpack'), Buffer.concat([packRecord(makeHeader('item')), item, packRecord(makeTrailer({ records: 1 }))]));
  let r = sh(dir, `${A} decode < bad-item.msgpack > /dev/null`);
  assert.deepEqual(r.status, [2]);
  clearError(r.stderr, /stdin record 2: field "label" should be an integer .* but is 1\.5/);
  const batch = { type: 'batch', dtype: 'uint8', shape: [1, 1, 2, 2], layout: 'NCHW', data: new Uint8Array(4), labels: new Uint8Array(4), keys: ['k'] };
  writeFileSync(file('bad-batch.msgpack'), Buffer.concat([packRecord(makeHeader('batch')), packr.pack(batch), packRecord(makeTrailer({ records: 1 }))]));
  r = sh(dir, `${A} augment --mean mean.npy --crop 2 < bad-batch.msgpack > /dev/null`);
  assert.deepEqual(r.status, [2]);
  clearError(r.stderr, /has 1 channels \(expected 3, RGB\)/);
  const negative = { ...batch, shape: [1, 3, 2, 2], data: new Uint8Array(12), labels: new Uint8Array(Int32Array.of(-1).buffer) };
  writeFileSync(file('bad-batch.msgpack'), Buffer.concat([packRecord(makeHeader('batch')), packr.pack(negative), packRecord(makeTrailer({ records: 1 }))]));
  r = sh(dir, `${A} inspect < bad-batch.msgpack`);
  assert.deepEqual(r.status, [2]);
  clearError(r.stderr, /\(k\): label -1 is negative/);
});

test('garbage, empty and foreign input on stdin of every stage: exit 2 and one clear line', () => {
  writeFileSync(file('random.bin'), Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24)));
  writeFileSync(file('text.txt'), 'hello, this is not a stream\n');
  writeFileSync(file('json.txt'), '{"type":"header","schema":"alexnet-stream/2","kind":"image"}\n');
  writeFileSync(file('empty.bin'), '');
  writeFileSync(file('legacy.msgpack'), packRecord({ ...makeHeader('image'), schema: 'alexnet-stream/1' } as unknown as StreamRecord));
  const stages = [`decode`, `mean --out g.npy`, `batch --size 4`, `augment --mean mean.npy --crop 28`, `inspect`];
  for (const input of ['random.bin', 'text.txt', 'json.txt', 'empty.bin', 'legacy.msgpack']) {
    for (const stage of stages) {
      const r = sh(dir, `${A} ${stage} < ${input} > /dev/null`);
      assert.deepEqual(r.status, [2], `${stage} < ${input}: ${r.stderr}`);
      clearError(
        r.stderr,
        input === 'empty.bin'
          ? /empty stream \(no header\)/
          : input === 'legacy.msgpack'
            ? /written by an older alexnet-stream, before streams ended with a trailer/
            : /stdin/,
        `${stage} < ${input}`,
      );
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    }
  }
  assert.ok(!existsSync(file('g.npy')));
});

test('train --stdin: garbage, an empty or cut-short stream, image records: exit 2, no stack trace; stored batches of 32 train at batch_size 8', async () => {
  const data = file('fixture');
  await writeFixtureDataDir({ dir: data, classes: 4, trainPerClass: 10, valPerClass: 3, size: 40, batchSize: 32 });
  const spec = writeSpecFile(file('tiny.json'), tinySpec(4, 35));
  const config = (name: string) => {
    writeFileSync(
      file(`${name}.yaml`),
      [
        `data_dir: ${data}`,
        `weights_dir: ${file(`w-${name}`)}`,
        `spec_file: ${spec}`,
        'batch_size: 8',
        'n_epochs: 1',
        'print_freq: 100',
        'seed: 1',
        'intra_op_threads: 1',
      ].join('\n'),
    );
    return file(`${name}.yaml`);
  };
  const f32 = sh(dir, `${A} read ${data} | ${A} augment --mean ${data}/mean.npy --crop 35 --seed 2 > train32.msgpack`);
  assert.deepEqual(f32.status, [0, 0], f32.stderr);
  const bytes = readFileSync(file('train32.msgpack'));
  writeFileSync(file('train32-cut.msgpack'), bytes.subarray(0, (await recordEnds(bytes)).at(-2)));
  const cases: [string, RegExp][] = [
    ['random.bin', /stdin/],
    ['empty.bin', /stdin: empty stream \(no header\)/],
    ['train32-cut.msgpack', /stdin: the batch stream from alexnet-stream augment ended after 2 records without its trailer/],
    ['images.msgpack', /stdin: train --stdin reads batch records but the stream carries image records/],
  ];
  for (const [input, message] of cases) {
    const r = sh(dir, `${A} train --stdin --config ${config('bad')} < ${input}`);
    assert.deepEqual(r.status, [2], `${input}: ${r.stderr}`);
    clearError(r.stderr, message, input);
  }
  // 40 images stored as batches of 32 + 8, trained at batch_size 8: re-cut into 5 batches of 8
  const ok = sh(dir, `${A} train --stdin --config ${config('recut')} < train32.msgpack`);
  assert.deepEqual(ok.status, [0], ok.stderr);
  const summary = JSON.parse(ok.stdout.toString().trim()) as { iteration: number; stopReason: string };
  assert.equal(summary.stopReason, 'end-of-input');
  assert.equal(summary.iteration, 5);
});

test('shard files and read of a set are whole streams: a shard pipes into augment, read ends with a trailer', async () => {
  const r = sh(dir, `${A} augment --mean mean.npy --crop 28 < data/train-00000.msgpack | ${A} inspect --json`);
  assert.deepEqual(r.status, [0, 0], r.stderr);
  const summary = JSON.parse(r.stdout.toString()) as { images: number; complete: boolean };
  assert.equal(summary.images, 8);
  assert.equal(summary.complete, true);
  const records = await decodeRecords(readFileSync(file('batches.msgpack')));
  assert.deepEqual(records.at(-1), { type: 'trailer', records: 8, images: 60, skipped: 0, producer: 'alexnet-stream read' });
  // a plain msgpack reader sees the trailer as a plain map
  const { Unpackr } = await import('msgpackr');
  const values = new Unpackr({ useRecords: false }).unpackMultiple(readFileSync(file('images.msgpack'))) as Record<string, unknown>[];
  assert.deepEqual(values.at(-1), { type: 'trailer', records: 60, skipped: 0, producer: 'alexnet-stream decode' });
});
