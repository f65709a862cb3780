/**
 * Package barrels load no native module (DESIGN §3): `require('@alexnet-stream/<pkg>')` must not
 * load onnxruntime-node, zeromq, sharp, tfjs or libjpeg-turbo (onnxruntime-node and zeromq
 * alone cost ~190 ms, and a process that only parses a config or lists checkpoints never needs
 * them). Each package is required in a fresh process, which then reports the native packages in
 * its `require.cache`; and a function that needs one must still load it when called (else the
 * check above could pass with the modules simply gone).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';

const REPO = resolve(__dirname, '../..');
const NATIVE = /\/node_modules\/(onnxruntime-node|zeromq|sharp|@tensorflow\/[^/]+|@julusian\/jpeg-turbo)\//;

/** Run `script` (CommonJS) in a fresh node at the repo root; returns the native packages it loaded. */
async function nativeModulesAfter(script: string): Promise<string[]> {
  const report = `
    const seen = new Set();
    for (const key of Object.keys(require.cache)) { const m = ${NATIVE}.exec(key); if (m) seen.add(m[1]); }
    process.stdout.write(JSON.stringify([...seen].sort()));`;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['-e', `(async () => { ${script}; ${report} })().catch((e) => { console.error(e); process.exit(1); })`],
    {
      cwd: REPO,
      env: { ...process.env, ORT_DISABLE_TELEMETRY: '1' },
    },
  );
  return JSON.parse(stdout) as string[];
}

const PACKAGES = ['core', 'stream-io', 'model-alexnet', 'onnx-export', 'trainer-multigpu', 'serve', 'cli'];

test('requiring any package barrel loads no native module', async () => {
  const loaded = await Promise.all(PACKAGES.map((p) => nativeModulesAfter(`require('@alexnet-stream/${p}')`)));
  PACKAGES.forEach((p, i) => assert.deepEqual(loaded[i], [], `@alexnet-stream/${p} loaded ${loaded[i].join(', ')}`));
});

test('subpaths load no native module either; the CLI program is built without one', async () => {
  const [testing, ort, program] = await Promise.all([
    nativeModulesAfter("require('@alexnet-stream/trainer-multigpu/testing')"),
    nativeModulesAfter("require('@alexnet-stream/onnx-export/onnxruntime')"),
    nativeModulesAfter("require('@alexnet-stream/cli').buildProgram()"),
  ]);
  assert.deepEqual(testing, []);
  assert.deepEqual(ort, []);
  assert.deepEqual(program, []);
});

test('the native module loads when a function that needs it is called', async () => {
  const [engine, decoded] = await Promise.all([
    nativeModulesAfter(`
      const { createEngine, DEFAULT_OPTIMIZER } = require('@alexnet-stream/trainer-multigpu');
      const { tinySpec } = require('@alexnet-stream/trainer-multigpu/testing');
      const { initParameters } = require('@alexnet-stream/model-alexnet');
      const spec = tinySpec();
      const engine = await createEngine('onnxruntime', spec, initParameters(spec, 1), { optimizer: DEFAULT_OPTIMIZER, batchSize: 2, seed: 1, intraOpThreads: 1 });
      await engine.dispose()`),
    nativeModulesAfter(`
      const { decodeImage } = require('@alexnet-stream/stream-io');
      const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
      await decodeImage(png, { size: 4, resize: 'squash' })`),
  ]);
  assert.ok(engine.includes('onnxruntime-node'), `creating an onnxruntime engine loaded ${engine.join(', ') || 'nothing'}`);
  assert.ok(!engine.includes('zeromq'), 'a single-process engine does not load zeromq');
  assert.ok(decoded.includes('sharp'), `decoding a PNG loaded ${decoded.join(', ') || 'nothing'}`);
});
