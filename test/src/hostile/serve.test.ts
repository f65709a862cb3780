/**
 * Hostile and careless HTTP clients of `serve`: data nested past any stack, numbers JSON can
 * carry but float32 cannot (1e39, 1e400), NaN in binary tensors, multipart bodies without a
 * boundary or cut short, and a model whose weights overflow. Each gets a 4xx naming the field
 * (or, for the model's overflow, a 5xx saying so) — never a 500 "internal server error" from a
 * stack overflow or a parser, never a 200 whose probabilities are `null`. What held before is
 * kept here too: lying sizes and lengths, huge shapes, a PNG header bomb, 10000 multipart
 * parts, path traversal in model names, two inputs. The server stays up throughout.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { crc32, deflateSync } from 'node:zlib';
import { join } from 'node:path';
import sharp from 'sharp';
import { initParameters } from '@alexnet-stream/model-alexnet';
import { encodeModel, lowerInference } from '@alexnet-stream/onnx-export';
import { tinySpec } from '@alexnet-stream/trainer-multigpu/testing';
import { binaryInferBody, type ServerProcess, startServe } from '../serve-helpers';
import { scratch } from './stream-fixtures';

const dir = scratch('serve');
const p = (name: string) => join(dir, name);
const spec = tinySpec(4, 35);
const N = 3 * 35 * 35;
let server: ServerProcess;
let photo: Buffer;

before(async () => {
  const weights = initParameters(spec, 1);
  writeFileSync(p('good.onnx'), encodeModel(lowerInference(spec, weights, { classNames: ['a', 'b', 'c', 'd'], meanChannels: [100, 110, 120], imageSize: 40 })));
  const huge = initParameters(spec, 1);
  for (const name of Object.keys(huge)) if (name.endsWith('.weight')) huge[name].fill(3e38);
  writeFileSync(
    p('overflow.onnx'),
    encodeModel(lowerInference(spec, huge, { classNames: ['a', 'b', 'c', 'd'], meanChannels: [100, 110, 120], imageSize: 40 })),
  );
  photo = await sharp({ create: { width: 60, height: 50, channels: 3, background: '#a05030' } })
    .jpeg()
    .toBuffer();
  server = await startServe(['--model', `m=${p('good.onnx')}`, '--model', `overflow=${p('overflow.onnx')}`], dir);
});

after(async () => {
  await server?.stop();
});

async function post(path: string, body: string | Buffer, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  const res = await fetch(`${server.url}${path}`, { method: 'POST', body, headers });
  return { status: res.status, text: await res.text() };
}

const json = { 'content-type': 'application/json' };
const inferBody = (data: string, extra = '') => `{"inputs":[{"name":"data","shape":[1,3,35,35],"datatype":"FP32","data":${data}}]${extra}}`;

/** A 4xx/5xx answer whose JSON error matches `pattern`. */
function answered(r: { status: number; text: string }, status: number, pattern: RegExp, what: string): void {
  assert.equal(r.status, status, `${what}: ${r.text}`);
  assert.match((JSON.parse(r.text) as { error: string }).error, pattern, what);
}

test('infer: data nested deeper than its shape is a 400, not a stack overflow', async () => {
  answered(
    await post('/v2/models/m/infer', inferBody(`${'['.repeat(100_000)}1${']'.repeat(100_000)}`), json),
    400,
    /inputs\[0\]\.data is nested deeper than its shape has dimensions/,
    'deep',
  );
  const nested = JSON.stringify([
    [
      Array.from({ length: 35 }, () => Array(35).fill(1)),
      Array.from({ length: 35 }, () => Array(35).fill(1)),
      Array.from({ length: 35 }, () => Array(35).fill(1)),
    ],
  ]);
  assert.equal((await post('/v2/models/m/infer', inferBody(nested), json)).status, 200, 'data nested as its shape is fine');
});

test('infer: FP32 values float32 cannot hold (1e39, 1e400) and NaN in binary tensors are a 400', async () => {
  answered(
    await post('/v2/models/m/infer', inferBody(`[${Array(N).fill('1e39').join(',')}]`), json),
    400,
    /inputs\[0\]\.data: value 1e\+39 at element 0 is not a finite FP32 number/,
    '1e39',
  );
  answered(
    await post(
      '/v2/models/m/infer',
      inferBody(
        `[1,${Array(N - 1)
          .fill('1e400')
          .join(',')}]`,
      ),
      json,
    ),
    400,
    /value Infinity at element 1 is not a finite FP32 number/,
    '1e400',
  );
  const data = new Float32Array(N).fill(1);
  data[7] = NaN;
  const { body, headerLength } = binaryInferBody('data', [1, 3, 35, 35], data);
  answered(
    await post('/v2/models/m/infer', body, { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) }),
    400,
    /the binary value at element 7 is not a finite FP32 number/,
    'binary NaN',
  );
});

test('a model whose weights overflow: :classify and JSON infer answer an error saying so, never a probability of null; binary outputs carry the NaN', async () => {
  answered(
    await post('/v1/models/overflow:classify', photo, { 'content-type': 'image/jpeg' }),
    500,
    /the model's output is NaN for this image \(its weights overflow\)/,
    'classify',
  );
  const ones = `[${Array(N).fill(1).join(',')}]`;
  answered(await post('/v2/models/overflow/infer', inferBody(ones), json), 500, /output logits: the model's value at element 0 is NaN/, 'infer');
  answered(
    await post('/v2/models/overflow/infer', inferBody(ones, ',"outputs":[{"name":"prob","parameters":{"classification":2}}]'), json),
    500,
    /output prob: .* is NaN/,
    'classification',
  );
  const binary = await post('/v2/models/overflow/infer', inferBody(ones, ',"parameters":{"binary_data_output":true}'), json);
  assert.equal(binary.status, 200, binary.text);
});

test('multipart bodies without a boundary or cut short are a 400; too many parts a 413', async () => {
  answered(
    await post('/v1/models/m:classify', 'abc', { 'content-type': 'multipart/form-data' }),
    400,
    /multipart\/form-data body is malformed: Multipart: Boundary not found/,
    'no boundary',
  );
  answered(
    await post('/v1/models/m:classify', '--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\nabc', {
      'content-type': 'multipart/form-data; boundary=XyZ',
    }),
    400,
    /multipart\/form-data body is malformed: Part terminated early/,
    'cut short',
  );
  let many = '';
  for (let i = 0; i < 10_000; i++) many += `--XyZ\r\nContent-Disposition: form-data; name="f${i}"\r\n\r\nx\r\n`;
  assert.equal((await post('/v1/models/m:classify', `${many}--XyZ--\r\n`, { 'content-type': 'multipart/form-data; boundary=XyZ' })).status, 413);
});

test('what held: lying sizes, lengths and shapes, a PNG header bomb, traversal in model names, two inputs; the server is still up', async () => {
  const { body, headerLength } = binaryInferBody('data', [1, 3, 35, 35], new Float32Array(N));
  const header = JSON.parse(body.subarray(0, headerLength).toString()) as { inputs: { parameters: { binary_data_size: number } }[] };
  header.inputs[0].parameters.binary_data_size = 1e15;
  const lying = Buffer.from(JSON.stringify(header));
  answered(
    await post('/v2/models/m/infer', Buffer.concat([lying, body.subarray(headerLength)]), {
      'content-type': 'application/octet-stream',
      'inference-header-content-length': String(lying.length),
    }),
    400,
    /binary_data_size is 1000000000000000; shape \[1,3,35,35\] of FP32 is 14700 bytes/,
    'binary size',
  );
  answered(
    await post('/v2/models/m/infer', body, { 'content-type': 'application/octet-stream', 'inference-header-content-length': '99999999999' }),
    400,
    /Inference-Header-Content-Length is "99999999999"/,
    'header length',
  );
  answered(
    await post('/v2/models/m/infer', '{"inputs":[{"name":"data","shape":[1000000000000,3,35,35],"datatype":"FP32","data":[1]}]}', json),
    400,
    /batch size 1000000000000 is more than the server's --max-batch/,
    'shape',
  );
  // A PNG whose header claims 65535x65535 over a few bytes of data.
  const chunk = (type: string, data: Buffer) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([Buffer.from(type), data])));
    return Buffer.concat([length, Buffer.from(type), data, crc]);
  };
  const ihdr = Buffer.from([0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 8, 2, 0, 0, 0]);
  const bomb = Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.alloc(1000))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
  answered(
    await post('/v1/models/m:classify', bomb, { 'content-type': 'image/png' }),
    422,
    /declares 65535x65535 = 4294836225 pixels, more than --max-pixels/,
    'png bomb',
  );
  const traversal = await fetch(`${server.url}/v2/models/..%2F..%2Fetc%2Fpasswd`);
  assert.equal(traversal.status, 404);
  const one = `{"name":"data","shape":[1,3,35,35],"datatype":"FP32","data":[${Array(N).fill(1).join(',')}]}`;
  answered(await post('/v2/models/m/infer', `{"inputs":[${one},${one}]}`, json), 400, /inputs holds 2 tensors; model m has one input/, 'two inputs');
  assert.equal((await fetch(`${server.url}/v2/health/ready`)).status, 200);
});

function nanModel(): Uint8Array {
  const weights = initParameters(spec, 1);
  weights['conv1.weight'][0] = NaN;
  return encodeModel(lowerInference(spec, weights, { classNames: ['a', 'b', 'c', 'd'], meanChannels: [100, 110, 120], imageSize: 40 }));
}

test('reload of a model file replaced by a FIFO, /dev/zero, a truncated or a NaN model: refused at once, the loaded version keeps serving', async () => {
  const live = p('live.onnx');
  copyFileSync(p('good.onnx'), live);
  const reloading = await startServe(['--model', `live=${live}`, '--drain-timeout-ms', '2000'], dir);
  try {
    const load = () =>
      fetch(`${reloading.url}/v2/repository/models/live/load`, { method: 'POST', signal: AbortSignal.timeout(20_000) }).then(async (r) => ({
        status: r.status,
        text: await r.text(),
      }));
    const replace = (make: () => void) => {
      rmSync(live, { force: true });
      make();
    };
    const cases: [string, () => void, RegExp][] = [
      ['fifo', () => execFileSync('mkfifo', [live]), /cannot read the model \(not a regular file \(a FIFO \(named pipe\)\)\)/],
      ['/dev/zero', () => symlinkSync('/dev/zero', live), /cannot read the model \(not a regular file \(a character device\)\)/],
      ['truncated', () => writeFileSync(live, readFileSync(p('good.onnx')).subarray(0, 5000)), /not a readable ONNX model .*is the file truncated/],
      ['NaN weights', () => writeFileSync(live, nanModel()), /initializer "conv1\.weight" holds NaN at index 0: the model's weights are damaged/],
    ];
    for (const [what, make, pattern] of cases) {
      replace(make);
      const r = await load();
      assert.equal(r.status, 400, `${what}: ${r.text}`);
      const error = (JSON.parse(r.text) as { error: string }).error;
      assert.match(error, pattern, what);
      assert.match(error, /version 1 keeps serving/, what);
      const classified = await fetch(`${reloading.url}/v1/models/live:classify`, { method: 'POST', body: photo, headers: { 'content-type': 'image/jpeg' } });
      assert.equal(classified.status, 200, `${what}: still served`);
    }
  } finally {
    await reloading.stop();
  }
});
