#!/usr/bin/env node
// Inference throughput of the exported full AlexNet (theano-alexnet, 1000 classes, 227x227) on
// this machine's cores, against the raw onnxruntime ceiling measured in the same run: the same
// graph, the same session options, `session.run` on one preallocated input tensor in a loop.
//   1. InferenceModel.run (our wrapper) at batch 1 and 32   vs the ceiling at batch 1 and 32
//   2. `predict` end to end on JPEG files (read, decode + squash to 256, center crop, mean
//      subtraction, inference, top-5 lines) at batch 32      vs the ceiling at batch 32 (target >= 0.70)
// Measurements alternate (ceiling, ours, ceiling, ...) and each figure is the median of its
// rounds, so that load from other processes hits both sides alike.
// Run: npm run bench:inference (builds first). BENCH_SECONDS (default 4) per measurement round,
// BENCH_ROUNDS (default 3), BENCH_IMAGES (default 192) JPEGs of 500x375 (ImageNet's typical size).
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, availableParallelism } from 'node:os';
import { join } from 'node:path';
const require = createRequire(import.meta.url);
const sharp = require('sharp');
const { alexnetSpec, initParameters } = require('../libs/model-alexnet/dist/index.js');
const { lowerInference, writeOnnx, InferenceModel, sessionOptions, loadOnnxRuntime, runPredict } = require('../libs/onnx-export/dist/index.js');
const ort = loadOnnxRuntime(); // telemetry off before onnxruntime loads (libs/onnx-export/src/onnxruntime.ts)
// predict's image decoding, as the CLI wires it: stream-io's decode of a file (squashed).
const { decodeImageFile, describeDecodeError } = require('../libs/stream-io/dist/index.js');
const decoder = { decode: async (path, size) => (await decodeImageFile(path, { size, resize: 'squash' })).data, describe: describeDecodeError };

const seconds = Number(process.env.BENCH_SECONDS ?? 4);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const imageCount = Number(process.env.BENCH_IMAGES ?? 192);
const cores = availableParallelism();
const TARGET = 0.7;
const dir = mkdtempSync(join(tmpdir(), 'bench-inference-'));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

try {
  // The model: full AlexNet, seeded weights, per-channel means in the metadata (as predict uses).
  const spec = alexnetSpec('theano-alexnet');
  const weights = initParameters(spec, 1);
  const modelPath = join(dir, 'alexnet.onnx');
  writeOnnx(modelPath, lowerInference(spec, weights, { meanChannels: [122.7, 114.9, 101.6] }));

  // JPEGs: smooth colour fields plus noise (compresses like a photo), quality 90, 500x375.
  const images = [];
  for (let i = 0; i < imageCount; i++) {
    const w = 500,
      h = 375,
      px = Buffer.alloc(w * h * 3);
    let s = ((i + 1) * 2654435761) >>> 0;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        const noise = (s >>> 27) - 16;
        const o = (y * w + x) * 3;
        px[o] = Math.max(0, Math.min(255, 128 + 100 * Math.sin((x + i * 7) / 40) + noise));
        px[o + 1] = Math.max(0, Math.min(255, 128 + 100 * Math.cos((y + i * 3) / 30) + noise));
        px[o + 2] = Math.max(0, Math.min(255, (((x * y) >> 7) % 256) + noise));
      }
    const path = join(dir, `img-${String(i).padStart(4, '0')}.jpg`);
    writeFileSync(
      path,
      await sharp(px, { raw: { width: w, height: h, channels: 3 } })
        .jpeg({ quality: 90 })
        .toBuffer(),
    );
    images.push(path);
  }

  // CPU time per image (all threads of this process: onnxruntime's and sharp's): on a machine
  // shared with other work, wall-clock rates depend on the others; CPU time per image much less.
  const cpuMs = { ceiling1: [], ceiling32: [], predict32: [] };
  const cpuMsSince = (start) => {
    const d = process.cpuUsage(start);
    return (d.user + d.system) / 1000;
  };
  const options = sessionOptions();
  const session = await ort.InferenceSession.create(modelPath, options);
  const ceilingRound = async (n) => {
    const input = new ort.Tensor(
      'float32',
      new Float32Array(n * 3 * 227 * 227).map((_, i) => (i % 251) - 125),
      [n, 3, 227, 227],
    );
    await session.run({ data: input }); // warm up
    let count = 0;
    const start = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    let elapsed = 0;
    while (elapsed < seconds) {
      await session.run({ data: input });
      count += n;
      elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    }
    cpuMs[`ceiling${n}`].push(cpuMsSince(cpu0) / count);
    return count / elapsed;
  };
  const model = await InferenceModel.load(modelPath);
  const oursRound = async (n) => {
    const batch = new Float32Array(n * model.inputLength).map((_, i) => (i % 251) - 125);
    await model.run(batch, n);
    let count = 0;
    const start = process.hrtime.bigint();
    let elapsed = 0;
    while (elapsed < seconds) {
      await model.run(batch, n);
      count += n;
      elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    }
    return count / elapsed;
  };
  const predictRound = async (allowSpinning) => {
    let lines = 0;
    const summary = await runPredict(images, {
      model: modelPath,
      decoder,
      topk: 5,
      batchSize: 32,
      allowSpinning,
      write: (text) => {
        lines += text.split('\n').length - 1;
      },
    });
    if (lines !== images.length || summary.predicted !== images.length) throw new Error(`predict printed ${lines} lines for ${images.length} images`);
    if (allowSpinning === undefined) cpuMs.predict32.push((1000 * summary.cpuSeconds) / summary.predicted);
    return summary.predicted / summary.seconds;
  };

  const results = { ceiling1: [], ours1: [], ceiling32: [], ours32: [], predict32: [], predict32spinning: [] };
  for (let r = 0; r < rounds; r++) {
    results.ceiling1.push(await ceilingRound(1));
    results.ours1.push(await oursRound(1));
    results.ceiling32.push(await ceilingRound(32));
    results.ours32.push(await oursRound(32));
    results.predict32.push(await predictRound(undefined)); // predict's default: no spinning
    results.predict32spinning.push(await predictRound(true));
    results.ceiling32.push(await ceilingRound(32));
  }
  await model.close();
  await session.release();

  const m = Object.fromEntries(Object.entries(results).map(([k, v]) => [k, median(v)]));
  const line = (name, value, base) => `${name.padEnd(46)} ${value.toFixed(1).padStart(7)} img/s   ${(value / base).toFixed(2)}x of the ceiling`;
  console.log(
    `inference: full AlexNet (theano-alexnet, 1000 classes, 227x227), ${cores} cores, onnxruntime-node ${require('onnxruntime-node/package.json').version}`,
  );
  console.log(
    `session: graphOptimizationLevel ${options.graphOptimizationLevel}, intraOpNumThreads ${options.intraOpNumThreads}, executionMode ${options.executionMode}; median of ${rounds} rounds of ${seconds} s`,
  );
  console.log(`${'raw session.run ceiling, batch 1'.padEnd(46)} ${m.ceiling1.toFixed(1).padStart(7)} img/s`);
  console.log(line('InferenceModel.run, batch 1', m.ours1, m.ceiling1));
  console.log(`${'raw session.run ceiling, batch 32'.padEnd(46)} ${m.ceiling32.toFixed(1).padStart(7)} img/s`);
  console.log(line('InferenceModel.run, batch 32', m.ours32, m.ceiling32));
  console.log(line(`predict end to end, ${imageCount} JPEGs 500x375, batch 32`, m.predict32, m.ceiling32));
  console.log(line('  the same with onnxruntime threads spinning', m.predict32spinning, m.ceiling32));
  const ratio = m.predict32 / m.ceiling32;
  console.log(`predict / ceiling at batch 32: ${ratio.toFixed(2)} (target >= ${TARGET.toFixed(2)}): ${ratio >= TARGET ? 'met' : 'NOT met'}`);
  const c = Object.fromEntries(Object.entries(cpuMs).map(([k, v]) => [k, median(v)]));
  console.log(
    `CPU time per image (ms): ceiling batch 32 ${c.ceiling32.toFixed(1)}, predict batch 32 ${c.predict32.toFixed(1)}; ` +
      `CPU-bound estimate of predict / ceiling: ${(c.ceiling32 / c.predict32).toFixed(2)}`,
  );
  console.log(
    `load average at the end: ${(await import('node:os'))
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')} on ${cores} cores`,
  );
  console.log(
    `per round (img/s): ${Object.entries(results)
      .map(([k, v]) => `${k} [${v.map((x) => x.toFixed(0)).join(', ')}]`)
      .join('; ')}`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
