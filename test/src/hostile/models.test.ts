/**
 * Hostile model files (issue 11, items 12 and 16): an exported model whose metadata was edited,
 * checkpoints whose state.json or safetensors metadata lie. Every field that sizes a buffer,
 * names a class or describes the graph is checked on load: a clear error naming the file and
 * the field, exit 2, nothing printed on stdout — never "undefined 99.99%", "NaN%" or an
 * "Invalid typed array length".
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { initParameters, saveCheckpoint, STATE_FILE, WEIGHTS_FILE } from '@alexnet-stream/model-alexnet';
import { decodeModel, encodeModel, lowerInference, META } from '@alexnet-stream/onnx-export';
import { tinySpec } from '@alexnet-stream/trainer-multigpu/testing';

const CLI = resolve(__dirname, '../../../apps/cli/bin/alexnet-stream.js');
const root = mkdtempSync(join(tmpdir(), 'hostile-models-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

const spec = tinySpec(4, 35);
const weights = initParameters(spec, 1);
const good = encodeModel(lowerInference(spec, weights, { classNames: ['a', 'b', 'c', 'd'], meanChannels: [100, 110, 120], imageSize: 40 }));

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ALEXNET_STREAM_PROGRESS: '0' } });
}

/** The good model with some metadata fields replaced (undefined: removed). */
function withMetadata(name: string, changes: Record<string, string | undefined>, editGraph?: (m: ReturnType<typeof decodeModel>) => void): string {
  const model = decodeModel(good);
  const props = (model.metadataProps ?? []).filter((p) => !(p.key! in changes));
  for (const [key, value] of Object.entries(changes)) if (value !== undefined) props.push({ key, value });
  model.metadataProps = props;
  editGraph?.(model);
  const path = join(root, `${name}.onnx`);
  writeFileSync(path, encodeModel(model));
  return path;
}

const specWith = (change: Record<string, unknown>) => JSON.stringify({ ...spec, ...change });

test('predict refuses a model whose metadata was edited, naming the file and the field (exit 2, nothing on stdout)', async () => {
  const image = join(root, 'photo.jpg');
  await sharp({ create: { width: 60, height: 50, channels: 3, background: '#a05030' } })
    .jpeg()
    .toFile(image);
  const ok = cli(['predict', '--model', withMetadata('good', {}), image]);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /photo\.jpg: [abcd] \d+\.\d\d%/);

  const fc8 = (outFeatures: number) => spec.layers.map((l) => (l.kind === 'fc' && l.name === 'fc8' ? { ...l, outFeatures } : l));
  const cases: [string, Record<string, string | undefined>, RegExp][] = [
    ['names-short', { [META.classNames]: '["a","b"]' }, /metadata alexnet_stream\.class_names: 2 names for a model of 4 classes/],
    ['names-numbers', { [META.classNames]: '[1,2,3,4]' }, /metadata alexnet_stream\.class_names: not a list of strings/],
    ['names-json', { [META.classNames]: '["a",' }, /metadata alexnet_stream\.class_names is not valid JSON/],
    ['mean-strings', { [META.meanChannels]: '["x","y","z"]' }, /metadata alexnet_stream\.mean_channels: not a list of finite numbers/],
    ['mean-short', { [META.meanChannels]: '[1,2]' }, /metadata alexnet_stream\.mean_channels: 2 means for a model of 3 input channels/],
    ['size-huge', { [META.imageSize]: '999999999' }, /metadata alexnet_stream\.image_size: "999999999", expected an integer from the input size 35 to 2048/],
    ['size-text', { [META.imageSize]: '4e1' }, /metadata alexnet_stream\.image_size: "4e1"/],
    ['input-kind', { [META.input]: 'pixels' }, /metadata alexnet_stream\.input: "pixels", expected "data" or "image"/],
    [
      'spec-classes',
      { [META.spec]: specWith({ numClasses: 6 }) },
      /metadata alexnet_stream\.model_spec: numClasses is 6 but the last layer \(fc8\) gives \[4\]/,
    ],
    [
      'spec-graph',
      { [META.spec]: specWith({ numClasses: 6, layers: fc8(6) }), [META.classNames]: undefined },
      /the graph's output "logits" does not match its metadata \(6 classes\): it is \[N, 4\]/,
    ],
    [
      'spec-input',
      { [META.spec]: specWith({ inputSize: 1_000_000_000 }) },
      /metadata alexnet_stream\.model_spec: spec\.inputSize is 1000000000, expected an integer from 1 to 1024/,
    ],
    ['spec-layer', { [META.spec]: specWith({ layers: [null] }) }, /metadata alexnet_stream\.model_spec: layers\[0\] is null, expected a layer object/],
    [
      'spec-kind',
      { [META.spec]: specWith({ layers: spec.layers.map((l, i) => (i === 1 ? { ...l, kind: 'gelu' } : l)) }) },
      /layers\[1\] \(relu1\)\.kind is "gelu", expected conv, relu/,
    ],
    ['spec-json', { [META.spec]: '{"specVersion": 1,' }, /metadata alexnet_stream\.model_spec is not valid JSON/],
    ['spec-missing', { [META.spec]: undefined }, /no alexnet-stream model spec in the metadata/],
    ['input-size', { [META.inputSize]: '99' }, /metadata alexnet_stream\.input_size: "99", but the spec's input size is 35/],
  ];
  for (const [name, changes, message] of cases) {
    const model = withMetadata(name, changes);
    const r = cli(['predict', '--model', model, image]);
    assert.equal(r.status, 2, `${name}: ${r.stderr}`);
    assert.ok(r.stderr.includes(`${name}.onnx`), `${name}: the file is named: ${r.stderr}`);
    assert.match(r.stderr, message, name);
    assert.equal(r.stdout, '', `${name}: nothing predicted`);
    assert.doesNotMatch(r.stderr, /at .*\.js:\d+|undefined|NaN/, `${name}: no stack trace, no undefined`);
  }
  // The graph edited instead of the metadata: its input no longer matches.
  const graphEdited = withMetadata('graph-input', {}, (m) => {
    m.graph!.input![0].type!.tensorType!.shape!.dim![2] = { dimValue: 99 };
  });
  const r = cli(['predict', '--model', graphEdited, image]);
  assert.equal(r.status, 2, r.stderr);
  assert.match(
    r.stderr,
    /graph-input\.onnx: the graph's input does not match its metadata: metadata says "data" \[N, 3, 35, 35\], the graph has "data" \[N, 3, 99, 35\]/,
  );
});

test('checkpoints whose state.json or safetensors metadata lie are refused on load (export: exit 2, naming the file)', () => {
  const dir = saveCheckpoint(join(root, 'ckpt', 'epoch-0001'), { spec, weights, state: { classNames: ['a', 'b', 'c', 'd'] } });
  const state = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as Record<string, unknown>;
  const exportIt = () => cli(['export', '--weights', dir, '--out', join(root, 'exported.onnx')]);
  assert.equal(exportIt().status, 0);
  const edits: [string, Record<string, unknown>, RegExp][] = [
    ['class count', { spec: { ...spec, numClasses: 7 } }, /state\.json: its model spec is not usable: numClasses is 7 but the last layer \(fc8\) gives \[4\]/],
    ['input size', { spec: { ...spec, inputSize: 1e9 } }, /state\.json: its model spec is not usable: spec\.inputSize is 1000000000/],
    [
      'layer',
      { spec: { ...spec, layers: [...spec.layers.slice(0, -1), { kind: 'fc', name: 'fc8', outFeatures: 4 }] } },
      /state\.json: its model spec is not usable: layers\[11\] \(fc8\)\.weightInit is undefined/,
    ],
    ['class names', { classNames: [{ name: 'a' }, 'b', 'c', 'd'] }, /state\.json classNames is not a list of 4 strings/],
  ];
  for (const [what, change, message] of edits) {
    writeFileSync(join(dir, STATE_FILE), JSON.stringify({ ...state, ...change }));
    const r = exportIt();
    assert.equal(r.status, 2, `${what}: ${r.stderr}`);
    assert.match(r.stderr, message, what);
    assert.doesNotMatch(r.stderr, /at .*\.js:\d+|Cannot read properties/, what);
  }
  writeFileSync(join(dir, STATE_FILE), JSON.stringify(state));
  // A tensor named __proto__ is an unexpected tensor, not the object's prototype.
  const lying = join(root, 'proto.safetensors');
  writeFileSync(lying, safetensorsWithExtraTensor(readFileSync(join(dir, WEIGHTS_FILE)), '__proto__'));
  const r = cli(['export', '--weights', lying, '--out', join(root, 'proto.onnx')]);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /proto\.safetensors: weights do not match the model .*unexpected __proto__ \[1\]/);
});

/** A copy of a safetensors file with one more F32 [1] tensor named `name` (written by hand: the header is JSON). */
function safetensorsWithExtraTensor(file: Buffer, name: string): Buffer {
  const headerLength = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { data_offsets?: [number, number] }>;
  const data = file.subarray(8 + headerLength);
  const text = `${JSON.stringify(header).slice(0, -1)},${JSON.stringify(name)}:{"dtype":"F32","shape":[1],"data_offsets":[${data.length},${data.length + 4}]}}`;
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  return Buffer.concat([head, Buffer.from(text), data, Buffer.alloc(4)]);
}
