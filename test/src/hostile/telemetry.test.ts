/**
 * Nothing outside the paths a user gave (issue 11, item 5). onnxruntime-node 1.30 writes
 * `$TMPDIR/mat-debug-<pid>.log`, `$TMPDIR/.ses` and a device id with a telemetry queue under
 * `~/.cache/Microsoft/DeveloperTools/.onnxruntime/` unless its telemetry is off; every process
 * must load it through onnx-export's `loadOnnxRuntime()`, which turns it off first.
 *
 * Each command runs with HOME, TMPDIR and the XDG dirs pointed at empty directories and an empty
 * working directory: afterwards they must still be empty, and /tmp must hold no log of its pid.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import sharp from 'sharp';
import { tinySpec, writeFixtureDataDir, writeSpecFile } from '@alexnet-stream/trainer-multigpu/testing';

const REPO = resolve(__dirname, '../../..');
const CLI = join(REPO, 'apps/cli/bin/alexnet-stream.js');
const root = mkdtempSync(join(tmpdir(), 'hostile-telemetry-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

function listAll(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    out.push(relative(dir, path));
    if (statSync(path).isDirectory()) out.push(...listAll(path).map((p) => join(name, p)));
  }
  return out;
}

/** Run the CLI in a sandbox of empty HOME/TMPDIR/XDG/cwd; returns the result and what appeared there. */
function runIsolated(args: string[]) {
  const sandbox = mkdtempSync(join(root, 'sandbox-'));
  const dirs = {
    HOME: join(sandbox, 'home'),
    TMPDIR: join(sandbox, 'tmp'),
    XDG_CACHE_HOME: join(sandbox, 'cache'),
    XDG_CONFIG_HOME: join(sandbox, 'config'),
    cwd: join(sandbox, 'cwd'),
  };
  for (const d of Object.values(dirs)) mkdirSync(d);
  const { cwd, ...env } = dirs;
  // ORT_DISABLE_TELEMETRY is removed from the environment: the program itself must set it.
  const parentEnv = { ...process.env };
  delete parentEnv.ORT_DISABLE_TELEMETRY;
  const startedMs = Date.now();
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', env: { ...parentEnv, ...env, ALEXNET_STREAM_PROGRESS: '0' } });
  const written = Object.entries(dirs).flatMap(([name, dir]) => listAll(dir).map((p) => `${name}/${p}`));
  // A log of this pid written during this run: a stale file of an earlier process that had the
  // same pid (pids are reused) is not this run's. 1 s of slack for coarse file timestamps.
  const strayLog = ['/tmp', tmpdir()].map((d) => join(d, `mat-debug-${r.pid}.log`)).filter((p) => existsSync(p) && statSync(p).mtimeMs >= startedMs - 1000);
  return { r, written, strayLog };
}

let fixtures: Promise<{ data: string; config: string; ckpt: string; model: string; image: string; out: string }> | undefined;
function setup() {
  fixtures ??= (async () => {
    const data = join(root, 'data');
    await writeFixtureDataDir({ dir: data, classes: 4, trainPerClass: 4, valPerClass: 2, size: 40, batchSize: 8 });
    const out = join(root, 'out');
    mkdirSync(out);
    const spec = writeSpecFile(join(root, 'tiny.json'), tinySpec(4, 35));
    const config = join(root, 'config.yaml');
    writeFileSync(
      config,
      [`data_dir: ${data}`, `weights_dir: ${join(out, 'weights')}`, `spec_file: ${spec}`, 'batch_size: 8', 'n_epochs: 1', 'intra_op_threads: 1'].join('\n'),
    );
    const image = join(root, 'photo.jpg');
    await sharp({ create: { width: 50, height: 40, channels: 3, background: '#806040' } })
      .jpeg()
      .toFile(image);
    return { data, config, ckpt: join(out, 'weights', 'epoch-0001'), model: join(out, 'model.onnx'), image, out };
  })();
  return fixtures;
}

test('train, validate, export, predict, import and report write nothing outside the paths they are given', async () => {
  const f = await setup();
  const commands: [string, string[]][] = [
    ['train', ['train', '--config', f.config]],
    ['validate', ['validate', '--weights', f.ckpt, '--data', f.data]],
    ['export', ['export', '--weights', f.ckpt, '--out', f.model, '--mean', join(f.data, 'mean.npy')]],
    ['predict', ['predict', '--model', f.model, f.image]],
    ['import', ['import', f.model, '--from', 'onnx', '--out', join(f.out, 'imported')]],
    ['report', ['report', '--weights-dir', join(f.out, 'weights'), '--out', join(f.out, 'report.html')]],
  ];
  for (const [name, args] of commands) {
    const { r, written, strayLog } = runIsolated(args);
    assert.equal(r.status, 0, `${name}: ${r.stderr}`);
    assert.deepEqual(written, [], `${name} wrote outside its paths (HOME, TMPDIR, XDG dirs, cwd)`);
    assert.deepEqual(strayLog, [], `${name} left onnxruntime's telemetry debug log`);
  }
  assert.match(readFileSync(join(f.out, 'report.html'), 'utf8'), /<svg/);
});

test('no module loads onnxruntime-node except through loadOnnxRuntime()', () => {
  const allowed = join('libs', 'onnx-export', 'src', 'onnxruntime.ts');
  const offenders: string[] = [];
  const scan = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
      const path = join(dir, name);
      if (statSync(path).isDirectory()) scan(path);
      else if (/\.(ts|js|mjs|cjs)$/.test(name) && relative(REPO, path) !== allowed) {
        const text = readFileSync(path, 'utf8');
        // A value import, a require or a dynamic import of the package (type-only imports load nothing).
        if (
          /^\s*import\s+(?!type\b)[^;]*from\s+['"]onnxruntime-node['"]|require\(\s*['"]onnxruntime-node['"]\s*\)|import\(\s*['"]onnxruntime-node['"]\s*\)/m.test(
            text,
          )
        )
          offenders.push(relative(REPO, path));
      }
    }
  };
  for (const dir of ['libs', 'apps', 'test', 'bench', 'scripts']) if (existsSync(join(REPO, dir))) scan(join(REPO, dir));
  assert.deepEqual(offenders, [], 'load onnxruntime with loadOnnxRuntime() from @alexnet-stream/onnx-export (it turns telemetry off first)');
});

test('a worker thread loads onnxruntime only when the main thread turned telemetry off first', () => {
  const onnxExport = JSON.stringify(join(REPO, 'libs/onnx-export/dist/index.js'));
  // The worker creates a session (that is when onnxruntime writes its files) and reports back.
  const script = (mainDisables: boolean) => `
    const { Worker } = require('node:worker_threads');
    const m = require(${onnxExport});
    ${mainDisables ? 'm.disableOnnxRuntimeTelemetry();' : ''}
    const w = new Worker(\`
      const m = require(${onnxExport});
      const { parentPort } = require('node:worker_threads');
      (async () => {
        try {
          const ort = m.loadOnnxRuntime();
          const b = new m.GraphBuilder('g'); b.input('x', 'float32', [1]); const [y] = b.node('Relu', ['x'], {}); b.output(y, 'float32', [1]);
          const s = await ort.InferenceSession.create(m.encodeModel(b.model()));
          await s.run({ x: new ort.Tensor('float32', new Float32Array([1]), [1]) });
          parentPort.postMessage('ran');
        } catch (err) { parentPort.postMessage('refused: ' + err.message); }
      })();\`, { eval: true });
    w.on('message', (msg) => { console.log(msg); w.terminate(); });
  `;
  for (const mainDisables of [false, true]) {
    const sandbox = mkdtempSync(join(root, 'worker-'));
    const env: Record<string, string | undefined> = { ...process.env, HOME: join(sandbox, 'home'), TMPDIR: join(sandbox, 'tmp') };
    delete env.ORT_DISABLE_TELEMETRY;
    mkdirSync(env.HOME!);
    mkdirSync(env.TMPDIR!);
    const r = spawnSync(process.execPath, ['-e', script(mainDisables)], { encoding: 'utf8', env });
    assert.equal(r.status, 0, r.stderr);
    if (mainDisables) assert.equal(r.stdout.trim(), 'ran');
    else
      assert.match(
        r.stdout,
        /refused: onnxruntime was loaded in a worker thread, but its telemetry switch \(ORT_DISABLE_TELEMETRY=1\) is not in the process environment/,
      );
    assert.deepEqual([...listAll(env.HOME!), ...listAll(env.TMPDIR!)], [], `nothing written (main thread disables: ${mainDisables})`);
  }
});
