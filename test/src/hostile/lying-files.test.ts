/**
 * Files that lie about themselves: a mean image whose .npy header claims negative, fractional
 * or unreadable sides, or whose values are NaN; an ONNX model whose tensors live in an external
 * file (outside any path the user gave); checkpoints and models whose weights are NaN or
 * infinite, or overflow on an image. Each is refused on read, naming the file and what is wrong
 * (exit 2): never a "3x-2x-2" mean written as whole, never "NaN%" printed as a prediction.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { importMeanImage, initParameters, loadCheckpoint, parameterList, saveCheckpoint } from '@alexnet-stream/model-alexnet';
import { decodeModel, encodeModel, lowerInference } from '@alexnet-stream/onnx-export';
import { encodeNpy } from '@alexnet-stream/core';
import { readMeanNpy, readShardIndex } from '@alexnet-stream/stream-io';
import { tinySpec, writeFixtureDataDir } from '@alexnet-stream/trainer-multigpu/testing';
import { A, clearError, cli, scratch, sh } from './stream-fixtures';

const dir = scratch('lying-files');
const p = (name: string) => join(dir, name);
const spec = tinySpec(4, 35);
const weights = initParameters(spec, 1);

/** A .npy file with `header` as its dict text and `data` after it (format 1.0, padded as NumPy pads). */
function npy(name: string, header: string, data = Buffer.alloc(0)): string {
  let text = header;
  text += `${' '.repeat((64 - ((10 + text.length + 1) % 64)) % 64)}\n`;
  const prefix = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, 0, 0]);
  prefix.writeUInt16LE(text.length, 8);
  writeFileSync(p(name), Buffer.concat([prefix, Buffer.from(text, 'latin1'), data]));
  return p(name);
}

/**
 * The library refuses it as bad input (an error with exit code 2, the CLI's rule for input
 * errors) with a message matching `pattern`. Every case goes through the library readers here,
 * in-process; each CLI command still gets some cases spawned, for its exit code, its one-line
 * message and what it leaves behind (a spawned command costs ~0.35 CPU-s).
 */
async function refusedInProcess(run: () => unknown, pattern: RegExp, what: string): Promise<void> {
  await assert.rejects(
    async () => run(),
    (err: Error & { exitCode?: number }) => {
      assert.equal(err.exitCode, 2, `${what}: ${err.message}`);
      assert.match(err.message, pattern, what);
      return true;
    },
  );
}

before(async () => {
  await writeFixtureDataDir({ dir: p('data'), classes: 4, trainPerClass: 4, valPerClass: 2, size: 40, batchSize: 8 });
  saveCheckpoint(p('ckpt'), { spec, weights, state: {} });
  writeFileSync(
    p('model.onnx'),
    encodeModel(lowerInference(spec, weights, { classNames: ['a', 'b', 'c', 'd'], meanChannels: [100, 110, 120], imageSize: 40 })),
  );
  await sharp({ create: { width: 60, height: 50, channels: 3, background: '#a05030' } })
    .jpeg()
    .toFile(p('photo.jpg'));
});

test('a mean .npy whose header claims negative, fractional or unreadable sides, or whose values are NaN or infinite, is refused by every reader', async () => {
  const f32 = (n: number, value = 0) => Buffer.from(new Float32Array(n).fill(value).buffer);
  const cases: [string, RegExp][] = [
    [
      npy('neg.npy', "{'descr': '<f4', 'fortran_order': False, 'shape': (3, -2, -2), }", f32(12)),
      /\.npy shape \(3, -2, -2\) has "-2", not a non-negative integer/,
    ],
    [
      npy('frac.npy', "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1.5, 2), }", f32(9)),
      /\.npy shape \(3, 1\.5, 2\) has "1\.5", not a non-negative integer/,
    ],
    [npy('word.npy', "{'descr': '<f4', 'fortran_order': False, 'shape': (3, abc, 4), }", f32(12)), /\.npy shape \(3, abc, 4\) has "abc"/],
    [npy('empty.npy', "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 0, 0), }"), /not a usable mean image: shape \(3, 0, 0\) has an empty side/],
    [npy('nan.npy', "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 40, 40), }", f32(4800, NaN)), /not a usable mean image: value 0 is NaN/],
    [npy('inf.npy', "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 40, 40), }", f32(4800, -Infinity)), /not a usable mean image: value 0 is -Infinity/],
  ];
  for (const [i, [path, pattern]] of cases.entries()) {
    const name = path.slice(dir.length + 1);
    // The two readers: stream-io's (augment, export, train) and the importer's (import --mean).
    await refusedInProcess(() => readMeanNpy(path), pattern, `readMeanNpy ${name}`);
    await refusedInProcess(() => importMeanImage(path), pattern, `importMeanImage ${name}`);
    // Each command, spawned, with two of the cases.
    const command = ['augment', 'export', 'import'][i % 3];
    if (command === 'augment') {
      const augment = sh(dir, `${A} read data | ${A} augment --mean ${name} --crop 35 > /dev/null`);
      assert.equal(augment.status[1], 2, `augment --mean ${name}: ${augment.stderr}`);
      clearError(augment.stderr, pattern, `augment --mean ${name}`);
    } else if (command === 'export') {
      const exported = cli(dir, ['export', '--weights', p('ckpt'), '--mean', path, '--out', p(`${name}.onnx`)]);
      assert.equal(exported.status, 2, `export --mean ${name}: ${exported.stderr}`);
      clearError(exported.stderr, pattern, `export --mean ${name}`);
      assert.ok(!existsSync(p(`${name}.onnx`)), 'no model written');
    } else {
      const imported = cli(dir, ['import', '--from', 'onnx', p('model.onnx'), '--mean', path, '--out', p(`imported-${name}`)]);
      assert.equal(imported.status, 2, `import --mean ${name}: ${imported.stderr}`);
      clearError(imported.stderr, pattern, `import --mean ${name}`);
      assert.ok(!existsSync(p(`imported-${name}`)), 'no checkpoint written');
    }
  }
});

test('import --mean refuses a mean image the model cannot use (not square, or smaller than its input), as export does', () => {
  writeFileSync(p('rect.npy'), encodeNpy(new Float32Array(3 * 64 * 40), [3, 64, 40]));
  writeFileSync(p('small.npy'), encodeNpy(new Float32Array(3 * 8 * 8), [3, 8, 8]));
  for (const [file, shape] of [
    ['rect.npy', '3x64x40'],
    ['small.npy', '3x8x8'],
  ]) {
    const r = cli(dir, ['import', '--from', 'onnx', p('model.onnx'), '--mean', p(file), '--out', p(`imported-${file}`)]);
    assert.equal(r.status, 2, r.stderr);
    clearError(r.stderr, new RegExp(`${file}: a mean image of 3xSxS with S >= 35 is needed for this model, this one is ${shape}`));
    assert.ok(!existsSync(p(`imported-${file}`)));
  }
});

test('an ONNX model whose tensors live in an external file is refused by predict, import and serve, before onnxruntime reads any path', () => {
  writeFileSync(p('secret.bin'), 'sixteen bytes!!!');
  const commands = [
    ['predict', '--model', p('external.onnx'), p('photo.jpg')],
    ['import', '--from', 'onnx', p('external.onnx'), '--out', p('imported-external')],
    ['serve', '--model', `m=${p('external.onnx')}`, '--port', '0'],
  ];
  for (const [i, location] of ['/etc/hostname', '../../../etc/hostname', 'secret.bin'].entries()) {
    const model = decodeModel(encodeModel(lowerInference(spec, weights, { meanChannels: [100, 110, 120] })));
    const t = model.graph!.initializer!.find((x) => x.name === 'fc8.bias')!;
    t.rawData = new Uint8Array(0);
    t.dataLocation = 1; // EXTERNAL
    t.externalData = [
      { key: 'location', value: location },
      { key: 'offset', value: '0' },
      { key: 'length', value: '16' },
    ];
    const bytes = encodeModel(model);
    writeFileSync(p('external.onnx'), bytes);
    const expected = new RegExp(
      `external\\.onnx: tensor "fc8\\.bias" keeps its data in an external file \\(${JSON.stringify(location).replace(/[./]/g, '\\$&')}\\); only self-contained models are read`,
    );
    // The parser every command reads models with refuses each location; each command, spawned, one of them.
    assert.throws(
      () => decodeModel(bytes, p('external.onnx')),
      (err: Error & { exitCode?: number }) => err.exitCode === 2 && expected.test(err.message),
    );
    const args = commands[i];
    const r = cli(dir, args);
    assert.equal(r.status, 2, `${args[0]} ${location}: ${r.stderr}`);
    clearError(r.stderr, expected, `${args[0]} ${location}`);
    assert.doesNotMatch(r.stderr, /onnxruntime/, 'refused before onnxruntime saw it');
  }
});

test('NaN or infinite weights: a checkpoint is refused by export and validate, a model by predict and serve; nothing prints "NaN%"', async () => {
  const nan = initParameters(spec, 1);
  nan['conv1.weight'][5] = NaN;
  const inf = initParameters(spec, 1);
  inf['fc8.bias'][2] = Infinity;
  // Written as a damaged file would be: the save path refuses such weights too.
  for (const [name, w, value, at] of [
    ['nan', nan, 'NaN', 'conv1.weight[5]'],
    ['inf', inf, 'Infinity', 'fc8.bias[2]'],
  ] as const) {
    assert.throws(() => saveCheckpoint(p(`ckpt-${name}`), { spec, weights: w, state: {} }), new RegExp(`${at.replace(/[[\].]/g, '\\$&')} is ${value}`));
    writeFileSync(p(`ckpt-${name}.safetensors`), damagedSafetensors(w));
    const checkpointMessage = new RegExp(`${at.replace(/[[\].]/g, '\\$&')} is ${value}: weights are finite numbers`);
    // The checkpoint reader refuses both; export gets the NaN one spawned, validate the infinite one.
    await refusedInProcess(() => loadCheckpoint(p(`ckpt-${name}.safetensors`)), checkpointMessage, `loadCheckpoint ${name}`);
    const checkpointArgs =
      name === 'nan'
        ? ['export', '--weights', p(`ckpt-${name}.safetensors`), '--out', p('x.onnx')]
        : ['validate', '--weights', p(`ckpt-${name}.safetensors`), '--data', p('data')];
    const c = cli(dir, checkpointArgs);
    assert.equal(c.status, 2, `${checkpointArgs[0]} ${name}: ${c.stderr}`);
    clearError(c.stderr, checkpointMessage, `${checkpointArgs[0]} ${name}`);
    assert.equal(c.stdout.length, 0);
    assert.ok(!existsSync(p('x.onnx')), 'no model written');
    const model = encodeModel(lowerInference(spec, w, { meanChannels: [100, 110, 120] }));
    writeFileSync(p(`${name}.onnx`), model);
    const modelMessage = new RegExp(
      `initializer "${at.split('[')[0].replace('.', '\\.')}" holds ${value} at index ${at.match(/\d+(?=\])/)![0]}: the model's weights are damaged`,
    );
    // The model parser refuses both; predict gets the NaN one spawned, serve the infinite one.
    await refusedInProcess(() => decodeModel(model, p(`${name}.onnx`)), modelMessage, `decodeModel ${name}`);
    const modelArgs =
      name === 'nan' ? ['predict', '--model', p(`${name}.onnx`), p('photo.jpg')] : ['serve', '--model', `m=${p(`${name}.onnx`)}`, '--port', '0'];
    const r = cli(dir, modelArgs);
    assert.equal(r.status, 2, `${modelArgs[0]} ${name}: ${r.stderr}`);
    clearError(r.stderr, modelMessage, `${modelArgs[0]} ${name}`);
    assert.equal(r.stdout.length, 0);
  }
});

test('a model whose finite weights overflow on an image: predict refuses that image and prints no NaN as a probability', () => {
  const huge = initParameters(spec, 1);
  for (const name of Object.keys(huge)) if (name.endsWith('.weight')) huge[name].fill(3e38);
  writeFileSync(p('overflow.onnx'), encodeModel(lowerInference(spec, huge, { meanChannels: [100, 110, 120], imageSize: 40 })));
  const r = cli(dir, ['predict', '--model', p('overflow.onnx'), p('photo.jpg')]);
  assert.equal(r.status, 2, r.stderr);
  clearError(r.stderr, /skipped .*photo\.jpg: the model's output is NaN for this image \(its weights overflow\)/);
  clearError(r.stderr, /the model gave no usable answer for 1 of 1 images/);
  assert.equal(r.stdout.length, 0, `nothing printed: ${r.stdout}`);
});

/** A safetensors file holding `w` as written by an older or foreign writer (no value checks). */
function damagedSafetensors(w: Record<string, Float32Array>): Buffer {
  const shapes = new Map(parameterList(spec).map((x) => [x.name, x.shape]));
  const names = Object.keys(w);
  const header: Record<string, unknown> = { __metadata__: { format: 'alexnet-stream-checkpoint/1', content: 'weights', spec: JSON.stringify(spec) } };
  let offset = 0;
  for (const name of names) {
    header[name] = { dtype: 'F32', shape: shapes.get(name), data_offsets: [offset, offset + w[name].byteLength] };
    offset += w[name].byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, Buffer.from(json), ...names.map((n) => Buffer.from(w[n].buffer, w[n].byteOffset, w[n].byteLength))]);
}

test('an index.json that claims a batch size or image side past the format, or lists a shard twice, is refused by read and train', async () => {
  const { cpSync, readFileSync: read } = await import('node:fs');
  const lie = (name: string, change: (train: Record<string, unknown>) => void): string => {
    const copy = p(`index-${name}`);
    cpSync(p('data'), copy, { recursive: true });
    const index = JSON.parse(read(join(copy, 'index.json'), 'utf8')) as { prefixes: { train: Record<string, unknown> } };
    change(index.prefixes.train);
    writeFileSync(join(copy, 'index.json'), JSON.stringify(index));
    return copy;
  };
  const shards = (t: Record<string, unknown>) => t.shards as Record<string, unknown>[];
  const cases: [string, (t: Record<string, unknown>) => void, RegExp][] = [
    ['batch', (t) => (t.batchSize = 1e9), /prefix "train": expected an integer from 1 to 1048576 for batchSize but received 1000000000; the index is damaged/],
    ['side', (t) => (t.imageShape = [3, 100000, 100000]), /prefix "train": expected an image side from 1 to 16384 for imageShape\[1\] but received 100000/],
    ['twice', (t) => (shards(t)[1] = { ...shards(t)[0] }), /prefix "train": shard file "train-00000\.msgpack" is listed twice/],
    // what held: counts that do not add up, a path in a shard name
    ['count', (t) => (t.images = 1e12), /shards hold \d+ images in \d+ batches but the entry says 1000000000000/],
    ['path', (t) => (shards(t)[0].file = '../../etc/passwd'), /expected a plain file name .* for shards\[0\]\.file but received "\.\.\/\.\.\/etc\/passwd"/],
  ];
  writeFileSync(p('index-train.yaml'), `${['batch_size: 8', 'n_epochs: 1', `spec_file: ${p('tiny.json')}`].join('\n')}\n`);
  writeFileSync(p('tiny.json'), JSON.stringify(spec));
  for (const [i, [name, change, pattern]] of cases.entries()) {
    const data = lie(name, change);
    // The index reader (read, train, validate) refuses every case; read and train, spawned, take turns.
    await refusedInProcess(() => readShardIndex(data), pattern, `readShardIndex ${name}`);
    if (i % 2 === 0) {
      const read = sh(dir, `${A} read ${data} > /dev/null`);
      assert.deepEqual(read.status, [2], `${name}: ${read.stderr}`);
      clearError(read.stderr, pattern, `read ${name}`);
    } else {
      const trained = cli(dir, ['train', '--config', p('index-train.yaml'), '--set', `data_dir=${data}`, '--set', `weights_dir=${p(`index-w-${name}`)}`]);
      assert.equal(trained.status, 2, `${name}: ${trained.stderr}`);
      clearError(trained.stderr, pattern, `train ${name}`);
      assert.ok(!existsSync(p(`index-w-${name}`)), 'no weights folder made');
    }
  }
});
