/**
 * The ring all-reduce and broadcast (ring.ts) over an in-memory link: every rank in this
 * process, so that world sizes, frame sizes and precisions are cheap to cover. The ZeroMQ
 * sockets themselves are tested with real processes in zmq-group.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checksumTensors } from './checksum';
import { ProtocolError } from './errors';
import { memoryRings } from './testing/memory-ring';
import { fixtureTensors } from './testing/fixture-data';

/** Every rank's arrays for tensors in sorted name order (as averageWeights passes them). */
function inputs(worldSize: number, sizes: number[], round: number) {
  return [...Array(worldSize).keys()].map((rank) => fixtureTensors(sizes, rank, round));
}

const sorted = (t: Record<string, Float32Array>) =>
  Object.keys(t)
    .sort()
    .map((k) => t[k]);

describe('ring all-reduce (in memory)', () => {
  for (const worldSize of [2, 3, 4, 5]) {
    it(`${worldSize} ranks: the mean of every element within float32 summation error of a float64 hand sum; replicas bit-identical`, async () => {
      // Odd sizes, a size smaller than the world, and frames (7 floats) that divide nothing.
      const sizes = [1, 5, 37, 1000, 3];
      const { rings, sentBytes } = memoryRings({ worldSize, frameElements: 7 });
      for (let round = 0; round < 2; round++) {
        const given = inputs(worldSize, sizes, round);
        const work = given.map((t) => Object.fromEntries(Object.entries(t).map(([k, v]) => [k, Float32Array.from(v)])));
        await Promise.all(rings.map((ring, rank) => ring.allReduceMean(sorted(work[rank]))));
        assert.equal(new Set(work.map(checksumTensors)).size, 1, `round ${round}: replicas differ`);
        for (const name of Object.keys(given[0])) {
          const got = work[0][name];
          for (let i = 0; i < got.length; i++) {
            let sum = 0;
            let magnitude = 0;
            for (const g of given) {
              sum += g[name][i];
              magnitude += Math.abs(g[name][i]);
            }
            // n-1 float32 additions in a fixed order, each erring by at most 2^-24·Σ|x|, then a
            // correctly rounded division: ≤ 2^-24·Σ|x| after dividing by n (float64 is exact far beyond).
            const tolerance = 2 ** -24 * magnitude + 1e-30;
            assert.ok(Math.abs(got[i] - sum / worldSize) <= tolerance, `${name}[${i}]: ${got[i]} vs ${sum / worldSize} ± ${tolerance}`);
          }
        }
      }
      // Each rank sends 2(n-1)/n of the model per average: the ring's point.
      const total = sizes.reduce((a, b) => a + b, 0) * 4;
      for (const bytes of sentBytes)
        assert.ok(Math.abs(bytes / 2 - (2 * (worldSize - 1) * total) / worldSize) <= 2 * 7 * 4 * worldSize, `sent ${bytes / 2} per average`);
    });
  }

  it('fp16 transfer: bit-identical replicas, error within float16 rounding of the mean, and not exact', async () => {
    const sizes = [4096];
    const { rings } = memoryRings({ worldSize: 3, frameElements: 1000, transfer: 'fp16' });
    const given = inputs(3, sizes, 0);
    const work = given.map((t) => ({ t00: Float32Array.from(t.t00) }));
    await Promise.all(rings.map((ring, rank) => ring.allReduceMean([work[rank].t00])));
    assert.equal(new Set(work.map(checksumTensors)).size, 1);
    let maxErr = 0;
    for (let i = 0; i < 4096; i++) maxErr = Math.max(maxErr, Math.abs(work[0].t00[i] - (given[0].t00[i] + given[1].t00[i] + given[2].t00[i]) / 3));
    // Values lie in [-1, 1). Rounding to float16 errs by half an ulp: 2^-12 below 1, 2^-11
    // below 2. The two partial sums on the wire (|.| < 1, then < 2) are rounded once each and
    // then divided by 3; the mean is rounded once more: ≤ (2^-12 + 2^-11)/3 + 2^-12 ≈ 4.9e-4.
    assert.ok(maxErr < 1e-3, `max abs error ${maxErr}`);
    assert.ok(maxErr > 0, 'fp16 transfer rounded nothing: was it used?');
  });

  it("broadcast copies rank 0's arrays to every rank, exactly", async () => {
    const sizes = [3, 300, 17];
    const { rings } = memoryRings({ worldSize: 4, frameElements: 64 });
    const work = inputs(4, sizes, 1);
    await Promise.all(rings.map((ring, rank) => ring.broadcast(sorted(work[rank]))));
    const want = checksumTensors(fixtureTensors(sizes, 0, 1));
    work.forEach((t, rank) => assert.equal(checksumTensors(t), want, `rank ${rank}`));
  });

  it('ranks that disagree on the tensors fail with a ProtocolError naming the frame, not a misread', async () => {
    const errors: Error[] = [];
    const { rings } = memoryRings({ worldSize: 2, frameElements: 8, onProtocolError: (_rank, err) => errors.push(err) });
    const results = await Promise.allSettled([rings[0].allReduceMean([new Float32Array(16)]), rings[1].allReduceMean([new Float32Array(24)])]);
    const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.ok(rejected.length >= 1);
    for (const r of rejected) {
      assert.ok(r.reason instanceof ProtocolError);
      assert.match(
        (r.reason as Error).message,
        /expected frame \(op 0, phase \d, step \d, frame \d, \d+ bytes\) from rank \d but got .*the ranks disagree on the tensors or the call order/,
      );
    }
    assert.ok(errors.length >= 1, 'the group was told (it stops every rank)');
  });
});
