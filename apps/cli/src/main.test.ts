import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildProgram, reflow } from './main';

test('reflow joins source-wrapped prose but keeps paragraphs, indented lines and lists', () => {
  assert.equal(
    reflow('one line\nwrapped here.\n\nNext paragraph\n  indented example\n- item'),
    'one line wrapped here.\n\nNext paragraph\n  indented example\n- item',
  );
  assert.equal(reflow('Examples:\nfoo'), 'Examples:\nfoo');
});

test('every stage of the issue is a registered command with help', () => {
  const names = buildProgram().commands.map((c) => c.name());
  for (const stage of [
    'scan',
    'decode',
    'mean',
    'batch',
    'read',
    'augment',
    'inspect',
    'prepare',
    'import',
    'export',
    'predict',
    'validate',
    'train',
    'report',
    'worker',
  ]) {
    assert.ok(names.includes(stage), `missing command ${stage}`);
  }
  for (const command of buildProgram().commands) assert.ok(command.description().length > 20, `${command.name()} has no description`);
});
