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
// Two cores: run test files two at a time; heavy tests serialize themselves where needed.
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=2', '--test-reporter=spec', ...files], {
  stdio: 'inherit',
  env: { ...process.env, ALEXNET_STREAM_TEST: '1' },
});
process.exit(result.status ?? 1);
