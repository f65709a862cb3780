import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '@alexnet-stream/core';
import { CONFIG_KEYS, defaultConfig, editDistance, parseConfigText, resolveConfig, suggestKey } from './config';

test('a seed-style config.yaml parses; defaults fill the rest; mean_file defaults to <data_dir>/mean.npy', () => {
  const file = parseConfigText(
    ['resume_train: False', 'n_epochs: 65', 'learning_rate: 0.01', 'lr_policy: step', 'lr_step: [20, 40, 60]', 'batch_size: 256', 'use_momentum: True', 'momentum: 0.9', 'weight_decay: 0.0005', 'data_dir: /data/imagenet'].join('\n'),
    'config.yaml',
  );
  const config = resolveConfig(file, { batch_size: 128 });
  assert.equal(config.n_epochs, 65);
  assert.deepEqual(config.lr_step, [20, 40, 60]);
  assert.equal(config.batch_size, 128, 'flags override the file');
  assert.equal(config.mean_file, '/data/imagenet/mean.npy');
  assert.equal(config.print_freq, CONFIG_KEYS.print_freq.default);
  assert.equal(config.engine, 'onnxruntime');
  assert.equal(config.resume_train, false, "YAML 1.1's False reads as false (the seed's spelling)");
});

test('an unknown key is refused with the nearest known key suggested', () => {
  assert.throws(() => parseConfigText('lerning_rate: 0.1\n', 'c.yaml'), (err: unknown) => {
    assert.ok(err instanceof UsageError);
    assert.match(err.message, /c\.yaml: unknown key "lerning_rate"; did you mean "learning_rate"\?/);
    return true;
  });
  assert.equal(suggestKey('snapshot_frequency'), 'snapshot_freq');
  assert.equal(suggestKey('batchsize'), 'batch_size');
  assert.equal(suggestKey('zzzzzzzzzzzz'), undefined, 'nothing plausible: no suggestion');
  assert.throws(() => parseConfigText('zzzzzzzzzzzz: 1\n', 'c.yaml'), /unknown key "zzzzzzzzzzzz" \(known keys: resume_train/);
});

test('wrong types and ranges name the key, what was expected and what was given', () => {
  assert.throws(() => parseConfigText('batch_size: big\n', 'c.yaml'), /c\.yaml: expected an integer >= 1 for batch_size but received "big"/);
  assert.throws(() => parseConfigText('momentum: 1.5\n', 'c.yaml'), /expected a number >= 0 and <= 1 for momentum but received 1\.5/);
  assert.throws(() => parseConfigText('lr_policy: cosine\n', 'c.yaml'), /expected one of step, auto for lr_policy but received "cosine"/);
  assert.throws(() => parseConfigText('lr_step: [10, x]\n', 'c.yaml'), /expected a list of integers >= 1 for lr_step but received \[10, "x"\]/);
  assert.throws(() => parseConfigText('learning_rate: 0\n', 'c.yaml'), /expected a number > 0 for learning_rate/);
  assert.throws(() => parseConfigText('sync_momentum: 1\n', 'c.yaml'), /c\.yaml: expected true or false for sync_momentum but received 1/);
  assert.equal(resolveConfig(parseConfigText('sync_momentum: true\n', 'c.yaml')).sync_momentum, true);
  assert.equal(defaultConfig().sync_momentum, false, 'velocities stay local by default, as in the seed');
  assert.throws(() => resolveConfig({ use_momentum: false, sync_momentum: true }), /sync_momentum: true needs use_momentum: true/);
  assert.throws(() => parseConfigText('- a\n- b\n', 'c.yaml'), /expected a mapping of config keys/);
  assert.throws(() => parseConfigText('a: [\n', 'c.yaml'), /c\.yaml: not valid YAML/);
  assert.throws(() => resolveConfig({ use_momentum: false, use_nesterov_momentum: true }), /use_nesterov_momentum: true needs use_momentum: true/);
});

test('normalisation: a scalar lr_step becomes a sorted list, devices may be comma-separated; an empty file is all defaults', () => {
  const c = resolveConfig(parseConfigText('lr_step: 7\ndevices: cpu, cuda:0\n', 'c.yaml'));
  assert.deepEqual(c.lr_step, [7]);
  assert.deepEqual(c.devices, ['cpu', 'cuda:0']);
  assert.deepEqual(resolveConfig(parseConfigText('', 'empty.yaml')), defaultConfig());
});

test('editDistance is Levenshtein', () => {
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(editDistance('same', 'same'), 0);
});
