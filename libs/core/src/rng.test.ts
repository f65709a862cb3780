import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from './rng';

test('same seed, same sequence; different seeds differ', () => {
  const a = new Rng(42),
    b = new Rng(42),
    c = new Rng(43);
  const xs = Array.from({ length: 5 }, () => a.nextUint32());
  assert.deepEqual(
    xs,
    Array.from({ length: 5 }, () => b.nextUint32()),
  );
  assert.notDeepEqual(
    xs,
    Array.from({ length: 5 }, () => c.nextUint32()),
  );
});

test('state round-trips mid-stream, including the spare normal', () => {
  const a = new Rng(7);
  a.nextNormal(); // leaves a spare
  const b = new Rng(a.state());
  for (let i = 0; i < 10; i++) assert.equal(a.nextNormal(), b.nextNormal());
});

test('uniform and normal moments are right (n = 200k: 5-sigma bounds)', () => {
  const r = new Rng(1);
  const n = 200000;
  let sum = 0,
    sumSq = 0,
    nsum = 0,
    nsq = 0;
  for (let i = 0; i < n; i++) {
    const u = r.nextFloat();
    assert.ok(u >= 0 && u < 1);
    sum += u;
    sumSq += u * u;
    const z = r.nextNormal();
    nsum += z;
    nsq += z * z;
  }
  // mean of U(0,1) has sd sqrt(1/12/n) ≈ 6.5e-4; of N(0,1) sd 1/sqrt(n) ≈ 2.2e-3
  assert.ok(Math.abs(sum / n - 0.5) < 5 * 6.5e-4);
  assert.ok(Math.abs(sumSq / n - 1 / 3) < 0.005);
  assert.ok(Math.abs(nsum / n) < 5 * 2.2e-3);
  assert.ok(Math.abs(nsq / n - 1) < 5 * Math.sqrt(2 / n));
});

test('nextInt covers its range uniformly and shuffle is a permutation', () => {
  const r = new Rng(3);
  const counts = new Array(6).fill(0);
  for (let i = 0; i < 60000; i++) counts[r.nextInt(6)]++;
  for (const c of counts) assert.ok(Math.abs(c - 10000) < 500, `count ${c}`);
  const arr = Array.from({ length: 100 }, (_, i) => i);
  const shuffled = r.shuffle([...arr]);
  assert.notDeepEqual(shuffled, arr);
  assert.deepEqual(
    [...shuffled].sort((a, b) => a - b),
    arr,
  );
});
