#!/usr/bin/env node
/**
 * Decode benchmark (the issue's target): decode + squash-resize to 256x256 of ImageNet-sized
 * photographic JPEGs (~500x375, quality 75-95, ~40-150 KB), end to end through
 * `scan | decode | batch --out-dir` (real processes, real pipes, shards written), against
 * baselines measured in the same run on the same files:
 *   - Pillow, 2 processes (multiprocessing.Pool(2)), draft mode + BILINEAR resize: the
 *     classic Python preprocessing; measured when a python3 with PIL is found;
 *   - plain sharp: `sharp(buf).resize(256, 256, { fit: 'fill' }).raw().toBuffer()`, 4 in flight.
 * Ours decodes plain JPEGs with libjpeg-turbo and resizes them with WebAssembly kernels, and
 * everything else with libvips (libs/stream-io/src/decode.ts); --explore also times the parts.
 * Every variant runs --reps times, interleaved (so load drifts hit all alike); the median is
 * reported, with the CPU time per image of every process the variant started (start-ups and
 * warm-ups included), which does not depend on what else the machine runs. Target: ours >= 0.8x Pillow-2-process.
 *
 *   node bench/decode.mjs [--images 800] [--reps 3] [--workers] [--explore]
 *
 * --workers adds the end-to-end pipeline with 0 and 1 decode worker threads (the default is one
 * per core); --explore adds those and the sharp configurations tried while tuning (see the
 * docs/speed.md "Decode").
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir, availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
// BENCH_CLI: another launcher of the same commands (for machines without the trainer's dependencies)
const CLI = process.env.BENCH_CLI ? resolve(process.env.BENCH_CLI) : join(ROOT, 'apps/cli/bin/alexnet-stream.js');
const SIZE = 256;

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

// ---------------------------------------------------------------------------------------------
// Photo-like test images: smooth gradients + low-frequency waves + textured ellipses + noise.
// Pure function of the index (own RNG), so the set is the same on every machine.
function photo(seed, w, h) {
  const { Rng } = require(join(ROOT, 'libs/core/dist/index.js'));
  const rng = new Rng(seed);
  const r = () => rng.nextFloat();
  const img = new Float32Array(w * h * 3);
  for (let c = 0; c < 3; c++) {
    const b = r() * 200 + 20,
      gx = r() * 80 - 40,
      gy = r() * 80 - 40;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) img[(y * w + x) * 3 + c] = b + (gx * x) / w + (gy * y) / h;
  }
  for (let k = 0; k < 6; k++) {
    const fx = ((r() * 6 + 0.5) * 2 * Math.PI) / w,
      fy = ((r() * 6 + 0.5) * 2 * Math.PI) / h,
      ph = r() * 6.28,
      a = r() * 40,
      c = Math.floor(r() * 3);
    const sx = new Float32Array(w),
      cx = new Float32Array(w);
    for (let x = 0; x < w; x++) {
      sx[x] = Math.sin(fx * x + ph);
      cx[x] = Math.cos(fx * x + ph);
    }
    for (let y = 0; y < h; y++) {
      const sy = Math.sin(fy * y),
        cy = Math.cos(fy * y);
      for (let x = 0; x < w; x++) img[(y * w + x) * 3 + c] += a * (sx[x] * cy + cx[x] * sy);
    }
  }
  for (let k = 0; k < 8; k++) {
    const ccx = r() * w,
      ccy = r() * h,
      rx = (r() * w) / 5 + 10,
      ry = (r() * h) / 5 + 10,
      col = [r() * 255, r() * 255, r() * 255],
      tex = r() * 0.5;
    for (let y = Math.max(0, Math.floor(ccy - ry)); y < Math.min(h, Math.ceil(ccy + ry)); y++) {
      for (let x = Math.max(0, Math.floor(ccx - rx)); x < Math.min(w, Math.ceil(ccx + rx)); x++) {
        const dx = (x - ccx) / rx,
          dy = (y - ccy) / ry;
        if (dx * dx + dy * dy < 1) {
          const t = 1 + tex * Math.sin(x * 0.3 + y * 0.2),
            o = (y * w + x) * 3;
          img[o] = col[0] * t;
          img[o + 1] = col[1] * t;
          img[o + 2] = col[2] * t;
        }
      }
    }
  }
  const noise = 24 + r() * 24;
  const px = Buffer.alloc(w * h * 3);
  for (let i = 0; i < w * h; i++) {
    const n = (r() - 0.5) * noise;
    for (let c = 0; c < 3; c++) {
      const v = img[i * 3 + c] + n + (r() - 0.5) * noise;
      px[i * 3 + c] = v < 0 ? 0 : Math.min(v, 255);
    }
  }
  return px;
}

const SHAPES = [
  [500, 375],
  [500, 333],
  [375, 500],
  [450, 350],
  [500, 400],
  [400, 300],
  [333, 500],
];

async function ensureDataset(n) {
  const dir = join(tmpdir(), `alexnet-stream-bench-decode-v1-${n}`);
  if (existsSync(join(dir, 'done'))) return dir;
  const sharp = require('sharp');
  rmSync(dir, { recursive: true, force: true });
  process.stderr.write(`generating ${n} photo-like JPEGs in ${dir} ...\n`);
  for (let i = 0; i < n; i++) {
    const [w, h] = SHAPES[i % SHAPES.length];
    const quality = 75 + ((i * 7) % 21);
    const cls = join(dir, `n${String(i % 10).padStart(8, '0')}`);
    mkdirSync(cls, { recursive: true });
    const buf = await sharp(photo(i + 1, w, h), { raw: { width: w, height: h, channels: 3 } })
      .jpeg({ quality })
      .toBuffer();
    writeFileSync(join(cls, `img_${String(i).padStart(6, '0')}.JPEG`), buf);
  }
  writeFileSync(join(dir, 'done'), '');
  return dir;
}

function listFiles(dir) {
  return readdirSync(dir)
    .filter((d) => d.startsWith('n'))
    .sort()
    .flatMap((d) =>
      readdirSync(join(dir, d))
        .sort()
        .map((f) => join(dir, d, f)),
    );
}

// ---------------------------------------------------------------------------------------------
// Workers: each variant runs in a fresh process (sharp's settings are process-wide) and prints
// {"imagesPerSecond": x} for the timed part (after a warm-up).
async function worker(variant, dir) {
  const sharp = require('sharp');
  // knobs for exploring (process-wide sharp settings)
  if (process.env.BENCH_SHARP_CACHE === '0') sharp.cache(false);
  if (process.env.BENCH_SHARP_CONCURRENCY) sharp.concurrency(Number(process.env.BENCH_SHARP_CONCURRENCY));
  const files = listFiles(dir);
  const inFlight = Number(process.env.BENCH_IN_FLIGHT ?? 4);
  const pool = async (op) => {
    const warm = files.slice(0, 16);
    for (const f of warm) await op(f);
    let next = 0;
    const t = performance.now();
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (next < files.length) await op(files[next++]);
      }),
    );
    return files.length / ((performance.now() - t) / 1000);
  };
  const fs = require('node:fs/promises');
  const variants = {
    // the straightforward call everyone writes first
    'sharp-plain': () =>
      pool(async (f) =>
        sharp(await fs.readFile(f))
          .resize(SIZE, SIZE, { fit: 'fill' })
          .raw()
          .toBuffer(),
      ),
    'sharp-decode-only': () =>
      pool(async (f) =>
        sharp(await fs.readFile(f))
          .raw()
          .toBuffer(),
      ),
    // libjpeg-turbo (TurboJPEG) decode alone, what decode's fast path starts with
    'turbo-decode-only': () => {
      const turbo = require(require.resolve('@julusian/jpeg-turbo', { paths: [join(ROOT, 'libs/stream-io')] }));
      return pool(async (f) => turbo.decompress(await fs.readFile(f), { format: turbo.FORMAT_RGB }));
    },
    'sharp-linear': () =>
      pool(async (f) =>
        sharp(await fs.readFile(f))
          .resize(SIZE, SIZE, { fit: 'fill', kernel: 'linear' })
          .raw()
          .toBuffer(),
      ),
    'sharp-linear-seq': () =>
      pool(async (f) =>
        sharp(await fs.readFile(f), { sequentialRead: true })
          .resize(SIZE, SIZE, { fit: 'fill', kernel: 'linear' })
          .raw()
          .toBuffer(),
      ),
    'sharp-linear-c1': () => {
      sharp.concurrency(1);
      return pool(async (f) =>
        sharp(await fs.readFile(f))
          .resize(SIZE, SIZE, { fit: 'fill', kernel: 'linear' })
          .raw()
          .toBuffer(),
      );
    },
    'sharp-linear-c1-nocache': () => {
      sharp.concurrency(1);
      sharp.cache(false);
      return pool(async (f) =>
        sharp(await fs.readFile(f))
          .resize(SIZE, SIZE, { fit: 'fill', kernel: 'linear' })
          .raw()
          .toBuffer(),
      );
    },
    'sharp-linear-file': () => pool((f) => sharp(f).resize(SIZE, SIZE, { fit: 'fill', kernel: 'linear' }).raw().toBuffer()),
    'sharp-nearest': () =>
      pool(async (f) =>
        sharp(await fs.readFile(f))
          .resize(SIZE, SIZE, { fit: 'fill', kernel: 'nearest' })
          .raw()
          .toBuffer(),
      ),
    // bilinear interpolation by an affine transform (no antialiasing, unlike Pillow's BILINEAR)
    'sharp-affine': () =>
      pool(async (f) => {
        const buf = await fs.readFile(f);
        const { width, height } = await sharp(buf).metadata();
        return sharp(buf)
          .affine([SIZE / width, 0, 0, SIZE / height], { interpolator: sharp.interpolators.bilinear })
          .extract({ left: 0, top: 0, width: SIZE, height: SIZE })
          .raw()
          .toBuffer();
      }),
    // decode in one libvips pipeline, resize the raw pixels in a second
    'sharp-2pass': () =>
      pool(async (f) => {
        const { data, info } = await sharp(await fs.readFile(f))
          .raw()
          .toBuffer({ resolveWithObject: true });
        return sharp(data, { raw: { width: info.width, height: info.height, channels: info.channels } })
          .resize(SIZE, SIZE, { fit: 'fill', kernel: 'linear' })
          .raw()
          .toBuffer();
      }),
    // this process does every other file; run two of these at once (see 'sharp-linear-2proc')
    'sharp-linear-half': () => {
      const part = Number(process.env.BENCH_PART);
      const mine = files.filter((_, i) => i % 2 === part);
      files.length = 0;
      files.push(...mine);
      return pool(async (f) =>
        sharp(await fs.readFile(f))
          .resize(SIZE, SIZE, { fit: 'fill', kernel: 'linear' })
          .raw()
          .toBuffer(),
      );
    },
    decodeImage: () => {
      const { decodeImage } = require(join(ROOT, 'libs/stream-io/dist/decode.js'));
      return pool(async (f) => decodeImage(await fs.readFile(f), { size: SIZE, resize: 'squash' }));
    },
    decodeWithLibvips: () => {
      const { decodeWithLibvips } = require(join(ROOT, 'libs/stream-io/dist/decode.js'));
      sharp.cache(false);
      return pool(async (f) => decodeWithLibvips(await fs.readFile(f), { size: SIZE, resize: 'squash' }));
    },
    // the library stages in one process: scan → DecodeStage → BatchStage → discard
    stages: async () => {
      const io = require(join(ROOT, 'libs/stream-io/dist/index.js'));
      const { Readable, Writable } = require('node:stream');
      const { pipeline } = require('node:stream/promises');
      const run = async (items) => {
        const t = performance.now();
        await pipeline(
          Readable.from(io.wholeStream(io.makeHeader('item', {}), items)),
          new io.DecodeStage({ size: SIZE, resize: 'squash', concurrency: process.env.BENCH_CONCURRENCY ? Number(process.env.BENCH_CONCURRENCY) : undefined }),
          new io.BatchStage({ batchSize: 256 }),
          new Writable({
            objectMode: true,
            write(_r, _e, cb) {
              cb();
            },
          }),
        );
        return items.length / ((performance.now() - t) / 1000);
      };
      io.tuneSharpForDecoding(); // as the CLI's decode does
      const { items } = await io.listClassFolders(dir);
      await run(items.slice(0, 16));
      return run(items);
    },
  };
  if (!variants[variant]) throw new Error(`unknown variant ${variant}`);
  process.stdout.write(`${JSON.stringify({ imagesPerSecond: await variants[variant]() })}\n`);
}

const PILLOW = `
import os, sys, time
from multiprocessing import Pool
from PIL import Image
def work(path):
    im = Image.open(path)
    im.draft('RGB', (${SIZE}, ${SIZE}))
    im = im.convert('RGB').resize((${SIZE}, ${SIZE}), Image.BILINEAR)
    return len(im.tobytes())
if __name__ == '__main__':
    files = sys.argv[1:]
    with Pool(2) as pool:
        pool.map(work, files[:16])
        t = time.time()
        pool.map(work, files, chunksize=8)
        print(len(files) / (time.time() - t))
`;

function findPython() {
  for (const py of [process.env.PYTHON, 'python3', '/usr/bin/python3'].filter(Boolean)) {
    const r = spawnSync(py, ['-c', 'import PIL; print(PIL.__version__)'], { encoding: 'utf8' });
    if (r.status === 0) return { py, version: r.stdout.trim() };
  }
  return undefined;
}

/**
 * spawnSync of `script` in bash, with the CPU time (user + system) of everything it started,
 * from bash's `times` (start-ups and warm-ups included): on a machine shared with other work,
 * CPU per image is the load-independent figure, images per second the one that counts.
 */
function spawnWithCpu(script, args, options) {
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', `${script}; s=$?; times >&2; exit $s`, 'bench', ...args], options);
  const last = r.stderr
    .trim()
    .split('\n')
    .pop()
    .match(/(\d+)m([\d.]+)s (\d+)m([\d.]+)s/);
  const cpuSeconds = last ? Number(last[1]) * 60 + Number(last[2]) + Number(last[3]) * 60 + Number(last[4]) : NaN;
  return { ...r, cpuSeconds };
}

let lastCpuSeconds = NaN; // of the last measure(), NaN where not measured

function measure(variant, dir, python, env = {}) {
  lastCpuSeconds = NaN;
  if (variant === 'pillow-2proc') {
    const r = spawnWithCpu('"$@"', [python.py, '-c', PILLOW, ...listFiles(dir)], { encoding: 'utf8', maxBuffer: 1 << 26 });
    if (r.status !== 0) throw new Error(`pillow failed: ${r.stderr}`);
    lastCpuSeconds = r.cpuSeconds;
    return Number(r.stdout.trim());
  }
  if (variant === 'sharp-linear-2proc') {
    // two node processes, each with its own libvips, splitting the files like Pillow's Pool(2)
    const { spawn } = require('node:child_process');
    const t = performance.now();
    return Promise.all(
      [0, 1].map(
        (part) =>
          new Promise((done, fail) => {
            const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--worker', 'sharp-linear-half', '--dir', dir], {
              env: { ...process.env, ...env, BENCH_PART: String(part), BENCH_IN_FLIGHT: '2' },
              stdio: ['ignore', 'ignore', 'inherit'],
            });
            child.on('exit', (code) => (code === 0 ? done() : fail(new Error(`sharp-linear-half exited ${code}`))));
          }),
      ),
    ).then(() => listFiles(dir).length / ((performance.now() - t) / 1000));
  }
  if (variant === 'cli') {
    // real processes and pipes; wall time includes three node start-ups
    const out = join(tmpdir(), `alexnet-stream-bench-decode-shards-${process.pid}`);
    rmSync(out, { recursive: true, force: true });
    const node = `"${process.execPath}" "${CLI}"`;
    const t = performance.now();
    const decodeFlags = env.BENCH_DECODE_FLAGS ?? '';
    const r = spawnWithCpu(
      `${node} scan "${dir}" | ${node} decode --size ${SIZE} ${decodeFlags} | ${node} batch --size 256 --out-dir "${out}" --no-fsync`,
      [],
      { encoding: 'utf8', env: { ...process.env, ALEXNET_STREAM_PROGRESS: '0', ...env } },
    );
    const seconds = (performance.now() - t) / 1000;
    if (r.status !== 0) throw new Error(`cli pipeline failed: ${r.stderr}`);
    lastCpuSeconds = r.cpuSeconds;
    rmSync(out, { recursive: true, force: true });
    return listFiles(dir).length / seconds;
  }
  const r = spawnWithCpu('"$@"', [process.execPath, fileURLToPath(import.meta.url), '--worker', variant, '--dir', dir], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
  // (env carries UV_THREADPOOL_SIZE and the BENCH_* knobs of --explore)
  if (r.status !== 0) throw new Error(`${variant} failed: ${r.stderr}`);
  lastCpuSeconds = r.cpuSeconds;
  return JSON.parse(r.stdout.trim().split('\n').pop()).imagesPerSecond;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  if (process.argv.includes('--worker')) return worker(arg('--worker'), arg('--dir'));
  const n = Number(arg('--images', process.env.BENCH_DECODE_IMAGES ?? 800));
  const reps = Number(arg('--reps', 3));
  const dir = await ensureDataset(n);
  const files = listFiles(dir);
  const kb = files.reduce((s, f) => s + statSync(f).size, 0) / files.length / 1024;
  for (const f of files) readFileSync(f); // page cache warm for everyone
  const python = findPython();
  console.log(
    `decode bench: ${files.length} JPEGs (~500x375, q75-95, mean ${kb.toFixed(0)} KB) → ${SIZE}x${SIZE} RGB; ${availableParallelism()} cores; ${reps} interleaved reps, median`,
  );
  const variants = [];
  if (python) variants.push(['pillow-2proc', `Pillow ${python.version}, 2 processes, draft + BILINEAR (${python.py})`]);
  else console.log('Pillow baseline: no python3 with PIL found (apt-get install python3-pil); ratios against plain sharp only');
  variants.push(['sharp-plain', 'plain sharp: resize(256,256,{fit:fill}).raw(), 4 in flight']);
  if (process.argv.includes('--explore')) {
    variants.push(
      ['sharp-decode-only', 'sharp decode only (no resize), 4 in flight'],
      ['turbo-decode-only', 'libjpeg-turbo (TurboJPEG) decode only (no resize), 4 in flight'],
      ['sharp-linear', 'sharp, kernel linear'],
      ['sharp-linear-seq', 'sharp, kernel linear, sequentialRead'],
      ['sharp-linear-c1', 'sharp, kernel linear, sharp.concurrency(1)'],
      ['sharp-linear-c1-nocache', 'sharp, kernel linear, concurrency(1), cache(false)'],
      ['sharp-linear-file', 'sharp, kernel linear, libvips reads the file'],
      ['sharp-nearest', 'sharp, kernel nearest'],
      ['sharp-affine', 'sharp, metadata + affine bilinear (no antialias)'],
      ['sharp-2pass', 'sharp, decode to raw, then resize raw (2 pipelines)'],
      ['sharp-linear-2proc', 'sharp, kernel linear, 2 processes x 2 in flight (incl. start-up)'],
      ['sharp-linear uv2 f2', 'sharp, kernel linear, UV_THREADPOOL_SIZE=2, 2 in flight', { UV_THREADPOOL_SIZE: '2', BENCH_IN_FLIGHT: '2' }],
      [
        'sharp-linear c2 uv2 f2',
        'sharp, kernel linear, concurrency(2), UV 2, 2 in flight',
        { BENCH_SHARP_CONCURRENCY: '2', UV_THREADPOOL_SIZE: '2', BENCH_IN_FLIGHT: '2' },
      ],
      ['decodeImage', 'decodeImage (ours, pure function), 4 in flight'],
      ['decodeWithLibvips', 'decodeWithLibvips (ours before the JPEG fast path), 4 in flight'],
    );
  }
  variants.push(['stages', 'ours in-process: DecodeStage → BatchStage(256), sharp.cache(false)']);
  if (process.argv.includes('--explore')) {
    for (const [uv, conc] of [
      [2, 2],
      [4, 8],
      [8, 8],
      [8, 16],
    ]) {
      variants.push([
        `stages uv${uv} c${conc}`,
        `  same, UV_THREADPOOL_SIZE=${uv}, concurrency ${conc}`,
        { UV_THREADPOOL_SIZE: String(uv), BENCH_CONCURRENCY: String(conc) },
      ]);
    }
  }
  const withCli = !process.env.BENCH_SKIP_CLI;
  if (withCli) variants.push(['cli', 'ours end to end: scan | decode | batch --size 256 --out-dir (3 processes)']);
  else console.log('end-to-end CLI pipeline skipped (BENCH_SKIP_CLI)');
  if (withCli && (process.argv.includes('--explore') || process.argv.includes('--workers'))) {
    variants.push(['cli workers0', '  same, decode --workers 0 (no worker threads)', { BENCH_DECODE_FLAGS: '--workers 0' }]);
    variants.push(['cli workers1', '  same, decode --workers 1', { BENCH_DECODE_FLAGS: '--workers 1' }]);
  }
  const results = Object.fromEntries(variants.map(([v]) => [v, []]));
  const cpu = Object.fromEntries(variants.map(([v]) => [v, []]));
  for (let rep = 0; rep < reps; rep++) {
    for (const [v, , env] of variants) {
      results[v].push(await measure(v.split(' ')[0], dir, python, env));
      cpu[v].push((lastCpuSeconds * 1000) / files.length);
    }
  }
  const base = python ? median(results['pillow-2proc']) : undefined;
  const plain = median(results['sharp-plain']);
  for (const [v, label] of variants) {
    const m = median(results[v]);
    const ratios = `${base ? `${(m / base).toFixed(2)}x Pillow-2proc, ` : ''}${(m / plain).toFixed(2)}x plain sharp`;
    const cpuMs = median(cpu[v]);
    const cpuText = Number.isNaN(cpuMs) ? '' : `  ${cpuMs.toFixed(1)} CPU-ms/img`;
    console.log(`  ${label.padEnd(78)} ${m.toFixed(0).padStart(5)} img/s  (${ratios})  [${results[v].map((x) => x.toFixed(0)).join(', ')}]${cpuText}`);
  }
  const [oursName, ours] = withCli ? ['end-to-end', median(results.cli)] : ['in-process stages', median(results.stages)];
  if (base) console.log(`${oursName} ratio: ${(ours / base).toFixed(2)}x Pillow-2-process (target >= 0.8x)`);
  console.log(`${oursName} ratio: ${(ours / plain).toFixed(2)}x plain sharp`);
}

main().catch((err) => {
  console.error(err.stack ?? err);
  process.exit(1);
});
