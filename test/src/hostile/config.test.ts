/**
 * Hostile configuration and read-back keys (issue 11, item 16, and "what held": config validation
 * and YAML bombs). Keys that are names of Object's members (`toString`, `constructor`,
 * `__proto__`, …) in a config file, `--set`, a shard prefix, index.json or state.json are looked
 * up as own keys only: an unknown key, a missing set or a field that is wrong, each a clear
 * error with exit 2, never "Cannot read properties of undefined".
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { initParameters, saveCheckpoint } from '@alexnet-stream/model-alexnet';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';

const CLI = resolve(__dirname, '../../../apps/cli/bin/alexnet-stream.js');
const root = mkdtempSync(join(tmpdir(), 'hostile-config-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));
const MEMBER_NAMES = ['toString', 'constructor', '__proto__', 'hasOwnProperty', 'valueOf', 'isPrototypeOf'];

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ALEXNET_STREAM_PROGRESS: '0' } });
}

function assertCleanRefusal(r: ReturnType<typeof cli>, message: RegExp, what: string): void {
  assert.equal(r.status, 2, `${what}: ${r.stderr}`);
  assert.match(r.stderr, message, what);
  assert.doesNotMatch(r.stderr, /Cannot read properties|at .*\.js:\d+|TypeError/, `${what}: no internal error`);
}

test('config keys named after Object members are unknown keys, in the file and in --set', () => {
  for (const key of MEMBER_NAMES) {
    const file = join(root, `${key}.yaml`);
    writeFileSync(file, `${key}: 1\n`);
    assertCleanRefusal(cli(['train', '--config', file]), new RegExp(`${key}\\.yaml: unknown key "${key}"`), `config ${key}`);
    assertCleanRefusal(cli(['train', '--set', `${key}=1`]), new RegExp(`--set: unknown config key "${key}"`), `--set ${key}`);
  }
  // A nested mapping under __proto__ sets nothing (it is refused as a key).
  const nested = join(root, 'nested.yaml');
  writeFileSync(nested, '__proto__:\n  batch_size: 3\n');
  assertCleanRefusal(cli(['train', '--config', nested]), /unknown key "__proto__"/, 'nested __proto__');
});

test('a YAML alias bomb is refused at once; values of the wrong type name the key', () => {
  const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 9; i++)
    lines.push(
      `${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10)
        .fill(`*${String.fromCharCode(96 + i)}`)
        .join(', ')}]`,
    );
  const bomb = join(root, 'bomb.yaml');
  writeFileSync(bomb, `${lines.join('\n')}\n`);
  const started = Date.now();
  assertCleanRefusal(cli(['train', '--config', bomb]), /bomb\.yaml: not valid YAML \(Excessive alias count/, 'alias bomb');
  assert.ok(Date.now() - started < 20_000, 'refused without expanding it');
  const typed = join(root, 'typed.yaml');
  writeFileSync(typed, 'learning_rate: .inf\n');
  assertCleanRefusal(cli(['train', '--config', typed]), /expected a number > 0 and <= 1000000 for learning_rate but received Infinity/, 'infinite lr');
});

test('shard prefixes, index.json prefixes and state.json fields named after Object members', async () => {
  const data = join(root, 'data');
  await writeFixtureDataDir({ dir: data, classes: 4, trainPerClass: 4, valPerClass: 2, size: 40, batchSize: 8 });
  const spec = writeSpecFile(join(root, 'tiny.json'), tinySpec(4, 35));
  const ckpt = saveCheckpoint(join(root, 'ckpt', 'epoch-0001'), { spec: tinySpec(4, 35), weights: initParameters(tinySpec(4, 35), 1), state: {} });
  for (const key of ['constructor', '__proto__', 'toString']) {
    const file = join(root, `prefix-${key}.yaml`);
    writeFileSync(file, `data_dir: ${data}\nspec_file: ${spec}\ntrain_prefix: "${key}"\n`);
    assertCleanRefusal(
      cli(['train', '--config', file]),
      new RegExp(`index\\.json: no complete shard set with prefix "${key}" \\(it has "train", "val"`),
      `train_prefix ${key}`,
    );
    assertCleanRefusal(cli(['validate', '--weights', ckpt, '--data', data, '--prefix', key]), /no complete shard set with prefix/, `validate --prefix ${key}`);
  }
  // An index.json that lists a set named __proto__: an ordinary set, listed by name.
  const index = JSON.parse(readFileSync(join(data, 'index.json'), 'utf8')) as { prefixes: Record<string, unknown> };
  const odd = join(root, 'odd');
  await writeFixtureDataDir({ dir: odd, classes: 4, trainPerClass: 4, valPerClass: 2, size: 40, batchSize: 8 });
  writeFileSync(join(odd, 'index.json'), JSON.stringify({ ...index, prefixes: JSON.parse(`{"__proto__": ${JSON.stringify(index.prefixes.val)}}`) }));
  const oddConfig = join(root, 'odd.yaml');
  writeFileSync(oddConfig, `data_dir: ${odd}\nspec_file: ${spec}\n`);
  assertCleanRefusal(cli(['train', '--config', oddConfig]), /no complete shard set with prefix "train" \(it has "__proto__"/, 'index.json __proto__ prefix');

  // state.json read back on --resume: a wrong field is named, not a crash.
  const weightsDir = join(root, 'weights');
  const config = join(root, 'resume.yaml');
  writeFileSync(config, `data_dir: ${data}\nspec_file: ${spec}\nweights_dir: ${weightsDir}\nbatch_size: 8\nn_epochs: 1\nintra_op_threads: 1\n`);
  assert.equal(cli(['train', '--config', config]).status, 0);
  const statePath = join(weightsDir, 'epoch-0001', 'state.json');
  const state = JSON.parse(readFileSync(statePath, 'utf8')) as Record<string, unknown>;
  const edits: [string, Record<string, unknown>, RegExp][] = [
    ['negative iteration', { iteration: -3 }, /state\.json: expected a count \(an integer >= 0\) for iteration but received -3/],
    ['no lr', { lr: undefined }, /state\.json: lr is missing \(expected a learning rate > 0 and <= 1000000\)/],
    ['bad val_record', { val_record: [{ epoch: 'one' }] }, /state\.json: expected an integer >= 0 for val_record\[0\]\.epoch but received "one"/],
    ['member names', { val_record: JSON.parse('[{"__proto__": {"epoch": 1}, "constructor": 2}]') }, /state\.json: val_record\[0\]\.epoch is missing/],
    ['dropout rng', { rng: { dropout: { s: [1] } } }, /state\.json: rng\.dropout is not a dropout RNG state/],
  ];
  for (const [what, change, message] of edits) {
    writeFileSync(statePath, JSON.stringify({ ...state, ...change }));
    assertCleanRefusal(cli(['train', '--config', config, '--resume', '--epochs', '2']), message, what);
  }
});

test('a NUL in a path key (YAML "\\0", --set) is refused naming the key; an unknown YAML tag is one clear line, with no process warning', () => {
  const file = join(root, 'nul.yaml');
  writeFileSync(file, 'weights_dir: "/tmp/w\\0x"\n');
  const r = cli(['train', '--config', file]);
  assertCleanRefusal(r, /nul\.yaml: expected a string without NUL characters for weights_dir but received "\/tmp\/w\\u0000x"/, 'NUL in weights_dir');
  assert.doesNotMatch(r.stderr, /ERR_INVALID_ARG_VALUE/);
  assertCleanRefusal(
    cli(['train', '--set', 'data_dir="a\\0b"']),
    /--set data_dir: expected a string without NUL characters \(or null\) for data_dir/,
    '--set NUL',
  );
  const tagged = join(root, 'tagged.yaml');
  writeFileSync(tagged, "learning_rate: !!js/function 'function(){}'\n");
  const t = cli(['train', '--config', tagged]);
  assertCleanRefusal(t, /tagged\.yaml: expected a number > 0 and <= 1000000 for learning_rate but received "function\(\)\{\}"/, 'tag');
  assert.doesNotMatch(t.stderr, /YAMLWarning|TAG_RESOLVE_FAILED/);
  assert.equal(t.stderr.trim().split('\n').length, 1, t.stderr);
});
