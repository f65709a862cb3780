/**
 * PORTABLE_LOWERING (the graph for GPU providers: MaxPool's backward without Indices, no
 * SpaceToDepth, LogSoftmax or int64) gives the same step as DEFAULT_LOWERING on the CPU provider.
 *
 * Ties in max pooling: the CPU kernel's Indices name the first maximum of each window in
 * row-major order; the 'compare' backward gives the window's gradient to the first tap equal to
 * the maximum in the same order, so ties route the same way. The tests make ties on purpose
 * (inputs rounded to a few levels) and check one routing by hand.
 *
 * Tolerance: 1e-6 of the largest value for a pool's dX and the metrics: the two graphs add the
 * same terms, only where windows overlap (3x3/2) may two or three float32 terms be summed in
 * another order (measured: 0). 1e-5 of the update's size for a whole step: a strided conv's dW
 * (conv1) is summed over K = N·Ho·Wo float32 terms split differently (SpaceToDepth blocks on the
 * CPU, per-tap strided Slices in the portable graph): measured 2.9e-6 for torchvision's conv1
 * (11x11/4, pad 2), 0 for every other parameter and preset.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '@alexnet-stream/core';
import { initParameters, type MaxPoolLayer, PRESETS } from '@alexnet-stream/model-alexnet';
import { loadOnnxRuntime, type Ort } from '@alexnet-stream/onnx-export';
import { DEFAULT_OPTIMIZER } from '../engine';
import { DEFAULT_LOWERING, PORTABLE_LOWERING } from './rules';
import { buildGraph, newName, velocityName } from './training-graph';
import { maxRelativeError, oneLayerGraph, randomArray, reducedSpec, runModel, sizeOf } from './graph.test-util';

const ort = loadOnnxRuntime();

/** Values on a coarse grid (−2..2 in steps of 1), so that many windows hold equal maxima. */
function tiedArray(rng: Rng, size: number): Float32Array {
  return Float32Array.from({ length: size }, () => Math.round(4 * rng.nextFloat()) - 2);
}

const poolCases: { name: string; layer: MaxPoolLayer; c: number; h: number }[] = [
  { name: "AlexNet's 3x3/2 (overlapping), 13x13", layer: { kind: 'maxpool', name: 'p', kernel: 3, stride: 2, pad: 0 }, c: 3, h: 13 },
  { name: '3x3/2 with pad 1 on 8x8 (a trailing row no window covers)', layer: { kind: 'maxpool', name: 'p', kernel: 3, stride: 2, pad: 1 }, c: 2, h: 8 },
  { name: '2x2/2 on 7x7 (floor mode leaves the last row out)', layer: { kind: 'maxpool', name: 'p', kernel: 2, stride: 2, pad: 0 }, c: 2, h: 7 },
];

for (const pc of poolCases) {
  test(`MaxPool backward by comparison equals the Indices + ScatterElements backward, ties included: ${pc.name}`, async () => {
    const { layer, c, h } = pc;
    const ho = Math.floor((h + 2 * layer.pad - layer.kernel) / layer.stride) + 1;
    const n = 2;
    const rng = new Rng(3);
    const x = tiedArray(rng, n * c * h * h);
    const dy = randomArray(rng, n * c * ho * ho);
    const run = (lowering = DEFAULT_LOWERING) => {
      const g = oneLayerGraph(layer, n, [c, h, h], [c, ho, ho], undefined, lowering);
      return runModel(g.model, { x: new ort.Tensor('float32', x, g.inputs.x), dy: new ort.Tensor('float32', dy, g.inputs.dy) });
    };
    const want = await run();
    const got = await run(PORTABLE_LOWERING);
    assert.deepEqual(Array.from(got.y), Array.from(want.y));
    assert.ok(maxRelativeError(got.dx, want.dx) <= 1e-6, `dx differs by ${maxRelativeError(got.dx, want.dx)}`);
    // The inputs do tie: some window has its maximum twice (else this test proves nothing about ties).
    let tiedWindows = 0;
    for (let i = 0; i < n * c; i++)
      for (let y = 0; y < ho; y++)
        for (let xx = 0; xx < ho; xx++) {
          const vals: number[] = [];
          for (let a = 0; a < layer.kernel; a++)
            for (let b2 = 0; b2 < layer.kernel; b2++) {
              const r = y * layer.stride - layer.pad + a,
                q = xx * layer.stride - layer.pad + b2;
              if (r >= 0 && r < h && q >= 0 && q < h) vals.push(x[(i * h + r) * h + q]);
            }
          const m = Math.max(...vals);
          if (vals.filter((v) => v === m).length > 1) tiedWindows++;
        }
    assert.ok(tiedWindows > 0, 'no tied window in the test input');
  });
}

test('a tie inside one window: the first maximum in row-major order takes the whole gradient (by hand)', async () => {
  const layer: MaxPoolLayer = { kind: 'maxpool', name: 'p', kernel: 2, stride: 2, pad: 0 };
  // One 2x2 window [[1, 5], [5, 0]]: the maximum 5 is at (0, 1) and (1, 0); (0, 1) comes first.
  const g = oneLayerGraph(layer, 1, [1, 2, 2], [1, 1, 1], undefined, PORTABLE_LOWERING);
  const out = await runModel(g.model, {
    x: new ort.Tensor('float32', Float32Array.of(1, 5, 5, 0), [1, 1, 2, 2]),
    dy: new ort.Tensor('float32', Float32Array.of(3), [1, 1, 1, 1]),
  });
  assert.deepEqual(Array.from(out.dx), [0, 3, 0, 0]);
});

for (const preset of PRESETS) {
  test(`${preset}: one training step of the portable graph equals the default graph's on the CPU provider (update, velocities, loss, errors)`, async () => {
    const spec = reducedSpec(preset, 67, 10);
    const n = 4;
    const rng = new Rng(5);
    const weights = initParameters(spec, 2);
    const feeds: Record<string, Ort.Tensor> = {
      // Integer-valued pixels: equal activations (ties) happen in the pools
      data: new ort.Tensor(
        'float32',
        Float32Array.from({ length: n * 3 * 67 * 67 }, () => Math.round(60 * (2 * rng.nextFloat() - 1))),
        [n, 3, 67, 67],
      ),
      labels: new ort.Tensor(
        'int32',
        Int32Array.from({ length: n }, () => rng.nextInt(10)),
        [n],
      ),
      lr: new ort.Tensor('float32', Float32Array.of(0.01), []),
    };
    const graphs = [DEFAULT_LOWERING, PORTABLE_LOWERING].map((l) => buildGraph(spec, 'train', DEFAULT_OPTIMIZER, l));
    for (const p of graphs[0].params) {
      feeds[p.name] = new ort.Tensor('float32', weights[p.name], p.shape);
      feeds[velocityName(p.name)] = new ort.Tensor('float32', randomArray(rng, sizeOf(p.shape), 1e-3), p.shape);
    }
    for (const m of graphs[0].masks)
      feeds[m.input] = new ort.Tensor(
        'float32',
        Float32Array.from({ length: n * sizeOf(m.shape) }, () => (rng.nextFloat() < m.rate ? 0 : 1 / (1 - m.rate))),
        [n, ...m.shape],
      );
    const [want, got] = await Promise.all(graphs.map((g) => runModel(g.model, feeds)));
    for (const metric of ['loss', 'top1_errors', 'top5_errors'])
      assert.ok(
        Math.abs(got[metric][0] - want[metric][0]) <= 1e-6 * Math.max(1, Math.abs(want[metric][0])),
        `${metric}: ${got[metric][0]} vs ${want[metric][0]}`,
      );
    for (const p of graphs[0].params) {
      const before = weights[p.name];
      const delta = (w: Float32Array) => Float32Array.from(w, (v, i) => v - before[i]);
      const e = maxRelativeError(delta(got[newName(p.name)]), delta(want[newName(p.name)]));
      assert.ok(e <= 1e-5, `${p.name}: the update differs by ${e} of its size`);
      assert.ok(maxRelativeError(got[newName(velocityName(p.name))], want[newName(velocityName(p.name))]) <= 1e-5, `${p.name} velocity`);
    }
  });
}

test('the portable graph has no node the WebGPU provider lacks (MaxPool Indices, SpaceToDepth, LogSoftmax, TopK, Loop, NCHWc, int64 casts)', () => {
  const spec = reducedSpec('theano-alexnet', 67, 10);
  const graph = buildGraph(spec, 'train', DEFAULT_OPTIMIZER, PORTABLE_LOWERING).model.graph!;
  const nodes = graph.node ?? [];
  assert.ok(
    nodes.every((n) => n.opType !== 'MaxPool' || n.output!.length === 1),
    'a MaxPool with an Indices output',
  );
  for (const op of ['SpaceToDepth', 'LogSoftmax', 'TopK', 'Loop', 'ScatterElements']) assert.ok(!nodes.some((n) => n.opType === op), `a ${op} node`);
  assert.ok(!nodes.some((n) => n.domain && n.domain !== ''), 'a node outside the ONNX domain');
  const int64Casts = nodes.filter((n) => n.opType === 'Cast' && n.attribute!.some((a) => a.name === 'to' && Number(a.i) === 7));
  assert.equal(int64Casts.length, 0);
  // ...and the CPU graph does use them, so this check can fail.
  const cpu = buildGraph(spec, 'train', DEFAULT_OPTIMIZER, DEFAULT_LOWERING).model.graph!.node ?? [];
  assert.ok(cpu.some((n) => n.opType === 'MaxPool' && n.output!.length === 2) && cpu.some((n) => n.opType === 'LogSoftmax'));
});
