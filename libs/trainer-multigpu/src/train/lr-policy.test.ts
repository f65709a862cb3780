import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lrAfterEpoch } from './lr-policy';

const step = { lr_policy: 'step' as const, lr_step: [2, 4], lr_adapt_threshold: 0.01 };
const auto = { lr_policy: 'auto' as const, lr_step: [], lr_adapt_threshold: 0.01 };

test('step: divided by 10 after exactly the epochs in lr_step, in float32 as the seed', () => {
  let lr = Math.fround(0.01);
  const seen: number[] = [];
  for (let epoch = 1; epoch <= 5; epoch++) {
    const d = lrAfterEpoch(step, lr, epoch, [], 0);
    assert.equal(d.changed, epoch === 2 || epoch === 4, `epoch ${epoch}`);
    lr = d.lr;
    seen.push(lr);
  }
  // numpy: np.float32(np.float32(0.01) / 10) etc.
  const a = Math.fround(0.01);
  const b = Math.fround(a / 10);
  const c = Math.fround(b / 10);
  assert.deepEqual(seen, [a, b, b, c, c]);
  // np.float32(0.01) / 10 in float32 is 0.0009999999310821295: neither 0.001 nor float32(0.001).
  assert.equal(b, 0.0009999999310821295);
});

test('auto: divided when top-1 error fell by less than the threshold over two epochs, then not again for two epochs', () => {
  const lr = 0.01;
  assert.equal(lrAfterEpoch(auto, lr, 2, [0.5, 0.5], 0).changed, false, 'needs three results');
  assert.equal(lrAfterEpoch(auto, lr, 3, [0.5, 0.4, 0.3], 0).changed, false, 'improved by 0.2');
  const d = lrAfterEpoch(auto, lr, 3, [0.5, 0.497, 0.495], 0);
  assert.equal(d.changed, true);
  assert.equal(d.lr, Math.fround(0.001));
  assert.match(d.reason!, /fell by 0\.0050 over two epochs/);
  assert.equal(lrAfterEpoch(auto, d.lr, 4, [0.5, 0.497, 0.495, 0.495], 3).changed, false, 'cool-down after a change');
  assert.equal(lrAfterEpoch(auto, d.lr, 5, [0.5, 0.497, 0.495, 0.495, 0.495], 3).changed, true);
});
