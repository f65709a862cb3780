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
import { isConfigKey, parseConfigText, readConfigFile, resolveConfig, runTraining } from '@alexnet-stream/trainer-multigpu';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';

const CLI = resolve(__dirname, '../../../apps/cli/bin/alexnet-stream.js');
const root = mkdtempSync(join(tmpdir(), 'hostile-config-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));
const MEMBER_NAMES = ['toString', 'constructor', '__proto__', 'hasOwnProperty', 'valueOf', 'isPrototypeOf'];

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ALEXNET_STREAM_PROGRESS: '0' } });
}

/**
 * The library refuses it as bad input (exit code 2 in the CLI) with `message`. Cases go through
 * the library in-process; each kind of case still gets spawned CLI runs for the exit code and the
 * one clear line (a spawned `train` costs ~0.5 CPU-s even when it refuses at once).
 */
async function assertLibraryRefusal(run: () => unknown, message: RegExp, what: string): Promise<void> {
  await assert.rejects(
    async () => run(),
    (err: Error & { exitCode?: number }) => {
      assert.equal(err.exitCode, 2, `${what}: ${err.message}`);
      assert.match(err.message, message, what);
      return true;
    },
  );
}

function assertCleanRefusal(r: ReturnType<typeof cli>, message: RegExp, what: string): void {
  assert.equal(r.status, 2, `${what}: ${r.stderr}`);
  assert.match(r.stderr, message, what);
  assert.doesNotMatch(r.stderr, /Cannot read properties|at .*\.js:\d+|TypeError/, `${what}: no internal error`);
}

test('config keys named after Object members are unknown keys, in the file and in --set', async () => {
  for (const [i, key] of MEMBER_NAMES.entries()) {
    const file = join(root, `${key}.yaml`);
    writeFileSync(file, `${key}: 1\n`);
    // The library: the config reader refuses the key, and --set's key check (isConfigKey) does not know it.
    await assertLibraryRefusal(() => readConfigFile(file), new RegExp(`${key}\\.yaml: unknown key "${key}"`), `readConfigFile ${key}`);
    assert.equal(isConfigKey(key), false, `isConfigKey(${key})`);
    // The CLI, spawned: the file and --set take turns.
    if (i % 2 === 0) assertCleanRefusal(cli(['train', '--config', file]), new RegExp(`${key}\\.yaml: unknown key "${key}"`), `config ${key}`);
    else assertCleanRefusal(cli(['train', '--set', `${key}=1`]), new RegExp(`--set: unknown config key "${key}"`), `--set ${key}`);
  }
  // A nested mapping under __proto__ sets nothing (it is refused as a key), in the file and in --set.
  await assertLibraryRefusal(
    () => parseConfigText('__proto__:\n  batch_size: 3\n', 'nested.yaml'),
    /nested\.yaml: unknown key "__proto__"/,
    'nested __proto__',
  );
  assertCleanRefusal(cli(['train', '--set', '__proto__={batch_size: 3}']), /--set: unknown config key "__proto__"/, '--set nested __proto__');
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
  for (const [i, key] of ['constructor', '__proto__', 'toString'].entries()) {
    const file = join(root, `prefix-${key}.yaml`);
    writeFileSync(file, `data_dir: ${data}\nspec_file: ${spec}\ntrain_prefix: "${key}"\n`);
    const message = new RegExp(`index\\.json: no complete shard set with prefix "${key}" \\(it has "train", "val"`);
    await assertLibraryRefusal(async () => runTraining(resolveConfig(await readConfigFile(file))), message, `runTraining train_prefix ${key}`);
    // The CLI, spawned: train and validate take turns.
    if (i % 2 === 0) assertCleanRefusal(cli(['train', '--config', file]), message, `train_prefix ${key}`);
    else
      assertCleanRefusal(
        cli(['validate', '--weights', ckpt, '--data', data, '--prefix', key]),
        /no complete shard set with prefix/,
        `validate --prefix ${key}`,
      );
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
  await runTraining(resolveConfig(await readConfigFile(config)));
  const statePath = join(weightsDir, 'epoch-0001', 'state.json');
  const state = JSON.parse(readFileSync(statePath, 'utf8')) as Record<string, unknown>;
  const edits: [string, Record<string, unknown>, RegExp][] = [
    ['negative iteration', { iteration: -3 }, /state\.json: expected a count \(an integer >= 0\) for iteration but received -3/],
    ['no lr', { lr: undefined }, /state\.json: lr is missing \(expected a learning rate > 0 and <= 1000000\)/],
    ['bad val_record', { val_record: [{ epoch: 'one' }] }, /state\.json: expected an integer >= 0 for val_record\[0\]\.epoch but received "one"/],
    ['member names', { val_record: JSON.parse('[{"__proto__": {"epoch": 1}, "constructor": 2}]') }, /state\.json: val_record\[0\]\.epoch is missing/],
    ['dropout rng', { rng: { dropout: { s: [1] } } }, /state\.json: rng\.dropout is not a dropout RNG state/],
  ];
  for (const [i, [what, change, message]] of edits.entries()) {
    writeFileSync(statePath, JSON.stringify({ ...state, ...change }));
    const resumed = resolveConfig(await readConfigFile(config), { n_epochs: 2 });
    await assertLibraryRefusal(() => runTraining(resumed, { resume: true }), message, what);
    // Two of them through the CLI, spawned.
    if (i % 3 === 0) assertCleanRefusal(cli(['train', '--config', config, '--resume', '--epochs', '2']), message, what);
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
