import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { check, InputError, type UsageError } from '@alexnet-stream/core';
import { flagNamer } from './cli-support';
import { buildProgram } from './main';

const CLI = join(__dirname, '..', 'bin', 'alexnet-stream.js');

test('flagNamer names a library parameter by the option with that attribute, the command map first, else as it is', () => {
  const batch = buildProgram('batch').commands.find((c) => c.name() === 'batch')!;
  const name = flagNamer(batch, { batchSize: '--size', dir: '--out-dir' });
  assert.equal(name('batchesPerShard'), '--batches-per-shard'); // the option's attribute
  assert.equal(name('fsync'), '--no-fsync');
  assert.equal(name('batchSize'), '--size'); // the map: the flag's name differs from the parameter's
  assert.equal(name('dir'), '--out-dir');
  assert.equal(name('data_dir'), 'data_dir'); // no such option: as it is
  const err = (() => {
    try {
      check.integer('batchesPerShard', 0, { min: 1 });
    } catch (e) {
      return e as UsageError;
    }
  })()!;
  assert.equal(err.renamed(name).message, 'Expected an integer >= 1 for --batches-per-shard but received 0');
  const advice = new InputError((n) => `use another ${n('prefix')} or ${n('dir')}`);
  assert.equal(advice.renamed(name).message, 'use another --prefix or --out-dir');
});

test('a library refusing an option is reported with the flag, once, exit 2', () => {
  // The range is the library's (BatchStage): the CLI only turns "0" into 0.
  const r = spawnSync(process.execPath, [CLI, 'batch', '--size', '0'], { input: '', encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr, 'alexnet-stream batch: Expected an integer between 1 and 1048576 for --size but received 0\n');
  // Text that is not a number is the CLI's to refuse, before the library sees anything.
  const text = spawnSync(process.execPath, [CLI, 'batch', '--size', 'many'], { input: '', encoding: 'utf8' });
  assert.equal(text.status, 2);
  assert.match(text.stderr, /Expected an integer for --size but received "many"/);
});
