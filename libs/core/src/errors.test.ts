import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AlexnetStreamError, describeError, InputError, InvalidParameterError, OutputError, UsageError } from './errors';
import { check } from './check';

test('errors carry a stable code, an exit code and their cause', () => {
  const cause = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  const out = new OutputError('model.onnx: cannot write: no space left on device (ENOSPC)', { cause });
  assert.equal(out.code, 'ERR_OUTPUT');
  assert.equal(out.errno, 'ENOSPC');
  assert.equal(out.exitCode, 2);
  assert.equal(out.cause, cause);
  assert.equal(out.name, 'OutputError');
  assert.equal(new InputError('x', { code: 'ERR_SHARD_CHECKSUM' }).code, 'ERR_SHARD_CHECKSUM');
  assert.equal(new UsageError('x').code, 'ERR_USAGE');
  assert.equal(new AlexnetStreamError('x').exitCode, 1);
});

test('a message that names parameters is re-rendered with the names a caller uses (the CLI: flags)', () => {
  const err = new UsageError((name) => `${name('center')} cannot be combined with ${name('mirror')}`, { code: 'ERR_CONFLICT' });
  assert.equal(err.message, 'center cannot be combined with mirror');
  assert.deepEqual(err.parameters, ['center', 'mirror']);
  const flagged = err.renamed((p) => `--${p}`);
  assert.equal(flagged.message, '--center cannot be combined with --mirror');
  assert.ok(flagged instanceof UsageError);
  assert.equal(flagged.code, 'ERR_CONFLICT');
  assert.equal(flagged.exitCode, 2);
  assert.equal(err.message, 'center cannot be combined with mirror', 'the original is unchanged');
  const plain = new InputError('no parameters here');
  assert.equal(
    plain.renamed((p) => `--${p}`),
    plain,
  );
});

test('check.* return the value or throw an InvalidParameterError naming parameter, expectation and value', () => {
  assert.equal(check.integer('crop', 227, { min: 1 }), 227);
  const err = (() => {
    try {
      check.integer('batchSize', 0, { min: 1 });
    } catch (e) {
      return e as InvalidParameterError;
    }
    return undefined;
  })();
  assert.ok(err instanceof InvalidParameterError);
  assert.equal(err.message, 'Expected an integer >= 1 for batchSize but received 0');
  assert.equal(err.code, 'ERR_INVALID_PARAMETER');
  assert.deepEqual([err.parameter, err.expected, err.received], ['batchSize', 'an integer >= 1', 0]);
  assert.equal(err.renamed((p) => (p === 'batchSize' ? '--size' : p)).message, 'Expected an integer >= 1 for --size but received 0');
  assert.throws(() => check.integer('size', 1.5, { min: 1, max: 16384 }), { message: 'Expected an integer between 1 and 16384 for size but received 1.5' });
  assert.throws(() => check.integer('n', '3'), { message: 'Expected an integer for n but received "3"' });
  assert.throws(() => check.number('dropout', 1, { min: 0, max: 1, maxExclusive: true }), {
    message: 'Expected a number in [0, 1) for dropout but received 1',
  });
  assert.throws(() => check.number('lr', NaN, { min: 0, minExclusive: true }), { message: 'Expected a number > 0 for lr but received NaN' });
  assert.throws(() => check.oneOf('resize', 'fit', ['squash', 'center-crop']), { message: 'Expected squash or center-crop for resize but received "fit"' });
  assert.throws(() => check.oneOf('engine', 'x', ['a', 'b', 'c']), { message: 'Expected one of a, b, c for engine but received "x"' });
  assert.throws(() => check.shard('shard', { index: 2, count: 2 }), { message: 'Expected i/N with 0 <= i < N (e.g. 0/4) for shard but received "2/2"' });
  assert.throws(() => check.string('prefix', '.x', { pattern: /^[a-z]+$/, expected: 'letters' }), { message: 'Expected letters for prefix but received ".x"' });
});

test('describeError tells the causes a message does not already tell, but not system errors', () => {
  const inner = new Error('conv1: output shape [0] is empty');
  assert.equal(
    describeError(new UsageError('the model does not fit the config', { cause: inner })),
    'the model does not fit the config: conv1: output shape [0] is empty',
  );
  const told = new InputError(`x: ${inner.message}`, { cause: inner });
  assert.equal(describeError(told), told.message);
  const enoent = Object.assign(new Error("ENOENT: no such file or directory, open 'x'"), { code: 'ENOENT' });
  assert.equal(describeError(new InputError('x: no such file', { cause: enoent })), 'x: no such file');
  assert.equal(describeError('text'), 'text');
});
