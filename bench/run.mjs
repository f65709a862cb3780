#!/usr/bin/env node
// Runs every bench/*.mjs except this file, one after another; fails if any fails.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
let failed = 0;
// Run on their own: time-to-accuracy.mjs trains for ~25 minutes and needs Debian's dataset-fashion-mnist (npm run bench:tta).
const SEPARATE = ['run.mjs', 'time-to-accuracy.mjs'];
for (const name of readdirSync(here)
  .filter((f) => f.endsWith('.mjs') && !SEPARATE.includes(f))
  .sort()) {
  console.log(`\n== bench/${name}`);
  const r = spawnSync(process.execPath, [join(here, name)], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
