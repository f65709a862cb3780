/**
 * `alexnet-stream serve` against real HTTP on a loopback port, with Node's fetch, serving a
 * small model made by the export path: `:classify` equals `alexnet-stream predict`, v2 infer
 * (JSON nested and flat, binary tensors) equals InferenceModel, metadata and health answer as
 * KServe v2 says, and every limit / bad input gets its status code with a clear message and no
 * stack trace. Then a bounded load test (concurrency 32), batching, and the client-gone case.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { request } from 'node:http';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { GraphBuilder, InferenceModel, int, ints, loadOnnxRuntime, writeOnnx } from '@alexnet-stream/onnx-export';
import { centerOffset, decodeImage } from '@alexnet-stream/stream-io';
import { binaryInferBody, CLASS_NAMES, CLI, meanBatch, metric, type ServerProcess, splitBinaryResponse, startServe, writeSmallModel } from './serve-helpers';

const root = mkdtempSync(join(tmpdir(), 'serve-'));
const modelPath = join(root, 'small.onnx');
let images: string[] = [];
let server: ServerProcess;
let base: string;
const INPUT = 3 * 227 * 227;

interface Top {
  index: number;
  label?: string;
  prob: number;
}

function jpeg(path: string): Promise<Response> {
  return fetch(`${base}/v1/models/small:classify?topk=6`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: readFileSync(path) });
}

/** A deterministic input batch (values in the range of mean-subtracted pixels). */
function inputBatch(n: number, seed: number): Float32Array {
  const x = new Float32Array(n * INPUT);
  let s = seed >>> 0;
  for (let i = 0; i < x.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = ((s >>> 8) / (1 << 24)) * 255 - 128;
  }
  return x;
}

before(async () => {
  writeSmallModel(modelPath);
  const r = spawnSync(process.execPath, [CLI, 'make-demo-data', '--out', join(root, 'demo'), '--train-per-class', '1', '--val-per-class', '2'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  images = readdirSync(join(root, 'demo', 'val'))
    .filter((f) => f.endsWith('.jpg'))
    .sort()
    .map((f) => join(root, 'demo', 'val', f));
  server = await startServe(['--model', `small=${modelPath}`, '--log-level', 'debug'], root);
  base = server.url;
});

after(async () => {
  const code = await server?.stop();
  assert.equal(code, 0, 'SIGTERM: the server drains and exits 0');
});

describe('serve: answers', () => {
  test(':classify gives the top-k and probabilities of `alexnet-stream predict` (<= 1e-5), raw body and multipart', async () => {
    const p = spawnSync(process.execPath, [CLI, 'predict', '--model', modelPath, '--json', '--topk', '6', ...images], { encoding: 'utf8' });
    assert.equal(p.status, 0, p.stderr);
    const expected = p.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { path: string; top: Top[] });
    const compare = (got: Top[], want: Top[], what: string) => {
      assert.equal(got.length, 6, what);
      for (const w of want) {
        const g = got.find((t) => t.index === w.index)!;
        // Same preprocessing code and model; only the batch composition differs (float32 sums).
        assert.ok(Math.abs(g.prob - w.prob) <= 1e-5, `${what} class ${w.index}: ${g.prob} vs predict ${w.prob}`);
        assert.equal(g.label, w.label);
      }
      assert.deepEqual(
        got.map((t) => t.index),
        want.map((t) => t.index),
        `${what}: same order`,
      );
    };
    for (const [i, path] of images.entries()) {
      const res = await jpeg(path);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
      const body = (await res.json()) as {
        model_name: string;
        model_version: string;
        predictions: { top: Top[]; width: number; timings_ms: Record<string, number> }[];
      };
      assert.equal(body.model_name, 'small');
      assert.equal(body.predictions.length, 1);
      compare(body.predictions[0].top, expected[i].top, path);
      for (const k of ['decode', 'queue', 'inference']) assert.ok(body.predictions[0].timings_ms[k] >= 0, k);
    }
    const form = new FormData();
    for (const path of images.slice(0, 4)) form.append('image', new Blob([readFileSync(path)], { type: 'image/jpeg' }), path.split('/').pop());
    const res = await fetch(`${base}/v1/models/small:classify?topk=6`, { method: 'POST', body: form });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { predictions: { filename: string; top: Top[] }[] };
    assert.equal(body.predictions.length, 4);
    body.predictions.forEach((p, i) => {
      assert.equal(p.filename, images[i].split('/').pop());
      compare(p.top, expected[i].top, `multipart ${i}`);
    });
    const top2 = (await (
      await fetch(`${base}/v1/models/small:classify?topk=2`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: readFileSync(images[0]) })
    ).json()) as { predictions: { top: Top[] }[] };
    assert.deepEqual(
      top2.predictions[0].top.map((t) => t.index),
      expected[0].top.slice(0, 2).map((t) => t.index),
    );
  });

  test('v2 infer: JSON (nested and flat) and binary tensors give the logits and probabilities of InferenceModel', async () => {
    const model = await InferenceModel.load(modelPath);
    const x = inputBatch(3, 7);
    const ref = await model.run(x, 3);
    const logits = ref.logits.slice();
    const prob = ref.prob.slice();
    await model.close();
    const close = (got: ArrayLike<number>, want: Float32Array, what: string) => {
      assert.equal(got.length, want.length, what);
      // float32 in both; a different batch in the server could change summation order only.
      for (let i = 0; i < want.length; i++)
        assert.ok(Math.abs(got[i] - want[i]) <= 1e-5 * Math.max(1, Math.abs(want[i])), `${what}[${i}]: ${got[i]} vs ${want[i]}`);
    };
    // Flat data, both outputs.
    const flat = await fetch(`${base}/v2/models/small/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'r1', inputs: [{ name: 'data', shape: [3, 3, 227, 227], datatype: 'FP32', data: Array.from(x) }] }),
    });
    assert.equal(flat.status, 200);
    const fb = (await flat.json()) as { id: string; model_name: string; outputs: { name: string; datatype: string; shape: number[]; data: number[] }[] };
    assert.equal(fb.id, 'r1');
    assert.deepEqual(
      fb.outputs.map((o) => [o.name, o.datatype, o.shape]),
      [
        ['logits', 'FP32', [3, 6]],
        ['prob', 'FP32', [3, 6]],
      ],
    );
    close(fb.outputs[0].data, logits, 'flat logits');
    close(fb.outputs[1].data, prob, 'flat prob');
    // Nested data (image 1 alone as [1,3,227,227] nested lists), one output asked.
    const one = x.subarray(INPUT, 2 * INPUT);
    const nested = Array.from({ length: 3 }, (_, c) =>
      Array.from({ length: 227 }, (_, y) => Array.from(one.subarray((c * 227 + y) * 227, (c * 227 + y + 1) * 227))),
    );
    const nr = await fetch(`${base}/v2/models/small/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: [{ name: 'data', shape: [1, 3, 227, 227], datatype: 'FP32', data: [nested] }], outputs: [{ name: 'logits' }] }),
    });
    assert.equal(nr.status, 200);
    const nb = (await nr.json()) as { outputs: { name: string; data: number[] }[] };
    assert.deepEqual(
      nb.outputs.map((o) => o.name),
      ['logits'],
    );
    close(nb.outputs[0].data, logits.subarray(6, 12), 'nested logits');
    // Binary in, binary out (Triton's extension).
    const { body, headerLength } = binaryInferBody('data', [3, 3, 227, 227], x, { parameters: { binary_data_output: true } });
    const br = await fetch(`${base}/v2/models/small/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) },
      body,
    });
    assert.equal(br.status, 200);
    assert.equal(br.headers.get('content-type'), 'application/octet-stream');
    const { header, binary } = splitBinaryResponse(Buffer.from(await br.arrayBuffer()), Number(br.headers.get('inference-header-content-length')));
    assert.deepEqual(
      header.outputs.map((o: { name: string; parameters: { binary_data_size: number } }) => [o.name, o.parameters.binary_data_size]),
      [
        ['logits', 72],
        ['prob', 72],
      ],
    );
    const copy = Uint8Array.from(binary); // aligned, its own buffer
    close(new Float32Array(copy.buffer, copy.byteOffset, 18), logits, 'binary logits');
    close(new Float32Array(copy.buffer, copy.byteOffset + 72, 18), prob, 'binary prob');
    // Classification extension: top 2 as "score:index:label".
    const cr = await fetch(`${base}/v2/models/small/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        inputs: [{ name: 'data', shape: [1, 3, 227, 227], datatype: 'FP32', data: Array.from(one) }],
        outputs: [{ name: 'prob', parameters: { classification: 2 } }],
      }),
    });
    const cb = (await cr.json()) as { outputs: { datatype: string; shape: number[]; data: string[] }[] };
    const row = Array.from(prob.subarray(6, 12));
    const order = row.map((v, j) => [v, j]).sort((a, b) => b[0] - a[0]);
    assert.deepEqual(cb.outputs[0].shape, [1, 2]);
    assert.deepEqual(
      cb.outputs[0].data.map((s) => s.split(':').slice(1).join(':')),
      order.slice(0, 2).map(([, j]) => `${j}:${CLASS_NAMES[j]}`),
    );
  });

  test('health, server and model metadata, readiness, stats, repository index', async () => {
    const live = await fetch(`${base}/v2/health/live`);
    assert.equal(live.status, 200);
    assert.equal((await fetch(`${base}/v2/health/ready`)).status, 200);
    const meta = (await (await fetch(`${base}/v2`)).json()) as { name: string; extensions: string[] };
    assert.equal(meta.name, 'alexnet-stream');
    assert.ok(meta.extensions.includes('binary_tensor_data'));
    const m = (await (await fetch(`${base}/v2/models/small`)).json()) as Record<string, unknown>;
    assert.deepEqual(m.inputs, [{ name: 'data', datatype: 'FP32', shape: [-1, 3, 227, 227] }]);
    assert.deepEqual(m.outputs, [
      { name: 'logits', datatype: 'FP32', shape: [-1, 6] },
      { name: 'prob', datatype: 'FP32', shape: [-1, 6] },
    ]);
    assert.equal(m.platform, 'onnxruntime_onnx');
    assert.equal((await fetch(`${base}/v2/models/small/ready`)).status, 200);
    assert.equal((await fetch(`${base}/v2/models/small/versions/1`)).status, 200);
    const stats = (await (await fetch(`${base}/v2/models/small/stats`)).json()) as {
      model_stats: { name: string; inference_count: number; execution_count: number; mean_batch_size: number }[];
    };
    assert.equal(stats.model_stats[0].name, 'small');
    assert.ok(stats.model_stats[0].inference_count >= stats.model_stats[0].execution_count && stats.model_stats[0].execution_count > 0);
    const index = (await (await fetch(`${base}/v2/repository/index`, { method: 'POST' })).json()) as { name: string; state: string }[];
    assert.deepEqual(
      index.map((e) => [e.name, e.state]),
      [['small', 'READY']],
    );
    const metrics = await (await fetch(`${base}/metrics`)).text();
    for (const name of [
      'alexnet_serve_requests_total',
      'alexnet_serve_request_duration_seconds_bucket',
      'alexnet_serve_queue_duration_seconds_bucket',
      'alexnet_serve_inference_duration_seconds_bucket',
      'alexnet_serve_batch_size_bucket',
      'alexnet_serve_queue_depth',
      'alexnet_serve_images_decoded_total',
      'alexnet_serve_process_resident_memory_bytes',
    ]) {
      assert.ok(text(metrics).includes(`\n${name}`), `metrics has ${name}`);
    }
    assert.ok(metric(metrics, 'alexnet_serve_requests_total', 'endpoint="classify",code="200"') >= 1);
  });
});

function text(s: string): string {
  return `\n${s}`;
}

/** status, {error} body with a message matching `message`, and no stack trace. */
async function refused(res: Promise<Response> | Response, status: number, message: RegExp): Promise<Response> {
  const r = await res;
  const body = await r.text();
  assert.equal(r.status, status, `expected ${status}, got ${r.status}: ${body}`);
  const json = JSON.parse(body) as { error: string };
  assert.match(json.error, message);
  assert.doesNotMatch(body, /\n\s+at |\.js:\d+/, 'no stack trace');
  return r;
}

describe('serve: bad input and limits', () => {
  const post = (path: string, type: string, body: string | Buffer | FormData, headers: Record<string, string> = {}) =>
    fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': type, ...headers }, body });
  const infer = (body: unknown) => post('/v2/models/small/infer', 'application/json', JSON.stringify(body));

  test('unknown model or route: 404; unsupported content type: 415; not an image: 422 naming why', async () => {
    await refused(fetch(`${base}/v2/models/nope`), 404, /no model named "nope"/);
    await refused(post('/v1/models/nope:classify', 'image/jpeg', readFileSync(images[0])), 404, /no model named "nope"/);
    await refused(post('/v1/models/small:predict', 'image/jpeg', readFileSync(images[0])), 404, /:classify/);
    await refused(fetch(`${base}/v3/anything`), 404, /no route GET \/v3\/anything/);
    await refused(post('/v1/models/small:classify', 'text/plain', 'hello'), 415, /not text\/plain/);
    await refused(post('/v1/models/small:classify', 'application/x-whatever', 'hello'), 415, /unsupported content type/);
    await refused(post('/v1/models/small:classify', 'application/json', '{}'), 415, /not application\/json/);
    await refused(post('/v2/models/small/infer', 'image/jpeg', readFileSync(images[0])), 415, /infer takes application\/json/);
    await refused(post('/v1/models/small:classify', 'image/jpeg', 'this is not a JPEG'), 422, /not an image/);
    const truncated = readFileSync(images[0]).subarray(0, 700);
    await refused(post('/v1/models/small:classify', 'image/jpeg', truncated), 422, /truncated|corrupt|premature|image/i);
    await refused(post('/v1/models/small:classify', 'image/jpeg', Buffer.alloc(0)), 422, /empty image|no image/);
    const form = new FormData();
    form.append('a', new Blob([readFileSync(images[0])]), 'good.jpg');
    form.append('b', new Blob([Buffer.from('garbage')]), 'bad.jpg');
    await refused(fetch(`${base}/v1/models/small:classify`, { method: 'POST', body: form }), 422, /image 2 \(bad\.jpg\): not an image/);
    await refused(
      fetch(`${base}/v1/models/small:classify?topk=abc`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: readFileSync(images[0]) }),
      400,
      /topk/,
    );
  });

  test('malformed JSON, wrong tensor name / datatype / shape / byte size: 400 naming the field', async () => {
    await refused(post('/v2/models/small/infer', 'application/json', '{"inputs": ['), 400, /JSON/);
    await refused(infer({}), 400, /body must have required property 'inputs'/);
    await refused(infer({ inputs: [{ name: 'data', shape: 'x', datatype: 'FP32', data: [] }] }), 400, /body\/inputs\/0\/shape must be array/);
    await refused(
      infer({ inputs: [{ name: 'image', shape: [1, 3, 227, 227], datatype: 'FP32', data: [] }] }),
      400,
      /inputs\[0\]\.name: model small has no input "image"/,
    );
    await refused(
      infer({ inputs: [{ name: 'data', shape: [1, 3, 227, 227], datatype: 'UINT8', data: [] }] }),
      400,
      /inputs\[0\]\.datatype is UINT8; model input data is FP32/,
    );
    await refused(infer({ inputs: [{ name: 'data', shape: [1, 3, 224, 224], datatype: 'FP32', data: [] }] }), 400, /inputs\[0\]\.shape is \[1,3,224,224\]/);
    await refused(
      infer({ inputs: [{ name: 'data', shape: [1, 3, 227, 227], datatype: 'FP32', data: [1, 2, 3] }] }),
      400,
      /inputs\[0\]\.data holds 3 values; shape \[1,3,227,227\] needs 154587/,
    );
    await refused(
      infer({ inputs: [{ name: 'data', shape: [1, 3, 227, 227], datatype: 'FP32', data: [[1, 'x']] }] }),
      400,
      /inputs\[0\]\.data: element 1 is string/,
    );
    await refused(
      infer({ inputs: [{ name: 'data', shape: [33, 3, 227, 227], datatype: 'FP32', data: [] }] }),
      400,
      /batch size 33 is more than the server's --max-batch 32/,
    );
    await refused(
      infer({ inputs: [{ name: 'data', shape: [1, 3, 227, 227], datatype: 'FP32', data: [] }], outputs: [{ name: 'features' }] }),
      400,
      /outputs\[0\]\.name: model small has no output "features"/,
    );
    const x = inputBatch(1, 1);
    const { body, headerLength } = binaryInferBody('data', [1, 3, 227, 227], x);
    const bin = (b: Buffer, h: string | undefined) =>
      post('/v2/models/small/infer', 'application/octet-stream', b, h === undefined ? {} : { 'inference-header-content-length': h });
    await refused(bin(body.subarray(0, body.length - 4), String(headerLength)), 400, /binary part is 618344 bytes; inputs declare 618348/);
    await refused(bin(body, undefined), 400, /Inference-Header-Content-Length/);
    await refused(bin(body, 'abc'), 400, /Inference-Header-Content-Length is "abc"/);
    await refused(bin(body, String(headerLength - 3)), 400, /JSON header .* is not valid JSON/);
    const wrongSize = Buffer.concat([
      Buffer.from(JSON.stringify({ inputs: [{ name: 'data', shape: [1, 3, 227, 227], datatype: 'FP32', parameters: { binary_data_size: 100 } }] })),
      Buffer.alloc(100),
    ]);
    await refused(bin(wrongSize, String(wrongSize.length - 100)), 400, /binary_data_size is 100; shape \[1,3,227,227\] of FP32 is 618348 bytes/);
  });
});

describe('serve: load, batching, client gone', () => {
  test('a bounded load test at concurrency 32: no 5xx, every answer correct, batches > 1, the server healthy and its RSS back near where it was', async () => {
    // Expected answer per image, and a warm-up before the RSS baseline.
    const expected: Top[] = [];
    for (const path of images) expected.push(((await (await jpeg(path)).json()) as { predictions: { top: Top[] }[] }).predictions[0].top[0]);
    const x = inputBatch(1, 11);
    const xb = binaryInferBody('data', [1, 3, 227, 227], x, { outputs: [{ name: 'prob', parameters: { binary_data_output: true } }] });
    const xProb = Buffer.from(
      await (
        await fetch(`${base}/v2/models/small/infer`, {
          method: 'POST',
          headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(xb.headerLength) },
          body: xb.body,
        })
      ).arrayBuffer(),
    ).subarray(-24);
    const before = await (await fetch(`${base}/metrics`)).text();
    const rssBefore = metric(before, 'alexnet_serve_process_resident_memory_bytes');
    const batchesBefore = metric(before, 'alexnet_serve_batch_size_count', 'model="small"');
    const imagesBefore = metric(before, 'alexnet_serve_batch_size_sum', 'model="small"');
    const total = 2000;
    let next = 0;
    const statuses = new Map<number, number>();
    let wrong = 0;
    const started = Date.now();
    const worker = async () => {
      for (let i = next++; i < total; i = next++) {
        let ok: boolean;
        let status: number;
        if (i % 2 === 0) {
          const k = (i >> 1) % images.length;
          const res = await jpeg(images[k]);
          status = res.status;
          const top = ((await res.json()) as { predictions?: { top: Top[] }[] }).predictions?.[0].top[0];
          ok = !!top && top.index === expected[k].index && Math.abs(top.prob - expected[k].prob) <= 1e-5;
        } else {
          const res = await fetch(`${base}/v2/models/small/infer`, {
            method: 'POST',
            headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(xb.headerLength) },
            body: xb.body,
          });
          status = res.status;
          const got = Buffer.from(await res.arrayBuffer()).subarray(-24);
          // Copies into buffers of their own (Buffer.from would take a slice of Node's shared pool).
          const a = new Float32Array(Uint8Array.from(got).buffer);
          const b = new Float32Array(Uint8Array.from(xProb).buffer);
          ok = a.every((v, j) => Math.abs(v - b[j]) <= 1e-5);
        }
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (status === 200 && !ok) wrong++;
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    const seconds = (Date.now() - started) / 1000;
    assert.deepEqual([...statuses.entries()], [[200, total]], `statuses: ${JSON.stringify([...statuses.entries()])}`);
    assert.equal(wrong, 0, 'every answer equals the single-request answer');
    assert.equal((await fetch(`${base}/v2/health/ready`)).status, 200);
    const afterText = await (await fetch(`${base}/metrics`)).text();
    const batches = metric(afterText, 'alexnet_serve_batch_size_count', 'model="small"') - batchesBefore;
    const rows = metric(afterText, 'alexnet_serve_batch_size_sum', 'model="small"') - imagesBefore;
    assert.equal(rows, total, 'every request ran once');
    assert.ok(rows / batches > 1, `mean batch size at concurrency 32: ${rows / batches}`);
    assert.equal(metric(afterText, 'alexnet_serve_queue_depth', 'model="small"'), 0);
    assert.equal(metric(afterText, 'alexnet_serve_inflight_requests'), 0, 'every admitted request released its slot');
    // Give the GC a moment, then RSS: near the warm baseline (the load allocated ~2000 x 0.6 MB).
    await new Promise((r) => setTimeout(r, 1000));
    const rssAfter = metric(await (await fetch(`${base}/metrics`)).text(), 'alexnet_serve_process_resident_memory_bytes');
    assert.ok(rssAfter < rssBefore + 192 * 2 ** 20, `RSS ${Math.round(rssBefore / 2 ** 20)} MiB before, ${Math.round(rssAfter / 2 ** 20)} MiB after`);
    process.stderr.write(
      `# load: ${total} requests in ${seconds.toFixed(1)} s, mean batch ${(rows / batches).toFixed(2)}, RSS ${Math.round(rssBefore / 2 ** 20)} -> ${Math.round(rssAfter / 2 ** 20)} MiB\n`,
    );
  });

  test('one client at a time: every batch holds 1 image, and latency is that of a server without batching (no queue delay: nobody is on the way)', async () => {
    const unbatched = await startServe(['--model', `small=${modelPath}`, '--max-batch', '1'], root);
    const delayed = await startServe(['--model', `small=${modelPath}`, '--max-queue-delay-ms', '25'], root);
    try {
      const body = readFileSync(images[0]);
      const time = async (url: string) => {
        const ms: number[] = [];
        for (let i = 0; i < 24; i++) {
          const t = performance.now();
          const r = await fetch(`${url}/v1/models/small:classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body });
          await r.arrayBuffer();
          if (i >= 4) ms.push(performance.now() - t);
        }
        return ms.sort((a, b) => a - b)[ms.length >> 1];
      };
      const a = await time(unbatched.url);
      const b = await time(delayed.url);
      const m = await (await fetch(`${delayed.url}/metrics`)).text();
      assert.equal(meanBatch(m, 'small'), 1, 'one client: batches of 1');
      // With nobody else on the way the 25 ms delay is not waited; 10 ms of tolerance for a shared, noisy machine.
      assert.ok(b <= a + 10, `median latency ${b.toFixed(1)} ms with a 25 ms queue delay vs ${a.toFixed(1)} ms without batching`);
    } finally {
      assert.equal(await unbatched.stop(), 0);
      assert.equal(await delayed.stop(), 0);
    }
  });
});

describe('serve: queue limits, deadlines, auth, sizes', () => {
  test('queue full: 429 with Retry-After; still queued at the deadline: 503; a client that goes away frees its slot', async () => {
    // Batches wait up to 2 s for company while another request is on its way, and a request may
    // wait 400 ms. "On its way": a multipart upload that a slow client has begun and not finished.
    const s = await startServe(['--model', `small=${modelPath}`, '--max-queue', '2', '--max-queue-delay-ms', '2000', '--timeout-ms', '400'], root);
    try {
      const body = readFileSync(images[0]);
      const classify = (signal?: AbortSignal) =>
        fetch(`${s.url}/v1/models/small:classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body, signal });
      const { hostname, port } = new URL(s.url);
      const slow = request({
        hostname,
        port,
        method: 'POST',
        path: '/v1/models/small:classify',
        headers: { 'content-type': 'multipart/form-data; boundary=XyZ' },
      });
      const slowDone = new Promise<void>((resolve) => {
        slow.on('error', () => resolve());
        slow.on('response', (r) => {
          r.resume();
          r.on('end', resolve);
        });
      });
      slow.write('--XyZ\r\nContent-Disposition: form-data; name="a"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n');
      slow.write(body.subarray(0, 100));
      await new Promise((r) => setTimeout(r, 200));
      const first = classify(); // queued behind the delay: the slow upload may still join its batch
      await new Promise((r) => setTimeout(r, 150));
      const second = await refused(classify(), 429, /--max-queue 2/);
      assert.equal(second.headers.get('retry-after'), '1');
      await refused(first, 503, /still queued 400 ms after it arrived \(--timeout-ms 400\)/);
      // Client gone: abort while queued; the slot and the queued row are freed.
      const controller = new AbortController();
      const gone = classify(controller.signal).catch((e: Error) => e);
      await new Promise((r) => setTimeout(r, 150));
      controller.abort();
      assert.equal(((await gone) as Error).name, 'AbortError');
      await new Promise((r) => setTimeout(r, 100));
      const m = await (await fetch(`${s.url}/metrics`)).text();
      assert.equal(metric(m, 'alexnet_serve_inflight_requests'), 1, 'only the slow upload holds a slot');
      assert.equal(metric(m, 'alexnet_serve_queue_depth', 'model="small"'), 0);
      assert.equal(metric(m, 'alexnet_serve_requests_total', 'code="499"'), 1);
      assert.ok(!(metric(m, 'alexnet_serve_batch_size_count', 'model="small"') > 0), 'neither the timed-out nor the abandoned request ran');
      slow.destroy();
      await slowDone;
    } finally {
      assert.equal(await s.stop(), 0);
    }
  });

  test('token auth (health excepted), body limit 413, decompression bomb 422 undecoded, non-loopback warning', async () => {
    const tokenFile = join(root, 'token');
    writeFileSync(tokenFile, 'correct-horse-battery-staple\n');
    const s = await startServe(['--model', `small=${modelPath}`, '--token-file', tokenFile, '--body-limit-mb', '0.5', '--max-pixels', '1e6'], root);
    try {
      const auth = { authorization: 'Bearer correct-horse-battery-staple' };
      assert.equal((await fetch(`${s.url}/v2/health/live`)).status, 200);
      assert.equal((await fetch(`${s.url}/v2/health/ready`)).status, 200);
      const r401 = await refused(fetch(`${s.url}/v2/models/small`), 401, /bearer token/);
      assert.equal(r401.headers.get('www-authenticate'), 'Bearer');
      await refused(fetch(`${s.url}/v2/models/small`, { headers: { authorization: 'Bearer wrong-token-wrong-token' } }), 401, /bearer token/);
      await refused(fetch(`${s.url}/metrics`), 401, /bearer token/);
      assert.equal((await fetch(`${s.url}/v2/models/small`, { headers: auth })).status, 200);
      const classify = (body: Buffer, type = 'image/jpeg') =>
        fetch(`${s.url}/v1/models/small:classify`, { method: 'POST', headers: { 'content-type': type, ...auth }, body });
      assert.equal((await classify(readFileSync(images[0]))).status, 200);
      await refused(classify(Buffer.alloc(600 * 1024)), 413, /too large|exceeds|body/i);
      // A JPEG whose frame header claims 5000 x 4000 (20 Mpx) but holds a small image's data.
      const small = readFileSync(images[0]);
      const bomb = Buffer.from(small);
      let p = 2;
      while (!(bomb[p] === 0xff && bomb[p + 1] >= 0xc0 && bomb[p + 1] <= 0xc2)) p += 2 + bomb.readUInt16BE(p + 2);
      bomb.writeUInt16BE(4000, p + 5);
      bomb.writeUInt16BE(5000, p + 7);
      await refused(classify(bomb), 422, /declares 5000x4000 = 20000000 pixels, more than --max-pixels 1000000; it was not decoded/);
      // Not a JPEG: the size comes from libvips' header reader.
      const png = await sharp({ create: { width: 1250, height: 1000, channels: 3, background: { r: 10, g: 200, b: 30 } } })
        .png()
        .toBuffer();
      await refused(classify(png, 'image/png'), 422, /declares 1250x1000 = 1250000 pixels/);
      const m = await (await fetch(`${s.url}/metrics`, { headers: auth })).text();
      assert.equal(metric(m, 'alexnet_serve_images_rejected_total', 'reason="too_many_pixels"'), 2);
    } finally {
      assert.equal(await s.stop(), 0);
    }
    const open = await startServe(['--model', `small=${modelPath}`, '--host', '0.0.0.0'], root);
    try {
      assert.ok(
        open.log.some((l) => l.includes('"level":40') && l.includes('without --token-file')),
        'a warning when binding a non-loopback address without a token',
      );
    } finally {
      assert.equal(await open.stop(), 0);
    }
  });

  test('bad start-up: a missing or broken model file, a bad flag: exit 2 with one clear line', () => {
    const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'serve', '--port', '0', ...args], { encoding: 'utf8', cwd: root, timeout: 60_000 });
    const missing = run(['--model', join(root, 'nope.onnx')]);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /nope\.onnx: no such file/);
    const cut = join(root, 'cut.onnx');
    writeFileSync(cut, readFileSync(modelPath).subarray(0, 5000));
    const broken = run(['--model', cut]);
    assert.equal(broken.status, 2, broken.stderr);
    assert.match(broken.stderr, /cut\.onnx: not a readable ONNX model/);
    assert.doesNotMatch(broken.stderr, /\n\s+at /);
    const flag = run(['--model', modelPath, '--max-batch', '0']);
    assert.equal(flag.status, 2);
    assert.match(flag.stderr, /--max-batch/);
  });
});

describe('serve: a model not exported by alexnet-stream', () => {
  test('v2 infer works as it is; :classify refuses until given --mean/--std, then preprocesses as told (resize, crop, mean, std)', async () => {
    // conv 3x3 -> relu -> global average pool -> fc to 4 classes, input x [N, 3, 40, 40], logits only.
    const g = new GraphBuilder('foreign');
    const w = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.1);
    let v = g.input('x', 'float32', ['N', 3, 40, 40]);
    v = g.op('Relu', [
      g.op('Conv', [v, g.initializer('c.w', w(8 * 27, 1), [8, 3, 3, 3]), g.initializer('c.b', w(8, 2), [8])], {
        kernel_shape: ints([3, 3]),
        pads: ints([1, 1, 1, 1]),
      }),
    ]);
    v = g.op('Flatten', [g.op('GlobalAveragePool', [v])], { axis: int(1) });
    g.output(g.op('Gemm', [v, g.initializer('f.w', w(32, 3), [4, 8]), g.initializer('f.b', w(4, 4), [4])], { transB: int(1) }), 'float32', ['N', 4]);
    const foreign = join(root, 'foreign.onnx');
    writeOnnx(foreign, g.model());
    const labels = join(root, 'labels.txt');
    writeFileSync(labels, 'w\nx\ny\nz\n');
    const bare = await startServe(['--model', `f=${foreign}`], root);
    try {
      const meta = (await (await fetch(`${bare.url}/v2/models/f`)).json()) as { inputs: unknown; outputs: unknown };
      assert.deepEqual(meta.inputs, [{ name: 'x', datatype: 'FP32', shape: [-1, 3, 40, 40] }]);
      assert.deepEqual(
        (meta.outputs as { datatype: string; shape: number[] }[]).map((o) => [o.datatype, o.shape]),
        [['FP32', [-1, 4]]],
      );
      const infer = await fetch(`${bare.url}/v2/models/f/infer`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ inputs: [{ name: 'x', shape: [1, 3, 40, 40], datatype: 'FP32', data: new Array(4800).fill(1) }] }),
      });
      assert.equal(infer.status, 200);
      await refused(
        fetch(`${bare.url}/v1/models/f:classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: readFileSync(images[0]) }),
        400,
        /no mean in its metadata: serve it with --mean/,
      );
    } finally {
      assert.equal(await bare.stop(), 0);
    }
    const mean = [100, 110, 120];
    const std = [50, 60, 70];
    const told = await startServe(
      ['--model', `f=${foreign}`, '--mean', mean.join(','), '--std', std.join(','), '--size', '48', '--resize', 'center-crop', '--labels', labels],
      root,
    );
    try {
      const res = await fetch(`${told.url}/v1/models/f:classify?topk=4`, {
        method: 'POST',
        headers: { 'content-type': 'image/jpeg' },
        body: readFileSync(images[0]),
      });
      assert.equal(res.status, 200);
      const top = ((await res.json()) as { predictions: { top: Top[] }[] }).predictions[0].top;
      // Reference computed here: decode (shorter side to 48, center), center crop 40, (x - mean) / std, onnxruntime, softmax.
      const img = await decodeImage(readFileSync(images[0]), { size: 48, resize: 'center-crop' });
      const o = centerOffset(48, 40);
      const x = new Float32Array(3 * 40 * 40);
      for (let c = 0; c < 3; c++)
        for (let y = 0; y < 40; y++) for (let xx = 0; xx < 40; xx++) x[(c * 40 + y) * 40 + xx] = (img.data[(c * 48 + y + o) * 48 + xx + o] - mean[c]) / std[c];
      const ort = loadOnnxRuntime();
      const session = await ort.InferenceSession.create(foreign);
      const out = (await session.run({ x: new ort.Tensor('float32', x, [1, 3, 40, 40]) }))[session.outputNames[0]].data as Float32Array;
      await session.release();
      const max = Math.max(...out);
      const e = Array.from(out, (v) => Math.exp(v - max));
      const sum = e.reduce((a, b) => a + b, 0);
      for (const t of top) {
        assert.ok(Math.abs(t.prob - e[t.index] / sum) <= 1e-5, `class ${t.index}: ${t.prob} vs ${e[t.index] / sum}`);
        assert.equal(t.label, 'wxyz'[t.index]);
      }
    } finally {
      assert.equal(await told.stop(), 0);
    }
  });
});
