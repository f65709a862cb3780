/**
 * loadTfjs' choice, in child processes (the choice is once per process). The native packages
 * do not install here, so fakes on NODE_PATH (searched only after node_modules) stand in for
 * them: a tfjs-node-gpu whose require throws as a missing libcuda would, and a tfjs-node that is
 * pure tfjs under another name.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const backendModule = require.resolve('./backend');
const tfjsMain = require.resolve('@tensorflow/tfjs');

function runChild(nodePath?: string) {
  const script = `require(${JSON.stringify(backendModule)}).loadTfjs({ verbose: true }).then((r) => console.log(JSON.stringify({ packageName: r.packageName, backend: r.backend, sum: r.tf.add(1, 2).dataSync()[0] })))`;
  const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, NODE_PATH: nodePath ?? '' } });
  assert.equal(result.status, 0, result.stderr);
  return { out: JSON.parse(result.stdout.trim().split('\n').pop()!), stderr: result.stderr };
}

function fakePackage(root: string, name: string, body: string) {
  mkdirSync(join(root, name), { recursive: true });
  writeFileSync(join(root, name, 'index.js'), body);
}

test('without the native packages: pure-JS tfjs on the cpu backend, reported on stderr when verbose', () => {
  const resolves = (name: string) => {
    try {
      require.resolve(name);
      return true;
    } catch {
      return false;
    }
  };
  const { out, stderr } = runChild();
  assert.equal(out.sum, 3);
  if (resolves('@tensorflow/tfjs-node-gpu') || resolves('@tensorflow/tfjs-node')) {
    assert.notEqual(out.packageName, '@tensorflow/tfjs'); // a native package is here: it must win
  } else {
    assert.equal(out.packageName, '@tensorflow/tfjs');
    assert.equal(out.backend, 'cpu');
    assert.match(stderr, /tfjs: using @tensorflow\/tfjs \(backend cpu\)/);
  }
});

test('order: tfjs-node-gpu first; when its require throws, tfjs-node', () => {
  const root = mkdtempSync(join(tmpdir(), 'tfjs-fake-'));
  try {
    fakePackage(root, '@tensorflow/tfjs-node-gpu', `throw new Error('libcuda.so.1: cannot open shared object file');`);
    fakePackage(root, '@tensorflow/tfjs-node', `module.exports = require(${JSON.stringify(tfjsMain)});`);
    const second = runChild(root);
    assert.equal(second.out.packageName, '@tensorflow/tfjs-node');
    assert.match(second.stderr, /tfjs: using @tensorflow\/tfjs-node \(backend /);

    fakePackage(root, '@tensorflow/tfjs-node-gpu', `module.exports = require(${JSON.stringify(tfjsMain)});`);
    assert.equal(runChild(root).out.packageName, '@tensorflow/tfjs-node-gpu');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
