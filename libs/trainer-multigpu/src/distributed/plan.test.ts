import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planFrames, planRing } from './plan';

describe('planRing', () => {
  it('covers every element exactly once, frames within one tensor and at most frameElements long', () => {
    for (const [lengths, n, frame] of [
      [[1, 5, 37, 1000, 3], 3, 7],
      [[10], 4, 3],
      [[2], 4, 1000], // fewer elements than ranks: some segments stay empty
      [[61_000_000 / 1000, 4096, 9, 1000], 2, 256],
    ] as [number[], number, number][]) {
      const plan = planRing(lengths, n, frame);
      const seen = lengths.map((l) => new Uint8Array(l));
      for (const f of plan.frames) {
        assert.ok(f.length >= 1 && f.length <= frame);
        assert.ok(f.offset + f.length <= lengths[f.tensor]);
        for (let i = f.offset; i < f.offset + f.length; i++) seen[f.tensor][i]++;
      }
      seen.forEach((s) => assert.ok(s.every((c) => c === 1)));
      assert.equal(plan.segments.length, n);
      const all = plan.segments.flat();
      assert.deepEqual(all, [...plan.frames.keys()], 'segments are contiguous runs, in order, covering all frames');
    }
  });

  it('balances segments by element count', () => {
    const plan = planRing([1000, 1000, 1000, 1000], 4, 100);
    const sizes = plan.segments.map((s) => s.reduce((a, f) => a + plan.frames[f].length, 0));
    assert.deepEqual(sizes, [1000, 1000, 1000, 1000]);
    // Frames shrink so that even a tiny model gives every rank a share.
    const small = planRing([8], 4, 1 << 20);
    assert.deepEqual(
      small.segments.map((s) => s.length),
      [1, 1, 1, 1],
    );
  });

  it('planFrames refuses a frame size below 1', () => {
    assert.throws(() => planFrames([3], 0), RangeError);
  });
});
