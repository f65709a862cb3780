import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadOnnxRuntime } from './onnxruntime';

const ort = loadOnnxRuntime();
import { decodeModel, encodeModel, tensorToFloat32 } from './proto';
import { float, GraphBuilder, int, ints } from './graph-builder';

test('a built graph runs in onnxruntime and computes what it says (hand-computed case)', async () => {
  const g = new GraphBuilder('t');
  const x = g.input('x', 'float32', ['N', 2]);
  const w = g.initializer('w', new Float32Array([1, 2, 3, 4, 5, 6]), [3, 2]);
  const b = g.initializer('b', new Float32Array([0.5, -0.5, 1]), [3]);
  const y = g.op('Gemm', [x, w, b], { transB: int(1), alpha: float(2) });
  const r = g.op('Relu', [y]);
  g.output(r, 'float32', ['N', 3], 'out');
  const bytes = encodeModel(g.model({ metadata: { preset: 'test' } }));
  const session = await ort.InferenceSession.create(Buffer.from(bytes));
  const result = await session.run({ x: new ort.Tensor('float32', new Float32Array([1, -1, 0, 1]), [2, 2]) });
  // row [1,-1]: 2*[1-2, 3-4, 5-6] + b = [-2+0.5, -2-0.5, -2+1] -> relu -> [0,0,0]
  // row [0, 1]: 2*[2, 4, 6] + b = [4.5, 7.5, 13]
  assert.deepEqual(Array.from(result.out.data as Float32Array), [0, 0, 0, 4.5, 7.5, 13]);
  const back = decodeModel(bytes);
  assert.equal(back.metadataProps[0].value, 'test');
  assert.deepEqual(Array.from(tensorToFloat32(back.graph!.initializer!.find((t) => t.name === 'w')!)), [1, 2, 3, 4, 5, 6]);
});

test('constants are shared, names are unique, redefinition is refused', () => {
  const g = new GraphBuilder('t');
  assert.equal(g.int64s([1, 2]), g.int64s([1, 2]));
  assert.notEqual(g.int64s([1, 2]), g.int64s([2, 1]));
  g.input('x', 'float32', [1]);
  assert.throws(() => g.input('x', 'float32', [1]), /already defined/);
  const [a, b] = g.node('Split', ['x'], { axis: int(0) }, { outputs: 2 });
  assert.notEqual(a, b);
  assert.ok(ints([1]));
});

test('a truncated model is refused with the file name', () => {
  const g = new GraphBuilder('t');
  g.output(g.op('Relu', [g.input('x', 'float32', [1])]), 'float32', [1]);
  const bytes = encodeModel(g.model());
  assert.throws(() => decodeModel(bytes.subarray(0, bytes.length - 7), 'm.onnx'), /m.onnx: not a readable ONNX model/);
});
