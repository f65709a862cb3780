/**
 * convWeightGradByGather on its own, against dW summed directly in float64 (JS loops over the
 * definition dW[o, c', i, j] = Σ_(n,y,x) dY[n, o, y, x]·Xpad[n, g(o)·Cg + c', s·y + i, s·x + j]),
 * in one chunk and split into several chunks of taps (the memory bound at AlexNet sizes, which
 * the small shapes of rules.test.ts never reach). Tolerance: each element is a float32 sum of
 * at most 2·5·5·… ≈ 100 products of values in [-1, 1]: a few ulps of the largest term; 1e-5 of
 * the largest |dW| leaves room for that and catches any misplaced tap or channel (an error of
 * a whole term is ~1e-2 of it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { windowOutputSize } from '@alexnet-stream/model-alexnet';
import { GraphBuilder, loadOnnxRuntime } from '@alexnet-stream/onnx-export';
import { Rng } from '@alexnet-stream/core';
import { convWeightGradByGather, stridedConvWeightGradByGather } from './conv-weight-grad-gather';
import { maxRelativeError, randomArray, runModel } from './graph.test-util';

const ort = loadOnnxRuntime();
const TOLERANCE = 1e-5;

function dwF64(
  x: Float32Array,
  dy: Float32Array,
  n: number,
  c: number,
  size: number,
  o: number,
  out: number,
  k: number,
  s: number,
  p: number,
  g: number,
): Float64Array {
  const cg = c / g,
    og = o / g;
  const dw = new Float64Array(o * cg * k * k);
  for (let oc = 0; oc < o; oc++) {
    const gi = Math.floor(oc / og);
    for (let ci = 0; ci < cg; ci++)
      for (let i = 0; i < k; i++)
        for (let j = 0; j < k; j++) {
          let sum = 0;
          for (let b = 0; b < n; b++)
            for (let y = 0; y < out; y++)
              for (let xo = 0; xo < out; xo++) {
                const r = s * y + i - p,
                  col = s * xo + j - p;
                if (r < 0 || r >= size || col < 0 || col >= size) continue;
                sum += dy[((b * o + oc) * out + y) * out + xo] * x[((b * c + gi * cg + ci) * size + r) * size + col];
              }
          dw[((oc * cg + ci) * k + i) * k + j] = sum;
        }
  }
  return dw;
}

const cases = [
  { name: '3x3 stride 1 pad 1 on 5x5 (conv3-5 at the 113 input)', n: 3, c: 6, size: 5, o: 4, k: 3, s: 1, p: 1, g: 1 },
  { name: '5x5 stride 1 pad 2 group 2 on 7x7 (conv2-like)', n: 2, c: 4, size: 7, o: 6, k: 5, s: 1, p: 2, g: 2 },
  { name: '3x3 stride 2 pad 0 on 9x9, group 2', n: 2, c: 4, size: 9, o: 2, k: 3, s: 2, p: 0, g: 2 },
  { name: '11x11 stride 4 on 27x27 through SpaceToDepth (conv1-like, input cropped)', n: 2, c: 3, size: 27, o: 4, k: 11, s: 4, p: 0, g: 1, spaceToDepth: true },
  {
    name: '5x5 stride 2 pad 2 on 10x10 through SpaceToDepth (input padded at the end)',
    n: 2,
    c: 2,
    size: 10,
    o: 3,
    k: 5,
    s: 2,
    p: 2,
    g: 1,
    spaceToDepth: true,
  },
];

for (const cc of cases) {
  const out = windowOutputSize(cc.size, cc.k, cc.s, cc.p);
  // Through SpaceToDepth the gathered taps are ⌈k/s⌉² blocks of s²·C channels.
  const kb = Math.ceil(cc.k / cc.s);
  const [taps, cg] = cc.spaceToDepth ? [kb * kb, cc.s * cc.s * cc.c] : [cc.k * cc.k, cc.c / cc.g];
  const pixels = out * out;
  // One chunk; and a bound that fits 2 taps per chunk (several chunks, the last one shorter or not).
  for (const [label, maxFloats] of [
    ['one chunk', undefined],
    ['chunks of 2 taps', 2 * cg * pixels],
  ] as const) {
    test(`dW by Gather im2col, ${cc.name}, ${label}: equals the float64 sum`, async () => {
      const b = new GraphBuilder('dw-gather');
      b.input('x', 'float32', ['N', cc.c, cc.size, cc.size]);
      b.input('dy', 'float32', ['N', cc.o, out, out]);
      const dw = (cc.spaceToDepth ? stridedConvWeightGradByGather : convWeightGradByGather)(
        b,
        'x',
        'dy',
        { inShape: [cc.c, cc.size, cc.size], outShape: [cc.o, out, out], kernel: cc.k, stride: cc.s, pad: cc.p, group: cc.g },
        maxFloats,
      );
      b.output(dw, 'float32', [cc.o, cc.c / cc.g, cc.k, cc.k], 'dw');
      const model = b.model();
      const gathers = model.graph!.node!.filter((node) => node.opType === 'Gather').length;
      assert.equal(gathers, maxFloats === undefined ? 1 : Math.ceil(taps / 2), 'Gathers (chunks of taps)');
      const rng = new Rng(5);
      const x = randomArray(rng, cc.n * cc.c * cc.size * cc.size);
      const dy = randomArray(rng, cc.n * cc.o * pixels);
      const got = await runModel(model, {
        x: new ort.Tensor('float32', x, [cc.n, cc.c, cc.size, cc.size]),
        dy: new ort.Tensor('float32', dy, [cc.n, cc.o, out, out]),
      });
      const err = maxRelativeError(got.dw, dwF64(x, dy, cc.n, cc.c, cc.size, cc.o, out, cc.k, cc.s, cc.p, cc.g));
      assert.ok(err < TOLERANCE, `relative error ${err}`);
    });
  }
}
