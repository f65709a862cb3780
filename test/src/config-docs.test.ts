// The config key table in docs/training.md is the schema's, row for row: a key added, removed,
// re-defaulted or re-described in trainConfigSchema (libs/trainer-multigpu/src/train/config.ts)
// fails here until the docs say the same (the README's table had drifted before:
// `sync_momentum`, `devices`). On failure the message is the row as it should read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { trainConfigJsonSchema, trainConfigSchema } from '@alexnet-stream/trainer-multigpu';

const DOC = join(__dirname, '..', '..', 'docs', 'training.md');
const ROW = /^\| `([a-z0-9_]+)` \| (seed|ours) \| .* \|$/;

/** The table row the schema describes for `key`: its origin and description from .meta(), its default from .default(). */
function expectedRow(key: string): string {
  const schema = trainConfigSchema().shape[key as keyof ReturnType<typeof trainConfigSchema>['shape']];
  const meta = schema.meta() as { description: string; seed: boolean };
  return `| \`${key}\` | ${meta.seed ? 'seed' : 'ours'} | \`${JSON.stringify(schema.def.defaultValue)}\` | ${meta.description} |`;
}

test('docs/training.md lists every config key with the schema origin, default and description', () => {
  const rows = readFileSync(DOC, 'utf8')
    .split('\n')
    .filter((line) => ROW.test(line));
  const documented = rows.map((line) => ROW.exec(line)![1]);
  assert.deepEqual(documented, Object.keys(trainConfigSchema().shape), 'the table lists exactly the schema keys, in the schema order');
  for (const line of rows) {
    const key = ROW.exec(line)![1];
    assert.equal(line, expectedRow(key), `docs/training.md: the row of "${key}" should read:\n${expectedRow(key)}`);
  }
});

test("the config's JSON Schema (for editors) has every key with its description and refuses unknown keys", () => {
  const json = trainConfigJsonSchema() as { properties: Record<string, { description?: string }>; additionalProperties: unknown };
  assert.deepEqual(Object.keys(json.properties), Object.keys(trainConfigSchema().shape));
  for (const [key, property] of Object.entries(json.properties)) {
    assert.equal(property.description, (trainConfigSchema().shape[key as 'seed'].meta() as { description: string }).description, key);
  }
  assert.equal(json.additionalProperties, false);
});
