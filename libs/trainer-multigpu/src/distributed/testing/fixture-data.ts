import { Rng } from '@alexnet-stream/core';

/** The data rank `rank` contributes in round `round`: deterministic, so the test can recompute it. */
export function fixtureTensors(sizes: number[], rank: number, round: number, seed = 1): Record<string, Float32Array> {
  const rng = new Rng(seed * 7919 + rank * 104729 + round * 15485863);
  const out: Record<string, Float32Array> = {};
  sizes.forEach((size, i) => {
    const t = new Float32Array(size);
    for (let j = 0; j < size; j++) t[j] = (rng.nextFloat() - 0.5) * 2 * (i + 1);
    out[`t${String(i).padStart(2, '0')}`] = t;
  });
  return out;
}
