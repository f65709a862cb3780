// The config key table in docs/training.md is the schema's, row for row: a key added, removed,
// re-defaulted or re-described in CONFIG_KEYS (libs/trainer-multigpu/src/train/config.ts) fails
// here until the docs say the same (the README's table had drifted before: `sync_momentum`,
// `devices`). On failure the message is the row as it should read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONFIG_KEYS } from '@alexnet-stream/trainer-multigpu';

const DOC = join(__dirname, '..', '..', 'docs', 'training.md');
const ROW = /^\| `([a-z0-9_]+)` \| (seed|ours) \| .* \|$/;

/** The table row CONFIG_KEYS describes for `key`. */
function expectedRow(key: string): string {
  const spec = CONFIG_KEYS[key as keyof typeof CONFIG_KEYS];
  return `| \`${key}\` | ${spec.seed ? 'seed' : 'ours'} | \`${JSON.stringify(spec.default)}\` | ${spec.doc} |`;
}

test('docs/training.md lists every config key with the schema origin, default and description', () => {
  const rows = readFileSync(DOC, 'utf8')
    .split('\n')
    .filter((line) => ROW.test(line));
  const documented = rows.map((line) => ROW.exec(line)![1]);
  assert.deepEqual(documented, Object.keys(CONFIG_KEYS), 'the table lists exactly the schema keys, in the schema order');
  for (const line of rows) {
    const key = ROW.exec(line)![1];
    assert.equal(line, expectedRow(key), `docs/training.md: the row of "${key}" should read:\n${expectedRow(key)}`);
  }
});
