import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildInferResponse, parseInfer, splitBinaryBody } from './kserve';
import type { ModelDescription } from './model-description';
import { HttpError } from './errors';

// A model with input data FP32 [-1, 2, 3] (6 values per row) and two outputs of 4 classes.
const model: ModelDescription = {
  name: 'm',
  path: 'm.onnx',
  origin: 'foreign',
  input: { name: 'data', datatype: 'FP32', shape: [-1, 2, 3] },
  outputs: [
    { name: 'logits', datatype: 'FP32', shape: [-1, 4] },
    { name: 'prob', datatype: 'FP32', shape: [-1, 4] },
  ],
  inputLength: 6,
  numClasses: 4,
  classNames: ['a', 'b', 'c', 'd'],
  classifyOutput: 'prob',
  classifyOutputIsProb: true,
  sizeBytes: 0,
};

const floats = (bytes: Uint8Array) => new Float32Array(Uint8Array.from(bytes).buffer);

function throws400(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof HttpError && err.statusCode === 400 && message.test(err.message));
}

test('parseInfer: nested and flat JSON data give the same row-major bytes', () => {
  const flat = parseInfer(
    { inputs: [{ name: 'data', shape: [2, 2, 3], datatype: 'FP32', data: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12.5] }] },
    undefined,
    model,
    8,
  );
  const nested = parseInfer(
    {
      inputs: [
        {
          name: 'data',
          shape: [2, 2, 3],
          datatype: 'FP32',
          data: [
            [
              [1, 2, 3],
              [4, 5, 6],
            ],
            [
              [7, 8, 9],
              [10, 11, 12.5],
            ],
          ],
        },
      ],
    },
    undefined,
    model,
    8,
  );
  assert.equal(flat.n, 2);
  assert.deepEqual(Array.from(floats(flat.data)), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12.5]);
  assert.deepEqual(nested.data, flat.data);
  assert.deepEqual(flat.outputs, [
    { name: 'logits', binary: false },
    { name: 'prob', binary: false },
  ]);
});

test('parseInfer: binary tensors are taken as they are; binary_data_output per output or for all', () => {
  const x = new Float32Array([1, -2, 3.25, 4, 5, 6]);
  const bytes = Buffer.from(x.buffer);
  const p = parseInfer(
    {
      inputs: [{ name: 'data', shape: [1, 2, 3], datatype: 'FP32', parameters: { binary_data_size: 24 } }],
      outputs: [{ name: 'prob', parameters: { binary_data_output: true } }],
    },
    bytes,
    model,
    8,
  );
  assert.equal(p.data, bytes, 'no copy');
  assert.deepEqual(p.outputs, [{ name: 'prob', binary: true }]);
  const all = parseInfer(
    { parameters: { binary_data_output: true }, inputs: [{ name: 'data', shape: [1, 2, 3], datatype: 'FP32', parameters: { binary_data_size: 24 } }] },
    bytes,
    model,
    8,
  );
  assert.deepEqual(
    all.outputs.map((o) => o.binary),
    [true, true],
  );
});

test('parseInfer: every mistake is a 400 naming the field', () => {
  const ok = { name: 'data', shape: [1, 2, 3], datatype: 'FP32', data: [1, 2, 3, 4, 5, 6] };
  throws400(() => parseInfer({ inputs: [ok, ok] }, undefined, model, 8), /inputs holds 2 tensors/);
  throws400(() => parseInfer({ inputs: [{ ...ok, name: 'x' }] }, undefined, model, 8), /inputs\[0\]\.name: model m has no input "x"/);
  throws400(() => parseInfer({ inputs: [{ ...ok, datatype: 'INT64' }] }, undefined, model, 8), /inputs\[0\]\.datatype is INT64/);
  throws400(() => parseInfer({ inputs: [{ ...ok, shape: [1, 3, 2] }] }, undefined, model, 8), /inputs\[0\]\.shape is \[1,3,2\]/);
  throws400(() => parseInfer({ inputs: [{ ...ok, shape: [1, 2] }] }, undefined, model, 8), /inputs\[0\]\.shape is \[1,2\]/);
  throws400(() => parseInfer({ inputs: [{ ...ok, shape: [0, 2, 3], data: [] }] }, undefined, model, 8), /batch size is 0/);
  throws400(() => parseInfer({ inputs: [{ ...ok, shape: [9, 2, 3] }] }, undefined, model, 8), /batch size 9 is more than the server's maxBatch 8/);
  throws400(
    () => parseInfer({ inputs: [{ ...ok, shape: [9, 2, 3] }] }, undefined, model, 8, '--max-batch'),
    /batch size 9 is more than the server's --max-batch 8/,
  );
  throws400(() => parseInfer({ inputs: [{ ...ok, data: [1, 2, 3] }] }, undefined, model, 8), /inputs\[0\]\.data holds 3 values; shape \[1,2,3\] needs 6/);
  throws400(() => parseInfer({ inputs: [{ ...ok, data: [1, 2, 3, 4, 5, 6, 7] }] }, undefined, model, 8), /holds more values than its shape needs \(6\)/);
  throws400(() => parseInfer({ inputs: [{ ...ok, data: [1, 2, null, 4, 5, 6] }] }, undefined, model, 8), /element 2 is null/);
  throws400(() => parseInfer({ inputs: [{ ...ok, data: 5 }] }, undefined, model, 8), /inputs\[0\]\.data must be an array/);
  throws400(() => parseInfer({ inputs: [{ name: 'data', shape: [1, 2, 3], datatype: 'FP32' }] }, undefined, model, 8), /has no data/);
  throws400(() => parseInfer({ inputs: [ok], outputs: [{ name: 'z' }] }, undefined, model, 8), /outputs\[0\]\.name: model m has no output "z"/);
  const bin = { name: 'data', shape: [1, 2, 3], datatype: 'FP32', parameters: { binary_data_size: 24 } };
  throws400(() => parseInfer({ inputs: [bin] }, undefined, model, 8), /no binary part/);
  throws400(
    () => parseInfer({ inputs: [{ ...bin, parameters: { binary_data_size: 20 } }] }, Buffer.alloc(20), model, 8),
    /binary_data_size is 20; shape \[1,2,3\] of FP32 is 24 bytes/,
  );
  throws400(() => parseInfer({ inputs: [bin] }, Buffer.alloc(28), model, 8), /binary part is 28 bytes; inputs declare 24/);
  throws400(() => parseInfer({ inputs: [ok] }, Buffer.alloc(4), model, 8), /no input declares parameters\.binary_data_size/);
  const u8: ModelDescription = { ...model, input: { name: 'data', datatype: 'UINT8', shape: [-1, 2, 3] } };
  throws400(
    () => parseInfer({ inputs: [{ ...ok, datatype: 'UINT8', data: [1, 2, 3, 4, 5, 256] }] }, undefined, u8, 8),
    /value 256 at element 5 is not a UINT8/,
  );
  assert.deepEqual(Array.from(parseInfer({ inputs: [{ ...ok, datatype: 'UINT8', data: [0, 1, 2, 3, 4, 255] }] }, undefined, u8, 8).data), [0, 1, 2, 3, 4, 255]);
});

test('splitBinaryBody: the header length must be a byte count within the body, the header JSON', () => {
  const body = Buffer.concat([Buffer.from('{"inputs":[]}'), Buffer.from([1, 2, 3])]);
  const { header, binary } = splitBinaryBody(body, '13');
  assert.deepEqual(header, { inputs: [] });
  assert.deepEqual(Array.from(binary), [1, 2, 3]);
  throws400(() => splitBinaryBody(body, '99'), /Inference-Header-Content-Length is "99"/);
  throws400(() => splitBinaryBody(body, '-1'), /Inference-Header-Content-Length is "-1"/);
  throws400(() => splitBinaryBody(body, '10'), /not valid JSON/);
});

test('buildInferResponse: JSON outputs, binary outputs after the header in order, classification strings', () => {
  const logits = new Float32Array([0.5, 2, -1, 0.25]);
  const prob = new Float32Array([0.1, 0.6, 0.05, 0.25]);
  const tensors = new Map([
    ['logits', { name: 'logits', data: logits, shape: [1, 4] }],
    ['prob', { name: 'prob', data: prob, shape: [1, 4] }],
  ]);
  const json = buildInferResponse(
    model,
    '3',
    'req-1',
    [
      { name: 'logits', binary: false },
      { name: 'prob', binary: true },
    ],
    tensors,
  );
  const head = JSON.parse(json.json);
  assert.deepEqual(head, {
    model_name: 'm',
    model_version: '3',
    id: 'req-1',
    outputs: [
      { name: 'logits', datatype: 'FP32', shape: [1, 4], data: [0.5, 2, -1, 0.25] },
      { name: 'prob', datatype: 'FP32', shape: [1, 4], parameters: { binary_data_size: 16 } },
    ],
  });
  assert.deepEqual(Array.from(floats(json.binary[0])), Array.from(prob));
  const cls = JSON.parse(buildInferResponse(model, '3', undefined, [{ name: 'prob', binary: false, classification: 2 }], tensors).json);
  assert.deepEqual(cls.outputs, [{ name: 'prob', datatype: 'BYTES', shape: [1, 2], data: [`${prob[1]}:1:b`, `${prob[3]}:3:d`] }]);
});
