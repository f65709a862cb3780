import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '@alexnet-stream/core';
import { configKeys, defaultConfig, parseConfigText, resolveConfig, suggestKey } from './config';

test('a seed-style config.yaml parses; defaults fill the rest; mean_file defaults to <data_dir>/mean.npy', () => {
  const file = parseConfigText(
    [
      'resume_train: False',
      'n_epochs: 65',
      'learning_rate: 0.01',
      'lr_policy: step',
      'lr_step: [20, 40, 60]',
      'batch_size: 256',
      'use_momentum: True',
      'momentum: 0.9',
      'weight_decay: 0.0005',
      'data_dir: /data/imagenet',
    ].join('\n'),
    'config.yaml',
  );
  const config = resolveConfig(file, { batch_size: 128 });
  assert.equal(config.n_epochs, 65);
  assert.deepEqual(config.lr_step, [20, 40, 60]);
  assert.equal(config.batch_size, 128, 'flags override the file');
  assert.equal(config.mean_file, '/data/imagenet/mean.npy');
  assert.equal(config.print_freq, configKeys().print_freq.default);
  assert.equal(config.engine, 'onnxruntime');
  assert.equal(config.resume_train, false, "YAML 1.1's False reads as false (the seed's spelling)");
});

test('an unknown key is refused with the nearest known key suggested', () => {
  assert.throws(
    () => parseConfigText('lerning_rate: 0.1\n', 'c.yaml'),
    (err: unknown) => {
      assert.ok(err instanceof UsageError);
      assert.match(err.message, /c\.yaml: unknown key "lerning_rate"; did you mean "learning_rate"\?/);
      return true;
    },
  );
  assert.equal(suggestKey('snapshot_frequency'), 'snapshot_freq');
  assert.equal(suggestKey('batchsize'), 'batch_size');
  assert.equal(suggestKey('zzzzzzzzzzzz'), undefined, 'nothing plausible: no suggestion');
  assert.throws(() => parseConfigText('zzzzzzzzzzzz: 1\n', 'c.yaml'), /unknown key "zzzzzzzzzzzz" \(known keys: resume_train/);
});

test('wrong types and ranges name the key, what was expected and what was given', () => {
  assert.throws(() => parseConfigText('batch_size: big\n', 'c.yaml'), /c\.yaml: expected an integer >= 1 for batch_size but received "big"/);
  assert.throws(() => parseConfigText('momentum: 1.5\n', 'c.yaml'), /expected a number >= 0 and <= 1 for momentum but received 1\.5/);
  assert.throws(() => parseConfigText('lr_policy: linear\n', 'c.yaml'), /expected one of step, auto, cosine, poly for lr_policy but received "linear"/);
  assert.throws(() => parseConfigText('lr_step: [10, x]\n', 'c.yaml'), /expected a list of integers >= 1 for lr_step but received \[10, "x"\]/);
  assert.throws(() => parseConfigText('learning_rate: 0\n', 'c.yaml'), /expected a number > 0 and <= 1000000 for learning_rate/);
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

test("the time-to-accuracy keys: input_scale forms, warm-up, cosine/poly floor, label smoothing, kaiming-all; defaults are the seed's recipe", () => {
  const d = defaultConfig();
  assert.equal(d.input_scale, null, 'raw mean-subtracted pixels, as the seed');
  assert.equal(d.lr_warmup_epochs, 0);
  assert.equal(d.lr_policy, 'step');
  assert.equal(d.label_smoothing, 0);
  assert.equal(d.init, 'preset');
  assert.equal(parseConfigText('input_scale: auto\n', 'c.yaml').input_scale, 'auto');
  assert.deepEqual(parseConfigText('input_scale: 0.0125\n', 'c.yaml').input_scale, [0.0125], 'one number: every channel');
  assert.deepEqual(parseConfigText('input_scale: [0.0171, 0.0175, 0.0174]\n', 'c.yaml').input_scale, [0.0171, 0.0175, 0.0174]);
  assert.equal(parseConfigText('input_scale: null\n', 'c.yaml').input_scale, null);
  for (const bad of ['input_scale: 0', 'input_scale: [1, -2, 1]', 'input_scale: []', 'input_scale: std', 'input_scale: [1, x]']) {
    assert.throws(
      () => parseConfigText(`${bad}\n`, 'c.yaml'),
      /expected "auto", null, a number > 0 or a list of numbers > 0 \(one per channel\) for input_scale/,
      bad,
    );
  }
  const c = resolveConfig(parseConfigText('lr_policy: cosine\nlr_warmup_epochs: 0.5\nlr_min: 0.0001\nlabel_smoothing: 0.1\ninit: kaiming-all\n', 'c.yaml'));
  assert.equal(c.lr_policy, 'cosine');
  assert.equal(c.lr_warmup_epochs, 0.5);
  assert.equal(c.lr_min, 0.0001);
  assert.equal(c.label_smoothing, 0.1);
  assert.equal(c.init, 'kaiming-all');
  assert.equal(resolveConfig(parseConfigText('lr_policy: poly\nlr_power: 2\n', 'c.yaml')).lr_power, 2);
  assert.throws(() => parseConfigText('label_smoothing: 1\n', 'c.yaml'), /expected a number >= 0 and <= 0.99 for label_smoothing but received 1/);
  assert.throws(() => parseConfigText('lr_warmup_epochs: -1\n', 'c.yaml'), /expected a number >= 0 and <= 1000 for lr_warmup_epochs/);
  assert.throws(() => parseConfigText('lr_power: 0\n', 'c.yaml'), /expected a number > 0 and <= 100 for lr_power/);
  assert.throws(
    () => resolveConfig({ lr_policy: 'cosine', learning_rate: 0.01, lr_min: 0.01 }),
    /lr_min 0.01 must be below learning_rate 0.01: lr_policy cosine decays/,
  );
  assert.equal(resolveConfig({ lr_policy: 'step', learning_rate: 0.01, lr_min: 0.5 }).lr_min, 0.5, 'lr_min means nothing to step: not refused');
  // Typos and other trainers' names for the new keys get the key suggested.
  for (const [given, want] of [
    ['lr_warmup_epoch', 'lr_warmup_epochs'],
    ['warmup_epochs', 'lr_warmup_epochs'],
    ['lr_warmup', 'lr_warmup_epochs'],
    ['min_lr', 'lr_min'],
    ['label_smooth', 'label_smoothing'],
    ['smoothing', 'label_smoothing'],
    ['input_scal', 'input_scale'],
    ['normalize', 'input_scale'],
    ['lr_pwer', 'lr_power'],
  ] as const) {
    assert.equal(suggestKey(given), want, given);
  }
  assert.throws(() => parseConfigText('warmup_epochs: 1\n', 'c.yaml'), /unknown key "warmup_epochs"; did you mean "lr_warmup_epochs"\?/);
});
