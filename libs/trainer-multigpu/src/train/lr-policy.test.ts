import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lrAfterEpoch, lrAtIteration, type LrScheduleConfig, warmupIterations } from './lr-policy';

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

const schedule = (over: Partial<LrScheduleConfig>): LrScheduleConfig => ({
  ...step,
  lr_step: [],
  n_epochs: 4,
  lr_warmup_epochs: 0,
  lr_min: 0,
  lr_power: 1,
  ...over,
});

test('lrAtIteration: linear warm-up from base/W to base over W = round(lr_warmup_epochs · iterations per epoch) steps, under any policy', () => {
  // 10 iterations per epoch, 0.5 epochs of warm-up: W = 5, lrs base·1/5 … base·5/5, then base.
  const base = Math.fround(0.01);
  const lrs = Array.from({ length: 8 }, (_, t) => lrAtIteration(schedule({ lr_warmup_epochs: 0.5 }), base, t, 10));
  assert.deepEqual(
    lrs,
    [1, 2, 3, 4, 5, 5, 5, 5].map((k) => Math.fround((base * k) / 5)),
  );
  assert.equal(warmupIterations({ lr_warmup_epochs: 0.01 }, 10), 1, 'any warm-up is at least one step');
  assert.equal(warmupIterations({ lr_warmup_epochs: 0 }, 10), 0);
  // step without warm-up: the base lr as is, whatever the epoch length (stdin: Infinity).
  assert.equal(lrAtIteration(schedule({}), base, 123, Infinity), base);
  assert.throws(() => lrAtIteration(schedule({ lr_warmup_epochs: 1 }), base, 0, Infinity), /needs a finite epoch length/);
});

test('lrAtIteration cosine: base at the first step after warm-up, (base + lr_min)/2 half way, just above lr_min at the last; poly with its power', () => {
  const base = 0.1,
    floor = 0.001;
  // 4 epochs of 10 iterations, 1 epoch of warm-up: W = 10, the decay spans T − W = 30 steps.
  const c = schedule({ lr_policy: 'cosine', lr_warmup_epochs: 1, lr_min: floor });
  assert.equal(lrAtIteration(c, base, 9, 10), Math.fround(base), 'the last warm-up step reaches base');
  assert.equal(lrAtIteration(c, base, 10, 10), Math.fround(base), 'p = 0');
  assert.equal(lrAtIteration(c, base, 25, 10), Math.fround(floor + (base - floor) / 2), 'p = 1/2');
  const last = lrAtIteration(c, base, 39, 10);
  assert.equal(last, Math.fround(floor + ((base - floor) * (1 + Math.cos((Math.PI * 29) / 30))) / 2));
  assert.ok(last > floor && last < floor + 0.01 * (base - floor));
  // Monotone after the warm-up.
  const lrs = Array.from({ length: 30 }, (_, i) => lrAtIteration(c, base, 10 + i, 10));
  for (let i = 1; i < lrs.length; i++) assert.ok(lrs[i] <= lrs[i - 1], `step ${10 + i}`);
  // poly, power 2, no warm-up: base·(1 − t/40)².
  const p = schedule({ lr_policy: 'poly', lr_power: 2 });
  for (const t of [0, 10, 20, 39]) assert.equal(lrAtIteration(p, base, t, 10), Math.fround(base * (1 - t / 40) ** 2), `t ${t}`);
  // Past the end (a resumed run with fewer n_epochs): the floor, not a negative or rising lr.
  assert.equal(lrAtIteration(c, base, 55, 10), Math.fround(floor));
  assert.equal(lrAtIteration(p, base, 55, 10), 0);
  // The epoch policies never touch the base lr under cosine/poly.
  assert.equal(lrAfterEpoch({ ...c, lr_step: [1, 2] }, base, 1, [], 0).changed, false);
});
