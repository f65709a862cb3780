#!/usr/bin/env node
// Runs the compiled tests of the given project folders (default: all) in one `node --test`
// run, so there is one summary line for CI. Tests are *.test.js under each project's dist/.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const projects = process.argv.slice(2).length
  ? process.argv.slice(2)
  : ['libs/core', 'libs/stream-io', 'libs/model-alexnet', 'libs/onnx-export', 'libs/trainer-multigpu', 'libs/serve', 'apps/cli', 'test'];

function findTests(dir, out) {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) findTests(path, out);
    else if (name.endsWith('.test.js')) out.push(path);
  }
  return out;
}

const files = projects.flatMap((p) => findTests(join(p, 'dist'), []));
if (files.length === 0) {
  console.error(`no compiled tests found under ${projects.join(', ')} (run npm run build first)`);
  process.exit(1);
}
// Transparent huge pages for glibc's malloc (glibc >= 2.35; a no-op elsewhere). On the project's
// VMs the first touch of a fresh page costs ~13 µs (244 MB: ~0.8 s, a refill of the same memory
// 20 ms), and the tests allocate gigabytes of fresh buffers: full-size AlexNets of 244 MB written,
// read and checked, onnxruntime outputs copied into new ArrayBuffers on every run. With 2 MB pages
// madvised, import-onnx.test took 10.5 s instead of 29.7 s. It changes no result, only how fast
// pages arrive; a GLIBC_TUNABLES the caller set is kept as it is.
const GLIBC_TUNABLES = process.env.GLIBC_TUNABLES ?? 'glibc.malloc.hugetlb=1';
// Two cores: run test files two at a time; heavy tests serialize themselves where needed.
// Source maps: a failure's stack names the .ts line.
const result = spawnSync(process.execPath, ['--enable-source-maps', '--test', '--test-concurrency=2', '--test-reporter=spec', ...files], {
  stdio: 'inherit',
  env: { ...process.env, ALEXNET_STREAM_TEST: '1', GLIBC_TUNABLES },
});
process.exit(result.status ?? 1);
