import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchStacker } from './batch-stacker';

const batch = (size: number, first: number) => ({
  size,
  data: Float32Array.from({ length: size * 2 }, (_, i) => first + i),
  labels: Int32Array.from({ length: size }, (_, i) => first + i),
});

test('BatchStacker stacks same-size batches in order, refuses others, and reuses its buffers', () => {
  const s = new BatchStacker(3);
  s.add(batch(2, 0));
  s.add(batch(2, 100));
  assert.equal(s.accepts(batch(1, 0)), false, 'another size waits for the next group');
  const g = s.group();
  assert.deepEqual({ size: g.size, count: g.count }, { size: 2, count: 2 });
  assert.deepEqual(Array.from(g.data), [0, 1, 2, 3, 100, 101, 102, 103]);
  assert.deepEqual(Array.from(g.labels), [0, 1, 100, 101]);
  s.add(batch(2, 200));
  assert.equal(s.accepts(batch(2, 0)), false, 'full');
  assert.throws(() => s.add(batch(2, 0)), /cannot join 3 of 2 \(capacity 3\)/);

  s.clear();
  s.add(batch(1, 7)); // a partial batch starts a group of its own, in the same memory
  const partial = s.group();
  assert.deepEqual(Array.from(partial.data), [7, 8]);
  assert.deepEqual(Array.from(partial.labels), [7]);
  assert.equal(partial.data.buffer, g.data.buffer);
  assert.throws(() => new BatchStacker(0), /capacity must be a positive integer/);
});
