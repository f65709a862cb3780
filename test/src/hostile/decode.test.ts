/**
 * Hostile image files for `decode` and `predict` (issue 11, items 6 and 7): corrupt JPEGs that
 * libjpeg decodes "successfully" with grey where the data is missing (cut in half with an end
 * marker appended, the middle cut out, a header claiming 16000x16000 over little data), special
 * files in a list (/dev/zero, a FIFO named .jpg), a file over the size bound; and what held
 * before (zero-byte, text, truncated, PNG-as-JPEG, CMYK, 16-bit, RGBA, palette files; header
 * bombs refused fast). Both decode paths run: the TurboJPEG fast path in worker threads (the
 * default) and libuv + libvips (--workers 0).
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { encodeNpy } from '@alexnet-stream/core';
import { saveCheckpoint, initParameters } from '@alexnet-stream/model-alexnet';
import {
  decodeImage,
  type ImageRecord,
  makeHeader,
  packRecord,
  type StreamTrailer,
  wholeStream,
  withoutExtraneousHeaderBytes,
} from '@alexnet-stream/stream-io';
import { tinySpec } from '@alexnet-stream/trainer-multigpu/testing';
import { decodeRecords } from '../pipeline-helpers';
import { A, clearError, cli, scratch, sh } from './stream-fixtures';

const dir = scratch('decode');
const img = join(dir, 'img');
const file = (name: string) => join(img, name);

/** A photo-like 500x375 JPEG (smooth gradients and waves: libjpeg's fast path takes it). */
async function photo(quality = 90): Promise<Buffer> {
  const w = 500;
  const h = 375;
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) raw[(y * w + x) * 3 + c] = Math.round(128 + 60 * Math.sin(x / 37 + c) + 50 * Math.cos(y / 23 - c));
    }
  }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality })
    .toBuffer();
}

const CORRUPT = ['half-eoi.jpg', 'middle-cut.jpg', 'big-header.jpg', 'truncated.jpg'];

before(async () => {
  mkdirSync(img, { recursive: true });
  const good = await photo();
  writeFileSync(file('good.jpg'), good);
  const sos = good.indexOf(Buffer.from([0xff, 0xda]));
  const data = good.length - sos;
  // cut in half, an end-of-image marker appended: libjpeg warns "premature end of data segment"
  writeFileSync(file('half-eoi.jpg'), Buffer.concat([good.subarray(0, sos + (data >> 1)), Buffer.from([0xff, 0xd9])]));
  // the middle third of the scan data cut out
  writeFileSync(file('middle-cut.jpg'), Buffer.concat([good.subarray(0, sos + Math.floor(data / 3)), good.subarray(sos + Math.floor((2 * data) / 3))]));
  // a frame header claiming 16000x16000 over 2 KB of data
  const big = Buffer.from(good.subarray(0, sos + 2000));
  const sof = big.indexOf(Buffer.from([0xff, 0xc0]));
  big.writeUInt16BE(16000, sof + 5);
  big.writeUInt16BE(16000, sof + 7);
  writeFileSync(file('big-header.jpg'), Buffer.concat([big, Buffer.from([0xff, 0xd9])]));
  writeFileSync(file('truncated.jpg'), good.subarray(0, Math.floor(good.length * 0.6)));
  // benign: three stray bytes between header segments (libjpeg: "3 extraneous bytes before marker 0xc0")
  writeFileSync(file('extraneous.jpg'), Buffer.concat([good.subarray(0, sof), Buffer.from([1, 2, 3]), good.subarray(sof)]));
  // what held before
  const small = sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 200, g: 30, b: 60 } } });
  writeFileSync(file('zero.jpg'), Buffer.alloc(0));
  writeFileSync(file('text.jpg'), 'not an image\n');
  writeFileSync(file('png-named.jpg'), await small.clone().png().toBuffer());
  writeFileSync(file('cmyk.jpg'), await small.clone().toColourspace('cmyk').jpeg().toBuffer());
  writeFileSync(file('sixteen.png'), await small.clone().toColourspace('rgb16').png().toBuffer());
  writeFileSync(
    file('rgba.png'),
    await sharp({ create: { width: 40, height: 30, channels: 4, background: { r: 1, g: 2, b: 3, alpha: 0.5 } } })
      .png()
      .toBuffer(),
  );
  writeFileSync(file('palette.png'), await small.clone().png({ palette: true }).toBuffer());
  // a PNG header bomb: 30000 x 30000 claimed in a few bytes
  const png = await small.clone().png().toBuffer();
  const bomb = Buffer.from(png);
  bomb.writeUInt32BE(30000, 16);
  bomb.writeUInt32BE(30000, 20);
  writeFileSync(file('bomb.png'), bomb);
  // special files
  execFileSync('mkfifo', [file('fifo.jpg')]);
});

/** decode a list of files (keys = names) with extra flags; the skip lines and the stream. */
async function decodeFiles(names: string[], flags: string[] = []) {
  const items = names.map((name) => ({ type: 'item' as const, path: name.startsWith('/') ? name : file(name), label: 0, key: name }));
  writeFileSync(join(dir, 'items.msgpack'), Buffer.concat([...wholeStream(makeHeader('item', { classNames: ['x'] }), items)].map(packRecord)));
  const started = Date.now();
  const r = sh(dir, `${A} decode --size 32 ${flags.join(' ')} < items.msgpack`);
  const seconds = (Date.now() - started) / 1000;
  const records = r.status[0] === 0 ? await decodeRecords(r.stdout) : [];
  const skips = new Map<string, string>();
  for (const m of r.stderr.matchAll(/warning: skipped (\S+): (.*)/g)) skips.set(m[1].split('/').pop()!, m[2]);
  return { r, seconds, images: records.filter((x): x is ImageRecord => x.type === 'image'), trailer: records.at(-1) as StreamTrailer, skips };
}

for (const workers of ['default', '0']) {
  test(`corrupt JPEGs are skipped with the reason, not kept half grey (decode --workers ${workers})`, async () => {
    const flags = workers === '0' ? ['--workers', '0'] : [];
    const { r, images, trailer, skips } = await decodeFiles(['good.jpg', ...CORRUPT, 'extraneous.jpg'], flags);
    assert.deepEqual(r.status, [0], r.stderr);
    assert.deepEqual(
      images.map((i) => i.key),
      ['good.jpg', 'extraneous.jpg'],
    );
    for (const name of CORRUPT) assert.match(skips.get(name) ?? '', /^truncated or corrupt image/, `${name}: ${r.stderr}`);
    assert.match(skips.get('half-eoi.jpg')!, /corrupt JPEG data: premature end of data segment|damaged data/);
    assert.deepEqual([trailer.records, trailer.skipped], [2, CORRUPT.length]);
    assert.match(r.stderr, /decode: 2 images decoded, 4 skipped/);
    // the stray header bytes did not change the picture: same pixels as the clean file
    assert.deepEqual(images[1].data, images[0].data);
  });
}

test('the JPEG checks in the library: cleaned header bytes, corrupt data rejected by decodeImage itself', async () => {
  const good = readFileSync(file('good.jpg'));
  assert.equal(withoutExtraneousHeaderBytes(good), undefined, 'nothing to clean in a clean file');
  assert.deepEqual(withoutExtraneousHeaderBytes(readFileSync(file('extraneous.jpg'))), good);
  for (const name of CORRUPT) await assert.rejects(decodeImage(readFileSync(file(name)), { size: 64, resize: 'squash' }), name);
});

test('special files in a list: /dev/zero, a FIFO named .jpg, a folder, a file over --max-file-bytes are skipped at once', async () => {
  const { r, seconds, images, skips } = await decodeFiles(['good.jpg', '/dev/zero', 'fifo.jpg', '/tmp', 'good.jpg'], ['--max-file-bytes', '64M']);
  assert.deepEqual(r.status, [0], r.stderr);
  assert.ok(seconds < 30, `took ${seconds} s`);
  assert.equal(images.length, 2);
  assert.equal(skips.get('zero'), 'not a regular file (a character device)');
  assert.equal(skips.get('fifo.jpg'), 'not a regular file (a FIFO (named pipe))');
  assert.equal(skips.get('tmp'), 'not a regular file (a folder)');
  for (const workers of ['0', '2']) {
    const small = await decodeFiles(['good.jpg', 'png-named.jpg'], ['--max-file-bytes', '10k', '--workers', workers]);
    assert.deepEqual(
      small.images.map((i) => i.key),
      ['png-named.jpg'],
    );
    assert.match(small.skips.get('good.jpg')!, /^file is \d+\.\d KiB, more than --max-file-bytes \(10\.0 KiB\); raise --max-file-bytes to decode it/);
  }
  const bad = sh(dir, `${A} decode --max-file-bytes 12x < items.msgpack`);
  assert.deepEqual(bad.status, [2]);
  clearError(bad.stderr, /Expected a size in bytes >= 1 .* for --max-file-bytes but received "12x"/);
});

test('what held: odd but decodable files decode, broken ones are skipped, header bombs are refused fast', async () => {
  const names = ['zero.jpg', 'text.jpg', 'truncated.jpg', 'png-named.jpg', 'cmyk.jpg', 'sixteen.png', 'rgba.png', 'palette.png', 'bomb.png'];
  for (const flags of [[], ['--workers', '0']]) {
    const { r, seconds, images, skips } = await decodeFiles(names, flags);
    assert.deepEqual(r.status, [0], r.stderr);
    assert.ok(seconds < 30);
    assert.deepEqual(
      images.map((i) => i.key),
      ['png-named.jpg', 'cmyk.jpg', 'sixteen.png', 'rgba.png', 'palette.png'],
    );
    assert.match(skips.get('zero.jpg')!, /empty file/);
    assert.match(skips.get('text.jpg')!, /not an image/);
    assert.match(skips.get('truncated.jpg')!, /truncated or corrupt/);
    assert.ok(skips.has('bomb.png'));
  }
});

test('predict decodes through the same functions: a corrupt JPEG or a special file is refused with the reason, exit 2', async () => {
  // a tiny model (35x35 input) exported with a 3x40x40 mean: decode squashes to 40, crops 35
  const spec = tinySpec(2, 35);
  saveCheckpoint(join(dir, 'ckpt'), { spec, weights: initParameters(spec, 1), state: { epoch: 1 } });
  writeFileSync(join(dir, 'mean40.npy'), encodeNpy(new Float32Array(3 * 40 * 40).fill(100), [3, 40, 40]));
  const exp = cli(dir, ['export', '--weights', join(dir, 'ckpt'), '--out', join(dir, 'tiny.onnx'), '--mean', join(dir, 'mean40.npy')]);
  assert.equal(exp.status, 0, exp.stderr);
  const r = cli(dir, [
    'predict',
    '--model',
    join(dir, 'tiny.onnx'),
    '--mean',
    join(dir, 'mean40.npy'),
    file('good.jpg'),
    file('half-eoi.jpg'),
    file('middle-cut.jpg'),
    file('big-header.jpg'),
  ]);
  assert.equal(r.status, 2, r.stderr);
  const lines = r.stdout.toString().trim().split('\n');
  assert.equal(lines.length, 1, 'only the good image is predicted');
  assert.match(lines[0], /good\.jpg: class \d \d+\.\d\d%/);
  for (const name of ['half-eoi.jpg', 'middle-cut.jpg', 'big-header.jpg'])
    clearError(r.stderr, new RegExp(`skipped \\S*${name.replace('.', '\\.')}: truncated or corrupt image`));
  const special = cli(dir, ['predict', '--model', join(dir, 'tiny.onnx'), '--mean', join(dir, 'mean40.npy'), file('good.jpg'), file('fifo.jpg'), '/dev/zero'], {
    timeoutMs: 60_000,
  });
  assert.equal(special.status, 2, special.stderr);
  assert.equal(special.signal, null, 'did not hang');
  clearError(
    special.stderr,
    /not image files: .*(fifo\.jpg \(not a file\), \/dev\/zero \(not a file\)|\/dev\/zero \(not a file\), .*fifo\.jpg \(not a file\))/,
  );
  // predict | head -1, predict | true: the reader going away is not an error, and prints nothing
  const many = Array.from({ length: 100 }, () => file('good.jpg')).join(' ');
  for (const reader of ['head -1', 'true']) {
    const head = sh(dir, `${A} predict --model tiny.onnx --mean mean40.npy --batch-size 4 ${many} | ${reader}`);
    assert.deepEqual(head.status, [0, 0], `${reader}: ${head.stderr}`);
    assert.equal(head.stderr, '', reader);
  }
});

test('special files named as other inputs (--mean, --classes, --list, a shard index) are refused at once', () => {
  execFileSync('mkfifo', [join(dir, 'classes.fifo')]);
  mkdirSync(join(dir, 'fifo-index'));
  execFileSync('mkfifo', [join(dir, 'fifo-index', 'index.json')]);
  writeFileSync(join(dir, 'list.txt'), 'good.jpg 0\n');
  const cases: [string, RegExp][] = [
    [`${A} augment --mean /dev/zero < /dev/null`, /\/dev\/zero: cannot read the mean image \(not a regular file \(a character device\)\)/],
    [`${A} augment --mean classes.fifo < /dev/null`, /classes\.fifo: cannot read the mean image \(not a regular file \(a FIFO/],
    [`${A} scan --list /dev/zero --root img`, /list file \/dev\/zero is not a file/],
    [`${A} scan --list list.txt --root img --classes classes.fifo`, /classes\.fifo: cannot read the class names file: not a regular file \(a FIFO/],
    [`${A} read fifo-index`, /fifo-index\/index\.json: cannot read the shard index: not a regular file \(a FIFO/],
  ];
  for (const [script, message] of cases) {
    const started = Date.now();
    const r = spawnSync('bash', ['-c', `timeout 60 ${script} > /dev/null`], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 2, `${script}: ${r.stderr}`);
    assert.ok(Date.now() - started < 30_000, `${script} answered at once`);
    clearError(r.stderr, message, script);
  }
});
