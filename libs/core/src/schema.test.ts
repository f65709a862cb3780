import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { InputError, UsageError } from './errors';
import { describeReceived, editDistance, lazySchema, loadZod, nearestKey, parseWithSchema, pathText, statement, statementIssue } from './schema';

const z = loadZod();
const COUNT = 'an integer >= 0';
const count = z.int({ error: COUNT }).min(0, { error: COUNT });
const shard = z.looseObject({ file: z.string({ error: 'a file name' }), bytes: count });
const entry = z.looseObject({ batchSize: count, shards: z.array(shard, { error: 'a list of shards' }) }).superRefine((e, ctx) => {
  if (e.shards.length > 2) ctx.addIssue(statementIssue(`${e.shards.length} shards, more than the 2 allowed`, ['shards']));
});
const asFile = { where: 'index.json prefix "train"', errorClass: InputError, code: 'ERR_SHARD_INDEX', hint: 'the index is damaged' };

test('a nested problem names where, the path, what was expected and what was received, in the chosen error class', () => {
  const err = (() => {
    try {
      parseWithSchema(
        entry,
        {
          batchSize: 8,
          shards: [
            { file: 'a', bytes: 1 },
            { file: 'b', bytes: -1 },
          ],
        },
        asFile,
      );
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  assert.ok(err instanceof InputError);
  assert.equal(err.code, 'ERR_SHARD_INDEX');
  assert.equal(err.exitCode, 2);
  assert.equal(err.message, 'index.json prefix "train": expected an integer >= 0 for shards[1].bytes but received -1; the index is damaged');
  assert.throws(() => parseWithSchema(entry, { shards: [] }, asFile), {
    message: 'index.json prefix "train": batchSize is missing (expected an integer >= 0); the index is damaged',
  });
  assert.throws(() => parseWithSchema(entry, 'x', { where: 'f.json', errorClass: UsageError }), {
    name: 'UsageError',
    code: 'ERR_USAGE',
    message: /^f\.json: expected .* but received "x"$/,
  });
});

test('a refinement marked as a statement is shown as it is, at its path', () => {
  const shards = Array.from({ length: 3 }, (_, i) => ({ file: `s${i}`, bytes: 1 }));
  assert.throws(() => parseWithSchema(entry, { batchSize: 1, shards }, asFile), {
    message: 'index.json prefix "train": shards: 3 shards, more than the 2 allowed; the index is damaged',
  });
});

test('a refine with statement() is shown as it is too', () => {
  const name = z.string({ error: 'a file name' }).refine((s) => !s.includes('/'), statement('a plain file name has no "/"'));
  assert.throws(() => parseWithSchema(z.object({ file: name }), { file: 'a/b' }, { where: 'w', errorClass: UsageError }), {
    message: 'w: file: a plain file name has no "/"',
  });
});

test('pathDepth 1 reports the top-level key with its whole value', () => {
  const LIST = 'a list of integers >= 1';
  const int1 = z.int({ error: LIST }).min(1, { error: LIST });
  const config = z.strictObject({ lr_step: z.union([int1.transform((v) => [v]), z.array(int1)], { error: LIST }).optional() });
  const options = { where: 'c.yaml', errorClass: UsageError, pathDepth: 1 };
  assert.throws(() => parseWithSchema(config, { lr_step: [10, 0] }, options), {
    message: 'c.yaml: expected a list of integers >= 1 for lr_step but received [10, 0]',
  });
  assert.throws(() => parseWithSchema(config, { lr_step: [10, 0] }, { ...options, pathDepth: undefined }), {
    message: 'c.yaml: expected a list of integers >= 1 for lr_step[1] but received 0',
  });
  assert.deepEqual(parseWithSchema(config, { lr_step: 7 }, options), { lr_step: [7] }, 'the schema normalises');
});

test('an unknown key of a strict object gets the nearest known key, or the list of keys; Object member names are ordinary unknown keys', () => {
  const config = z.strictObject({ learning_rate: z.number({ error: 'a number' }).optional(), batch_size: count.optional() });
  const options = { where: 'c.yaml', errorClass: UsageError };
  assert.throws(() => parseWithSchema(config, { lerning_rate: 1 }, options), { message: 'c.yaml: unknown key "lerning_rate"; did you mean "learning_rate"?' });
  assert.throws(() => parseWithSchema(config, { 'Batch-Size': 1 }, options), { message: /did you mean "batch_size"\?/ });
  assert.throws(() => parseWithSchema(config, { zzzzzzzzzzzz: 1 }, options), {
    message: 'c.yaml: unknown key "zzzzzzzzzzzz" (known keys: learning_rate, batch_size)',
  });
  // Reported before the value problems: the misspelt key is the likelier cause.
  assert.throws(() => parseWithSchema(config, { batch_size: -1, lerning_rate: 1 }, options), { message: /unknown key "lerning_rate"/ });
  for (const key of ['__proto__', 'constructor', 'toString']) {
    const parsed = JSON.parse(`{"${key}": {"batch_size": 3}}`) as unknown;
    assert.throws(() => parseWithSchema(config, parsed, options), { message: new RegExp(`^c\\.yaml: unknown key "${key}"`) }, key);
  }
  const nested = z.object({ model: z.strictObject({ dropout: z.number({ error: 'a number' }) }) });
  assert.throws(() => parseWithSchema(nested, { model: { droput: 0.5 } }, options), {
    message: 'c.yaml: unknown key "droput" in model; did you mean "dropout"?',
  });
  const suggestKey = (key: string) => (key === 'lr' ? 'learning_rate' : undefined);
  assert.throws(() => parseWithSchema(config, { lr: 1 }, { ...options, suggestKey }), { message: /unknown key "lr"; did you mean "learning_rate"\?/ });
});

test("a check the schema gave no words of its own is described from the issue, never with zod's wording", () => {
  const plain = z.object({ n: z.number().min(1), tags: z.array(z.string()).min(1), kind: z.enum(['a', 'b']), ok: z.literal(true) });
  const options = { where: 'p.json', errorClass: InputError };
  const good = { n: 1, tags: ['x'], kind: 'a', ok: true };
  assert.throws(() => parseWithSchema(plain, 5, options), { message: 'p.json: expected an object but received 5' });
  assert.throws(() => parseWithSchema(plain, { ...good, n: 0 }, options), { message: 'p.json: expected a value >= 1 for n but received 0' });
  assert.throws(() => parseWithSchema(plain, { ...good, tags: 'x' }, options), { message: 'p.json: expected a list for tags but received "x"' });
  assert.throws(() => parseWithSchema(plain, { ...good, tags: [] }, options), { message: 'p.json: expected a list of length >= 1 for tags but received []' });
  assert.throws(() => parseWithSchema(plain, { ...good, kind: 'c' }, options), { message: 'p.json: expected one of "a", "b" for kind but received "c"' });
  assert.throws(() => parseWithSchema(plain, { ...good, ok: false }, options), { message: 'p.json: expected true for ok but received false' });
});

test('pathText, describeReceived, editDistance and nearestKey', () => {
  assert.equal(pathText(['prefixes', 'train', 'shards', 3, 'file']), 'prefixes.train.shards[3].file');
  assert.equal(pathText(['prefixes', 'my set', '__proto__']), 'prefixes["my set"].__proto__');
  assert.equal(describeReceived([10, 'x', null]), '[10, "x", null]');
  assert.equal(describeReceived(1e308 * 10), 'Infinity');
  assert.ok(describeReceived(new Array(10_000).fill(1)).length <= 201, 'bounded');
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(editDistance('same', 'same'), 0);
  assert.equal(nearestKey('batchsize', ['batch_size', 'seed']), 'batch_size');
  assert.equal(nearestKey('zzzzzzzzzzzz', ['batch_size', 'seed']), undefined);
});

test('lazySchema builds once; loading the core package does not load zod', () => {
  let builds = 0;
  const schema = lazySchema((zod) => {
    builds++;
    return zod.string();
  });
  assert.equal(builds, 0);
  assert.equal(schema(), schema());
  assert.equal(builds, 1);
  const probe = spawnSync(
    process.execPath,
    [
      '-e',
      `require(${JSON.stringify(require.resolve('./index'))}); console.log(Object.keys(require.cache).filter((f) => f.includes('/node_modules/zod/')).length)`,
    ],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(probe.stdout.trim(), '0', probe.stderr);
});
