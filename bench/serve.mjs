#!/usr/bin/env node
// `alexnet-stream serve` under load against the raw onnxruntime ceiling measured in the same run.
// Model: the full exported theano-alexnet (1000 classes, 227x227, seeded weights). Images:
// ImageNet-sized JPEGs (500x375, quality 90). The server runs as its own process (the CLI, default
// options: one inference worker with all cores as intra-op threads, one decode worker per core);
// closed-loop clients in this process (node:http, keep-alive) send requests at concurrency 1, 8 and 32 for
//   - POST /v1/models/m:classify  (a JPEG body: decode + preprocessing + inference + top-5)
//   - POST /v2/models/m/infer      (Triton binary tensors: a preprocessed 3x227x227 float32 image in, prob out)
// and report images/s and p50/p99 latency. The ceiling: one InferenceSession in this process with
// the server's session options and threads, `session.run` on a preallocated tensor of the same
// batch size (1, 8, 32) in a loop; its images/s, and the latency of a single batch-1 run.
// Targets (issue): classify at c=32 >= 0.70 of the ceiling's batch-32 images/s; binary infer
// >= 0.85; p99 at c=1 <= 1.5x a single raw run (its median).
// Run: npm run bench:serve. BENCH_SECONDS (default 6) per point, BENCH_IMAGES (default 64),
// BENCH_WORKERS / BENCH_THREADS (server --workers / --threads; the ceiling uses the same threads),
// BENCH_DELAY_MS (--max-queue-delay-ms, default 2), BENCH_POINTS (e.g. classify32,binary1: only those),
// BENCH_SERVER_NODE_ARGS (node flags for the server process, e.g. '--cpu-prof --cpu-prof-dir=DIR').
import { createRequire } from 'node:module';
import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir, availableParallelism, cpus, loadavg } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
const require = createRequire(import.meta.url);
const sharp = require('sharp');
const { alexnetSpec, initParameters } = require('../libs/model-alexnet/dist/index.js');
const { lowerInference, writeOnnx, sessionOptions, loadOnnxRuntime } = require('../libs/onnx-export/dist/index.js');
const ort = loadOnnxRuntime(); // telemetry off before onnxruntime loads (libs/onnx-export/src/onnxruntime.ts)
const { decodeImage, cropMirrorSubtract, centerOffset } = require('../libs/stream-io/dist/index.js');

const here = dirname(fileURLToPath(import.meta.url));
const seconds = Number(process.env.BENCH_SECONDS ?? 6);
const imageCount = Number(process.env.BENCH_IMAGES ?? 64);
const cores = availableParallelism();
const workers = Number(process.env.BENCH_WORKERS ?? 1);
const threads = Number(process.env.BENCH_THREADS ?? Math.max(1, Math.floor(cores / workers)));
const delayMs = Number(process.env.BENCH_DELAY_MS ?? 2);
// Node flags for the server process only, e.g. BENCH_SERVER_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'.
const serverNodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
const MEAN = [122.7, 114.9, 101.6];
const dir = mkdtempSync(join(tmpdir(), 'bench-serve-'));
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
};
let server;

try {
  const spec = alexnetSpec('theano-alexnet');
  const modelPath = join(dir, 'alexnet.onnx');
  writeOnnx(modelPath, lowerInference(spec, initParameters(spec, 1), { meanChannels: MEAN }));

  // JPEGs: smooth colour fields plus noise (compresses like a photo), as bench/inference.mjs.
  const jpegs = [];
  for (let i = 0; i < imageCount; i++) {
    const w = 500,
      h = 375,
      px = Buffer.alloc(w * h * 3);
    let s = ((i + 1) * 2654435761) >>> 0;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        const noise = (s >>> 27) - 16,
          o = (y * w + x) * 3;
        px[o] = Math.max(0, Math.min(255, 128 + 100 * Math.sin((x + i * 7) / 40) + noise));
        px[o + 1] = Math.max(0, Math.min(255, 128 + 100 * Math.cos((y + i * 3) / 30) + noise));
        px[o + 2] = Math.max(0, Math.min(255, (((x * y) >> 7) % 256) + noise));
      }
    jpegs.push(
      await sharp(px, { raw: { width: w, height: h, channels: 3 } })
        .jpeg({ quality: 90 })
        .toBuffer(),
    );
  }
  // Binary infer bodies: the same images preprocessed as the server would (decode, crop, mean).
  const size = 256,
    crop = 227,
    off = centerOffset(size, crop);
  const meanImage = { channels: 3, height: size, width: size, data: new Float32Array(3 * size * size).map((_, i) => MEAN[Math.floor(i / (size * size))]) };
  const binaryBodies = [];
  for (const j of jpegs.slice(0, 16)) {
    const img = await decodeImage(j, { size, resize: 'squash' });
    const x = cropMirrorSubtract(
      { type: 'batch', dtype: 'uint8', shape: [1, 3, size, size], layout: 'NCHW', data: img.data, labels: new Int32Array(1), keys: [''] },
      meanImage,
      { crop, offsetY: Int32Array.of(off), offsetX: Int32Array.of(off), mirror: new Uint8Array(1) },
    );
    const bytes = Buffer.from(x.buffer, x.byteOffset, x.byteLength);
    const header = Buffer.from(
      JSON.stringify({
        inputs: [{ name: 'data', shape: [1, 3, crop, crop], datatype: 'FP32', parameters: { binary_data_size: bytes.length } }],
        outputs: [{ name: 'prob', parameters: { binary_data_output: true } }],
      }),
    );
    binaryBodies.push({ body: Buffer.concat([header, bytes]), headerLength: header.length });
  }

  // ---- the ceiling ----
  const options = sessionOptions({ intraOpNumThreads: threads });
  const session = await ort.InferenceSession.create(modelPath, options);
  const ceiling = { 1: [], 8: [], 32: [] };
  const singleRunMs = [];
  const cpuPerImage = [];
  const ceilingRound = async (n) => {
    const input = new ort.Tensor(
      'float32',
      new Float32Array(n * 3 * crop * crop).map((_, i) => (i % 251) - 125),
      [n, 3, crop, crop],
    );
    await session.run({ data: input });
    let count = 0,
      elapsed = 0;
    const start = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    while (elapsed < seconds / 2) {
      const t = process.hrtime.bigint();
      await session.run({ data: input });
      if (n === 1) singleRunMs.push(Number(process.hrtime.bigint() - t) / 1e6);
      count += n;
      elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    }
    if (n === 32) {
      const c = process.cpuUsage(cpu0);
      cpuPerImage.push((c.user + c.system) / 1000 / count);
    }
    ceiling[n].push(count / elapsed);
  };
  for (const n of [1, 8, 32]) await ceilingRound(n);

  // ---- the server ----
  const cli = join(here, '../apps/cli/bin/alexnet-stream.js');
  server = spawn(
    process.execPath,
    [
      ...serverNodeArgs,
      cli,
      'serve',
      '--model',
      `m=${modelPath}`,
      '--port',
      '0',
      '--workers',
      String(workers),
      '--threads',
      String(threads),
      '--max-queue-delay-ms',
      String(delayMs),
      '--log-level',
      'info',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let logged = '';
  server.stderr.on('data', (d) => {
    logged += d;
  });
  const url = await new Promise((resolve, reject) => {
    server.on('exit', (code) => reject(new Error(`serve exited ${code}: ${logged}`)));
    const started = Date.now();
    const poll = () => {
      const m = /"url":"(http:\/\/[^"]+)".*"msg":"listening"/.exec(logged);
      if (m) resolve(m[1]);
      else if (Date.now() - started > 120_000) reject(new Error('serve did not start'));
      else setTimeout(poll, 100);
    };
    poll();
  });
  const metricsText = async () => (await fetch(`${url}/metrics`)).text();
  const metric = (text, name, labels = '') => {
    const line = text.split('\n').find((l) => l.split(/[{ ]/)[0] === name && l.includes(labels));
    return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : NaN;
  };

  // The clients share the machine's cores with the server, so they must be light: node:http with
  // keep-alive costs ~1.1 ms of CPU per 618 KB request here, undici's fetch ~4.5 ms (measured).
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const { hostname, port } = new URL(url);
  const post = (path, headers, body) =>
    new Promise((resolve, reject) => {
      const req = http.request({ hostname, port, path, method: 'POST', agent, headers: { ...headers, 'content-length': body.length } }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
      });
      req.on('error', reject);
      req.end(body);
    });
  const classify = async (i) => {
    const res = await post('/v1/models/m:classify?topk=5', { 'content-type': 'image/jpeg' }, jpegs[i % jpegs.length]);
    const body = JSON.parse(res.body.toString('utf8'));
    if (res.status !== 200 || body.predictions[0].top.length !== 5) throw new Error(`classify: ${res.status} ${JSON.stringify(body)}`);
  };
  const binary = async (i) => {
    const b = binaryBodies[i % binaryBodies.length];
    const res = await post(
      '/v2/models/m/infer',
      { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(b.headerLength) },
      b.body,
    );
    if (res.status !== 200 || res.body.length < 4000) throw new Error(`infer: ${res.status} ${res.body.toString()}`);
  };
  // CPU seconds of the server's main (HTTP) thread, from /proc (Linux; NaN elsewhere): its own
  // cost per image, apart from onnxruntime's and the decoders' threads.
  const mainThreadCpuS = () => {
    try {
      const fields = readFileSync(`/proc/${server.pid}/task/${server.pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks (USER_HZ 100)
    } catch {
      return Number.NaN;
    }
  };
  const point = async (fn, concurrency) => {
    // Warm-up, then a timed closed loop.
    await Promise.all(Array.from({ length: concurrency }, (_, c) => fn(c)));
    const m0 = await metricsText();
    const main0 = mainThreadCpuS();
    const latencies = [];
    let next = 0,
      stop = false;
    const start = performance.now();
    const client = async () => {
      while (!stop) {
        const t = performance.now();
        await fn(next++);
        latencies.push(performance.now() - t);
      }
    };
    const timer = setTimeout(() => {
      stop = true;
    }, seconds * 1000);
    await Promise.all(Array.from({ length: concurrency }, client));
    clearTimeout(timer);
    const elapsed = (performance.now() - start) / 1000;
    const main1 = mainThreadCpuS();
    const m1 = await metricsText();
    const d = (name, labels) => metric(m1, name, labels) - metric(m0, name, labels);
    const images = d('alexnet_serve_batch_size_sum', 'model="m"');
    return {
      rate: latencies.length / elapsed,
      p50: pct(latencies, 0.5),
      p99: pct(latencies, 0.99),
      meanBatch: images / d('alexnet_serve_batch_size_count', 'model="m"'),
      cpuMsPerImage: (1000 * d('alexnet_serve_process_cpu_seconds_total')) / images,
      mainCpuMsPerImage: (1000 * (main1 - main0)) / images,
      inferMsPerImage: (1000 * d('alexnet_serve_inference_duration_seconds_sum', 'model="m"')) / images,
      decodeMs: (1000 * d('alexnet_serve_decode_duration_seconds_sum', 'model="m"')) / d('alexnet_serve_decode_duration_seconds_count', 'model="m"'),
      queueMs: (1000 * d('alexnet_serve_queue_duration_seconds_sum', 'model="m"')) / d('alexnet_serve_queue_duration_seconds_count', 'model="m"'),
      // Share of the time the inference workers were inside session.run (idle gaps = pipeline bubbles).
      workerBusy: d('alexnet_serve_inference_duration_seconds_sum', 'model="m"') / elapsed / workers,
    };
  };
  const results = {};
  const only = process.env.BENCH_POINTS?.split(','); // e.g. classify32,binary1
  for (const [name, fn] of [
    ['classify', classify],
    ['binary', binary],
  ]) {
    for (const c of [1, 8, 32]) if (!only || only.includes(`${name}${c}`)) results[`${name}${c}`] = await point(fn, c);
  }
  await ceilingRound(32); // again, after the server runs: the ceiling is the median of both
  await ceilingRound(1);

  const median = (xs) => pct(xs, 0.5);
  const ceil = { 1: median(ceiling[1]), 8: median(ceiling[8]), 32: median(ceiling[32]) };
  const single = median(singleRunMs);
  console.log(
    `serve: full AlexNet (theano-alexnet, 1000 classes, 227x227), ${imageCount} JPEGs 500x375, ${cores} cores (${cpus()[0].model}), onnxruntime-node ${require('onnxruntime-node/package.json').version}`,
  );
  console.log(
    `server: --workers ${workers} --threads ${threads}, decode workers ${cores}, max batch 32, queue delay ${delayMs} ms; clients in the bench process; ${seconds} s per point`,
  );
  console.log(
    `ceiling (one session, ${threads} threads): batch 1 ${ceil[1].toFixed(1)} img/s (single run median ${single.toFixed(1)} ms, p99 ${pct(singleRunMs, 0.99).toFixed(1)} ms), batch 8 ${ceil[8].toFixed(1)}, batch 32 ${ceil[32].toFixed(1)} img/s; CPU ${median(cpuPerImage).toFixed(1)} ms/img at batch 32`,
  );
  console.log(
    'endpoint    conc   img/s  x ceiling(batch=conc)   p50 ms   p99 ms  mean batch  server CPU ms/img  decode ms/img  queue ms  worker busy  main thread CPU ms/img',
  );
  for (const [key, r] of Object.entries(results)) {
    const c = Number(key.replace(/\D+/, ''));
    console.log(
      `${key.replace(/\d+$/, '').padEnd(10)} ${String(c).padStart(5)} ${r.rate.toFixed(1).padStart(7)} ${(r.rate / ceil[c]).toFixed(2).padStart(8)}            ${r.p50.toFixed(1).padStart(8)} ${r.p99.toFixed(1).padStart(8)} ${r.meanBatch.toFixed(1).padStart(10)} ${r.cpuMsPerImage.toFixed(1).padStart(14)}  ${Number.isNaN(r.decodeMs) ? '     -' : r.decodeMs.toFixed(1).padStart(10)}  ${r.queueMs.toFixed(1).padStart(8)}  ${(100 * r.workerBusy).toFixed(0).padStart(9)}%  ${r.mainCpuMsPerImage.toFixed(2).padStart(12)}`,
    );
  }
  const t1 = results.classify32?.rate / ceil[32],
    t2 = results.binary32?.rate / ceil[32],
    t3 = results.classify1?.p99 / single,
    t4 = results.binary1?.p99 / single;
  const verdict = (ok) => (ok ? 'met' : 'NOT met');
  console.log(`classify c=32 / ceiling batch 32: ${t1.toFixed(2)} (target >= 0.70): ${verdict(t1 >= 0.7)}`);
  console.log(`binary infer c=32 / ceiling batch 32: ${t2.toFixed(2)} (target >= 0.85): ${verdict(t2 >= 0.85)}`);
  console.log(
    `p99 at c=1 / a single raw run: classify ${t3.toFixed(2)}, binary infer ${t4.toFixed(2)} (target <= 1.5): ${verdict(t3 <= 1.5)} / ${verdict(t4 <= 1.5)}`,
  );
  console.log(
    `(for scale, under this machine's load: p99 at c=1 / the raw single run's own p99: classify ${(results.classify1?.p99 / pct(singleRunMs, 0.99)).toFixed(2)}, binary ${(results.binary1?.p99 / pct(singleRunMs, 0.99)).toFixed(2)}; p50 at c=1 / its median: classify ${(results.classify1?.p50 / single).toFixed(2)}, binary ${(results.binary1?.p50 / single).toFixed(2)})`,
  );
  console.log(
    `CPU-bound estimate at c=32 (ceiling CPU ms/img / server CPU ms/img): classify ${(median(cpuPerImage) / results.classify32?.cpuMsPerImage).toFixed(2)}, binary ${(median(cpuPerImage) / results.binary32?.cpuMsPerImage).toFixed(2)} (the clients' own CPU, in this process, is not counted)`,
  );
  console.log(
    `load average at the end: ${loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')} on ${cores} cores`,
  );
  await session.release();
} finally {
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((r) => server.on('exit', r));
  }
  rmSync(dir, { recursive: true, force: true });
}
