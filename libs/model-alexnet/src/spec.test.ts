import { test } from 'node:test';
import assert from 'node:assert/strict';
import { alexnetSpec, narrowSpec } from './presets';
import { forwardMacs, trainingMacs } from './spec';

test('forwardMacs: theano-alexnet 227x227, layer by layer, computed by hand', () => {
  // out channels · out pixels · (in channels / group) · kernel², and in · out features for fc
  const want = {
    conv1: 96 * 55 * 55 * 3 * 11 * 11,
    conv2: 256 * 27 * 27 * (96 / 2) * 5 * 5,
    conv3: 384 * 13 * 13 * 256 * 3 * 3,
    conv4: 384 * 13 * 13 * (384 / 2) * 3 * 3,
    conv5: 256 * 13 * 13 * (384 / 2) * 3 * 3,
    fc6: 256 * 6 * 6 * 4096,
    fc7: 4096 * 4096,
    fc8: 4096 * 1000,
  };
  const got = forwardMacs(alexnetSpec('theano-alexnet'));
  assert.deepEqual(Object.fromEntries(got.map((l) => [l.layer, l.macs])), want);
  assert.equal(
    got.reduce((s, l) => s + l.macs, 0),
    724_406_816,
  );
  // forward + dX of all but conv1 + dW
  assert.equal(trainingMacs(alexnetSpec('theano-alexnet')), 3 * 724_406_816 - 105_415_200);
});

test('narrowSpec divides conv and hidden fc widths, keeps the classifier and the structure; refuses widths that do not divide', () => {
  const full = alexnetSpec('theano-alexnet', { numClasses: 9, inputSize: 67 });
  const narrow = narrowSpec(full, 8, 64);
  const widths = (s: typeof full) => s.layers.map((l) => (l.kind === 'conv' ? l.outChannels : l.kind === 'fc' ? l.outFeatures : l.kind));
  assert.deepEqual(
    widths(narrow),
    widths(full).map((w, i) => (typeof w !== 'number' ? w : full.layers[i].name === 'fc8' ? w : full.layers[i].kind === 'conv' ? w / 8 : w / 64)),
  );
  assert.deepEqual(
    narrow.layers.map((l) => (l.kind === 'conv' ? l.group : 0)),
    full.layers.map((l) => (l.kind === 'conv' ? l.group : 0)),
  );
  assert.throws(() => narrowSpec(full, 5, 1), /Expected a divisor of conv1's width 96 for convDivisor but received 5/);
});
