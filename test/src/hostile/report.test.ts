/**
 * `report` on damaged or extreme training records (issue 11, item 17): a malformed
 * val_record.json or train_log.jsonl is an error naming the file, the line and the field (exit
 * 2); a line torn by a kill at the end of the log is skipped; extreme but valid numbers (1e308,
 * negative, Infinity written as 1e999, null for NaN) render as readable text and finite
 * coordinates.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const CLI = resolve(__dirname, '../../../apps/cli/bin/alexnet-stream.js');
const root = mkdtempSync(join(tmpdir(), 'hostile-report-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

const goodVal = [
  { epoch: 1, iteration: 10, top1Error: 0.6, top5Error: 0.2, loss: 1.5, images: 40, lr: 0.01 },
  { epoch: 2, iteration: 20, top1Error: 0.3, top5Error: 0.1, loss: 0.9, images: 40, lr: 0.01 },
];
const logLine = (iteration: number, loss: unknown = 1.2) =>
  JSON.stringify({ iteration, epoch: 1, loss, top1Error: 0.5, images: 16, lr: 0.01, imagesPerSecond: 50, waitFraction: 0.1, time: '2026-01-01T00:00:00Z' });

let count = 0;
function weightsDir(valRecordText: string | undefined, trainLogText: string | undefined): string {
  const dir = join(root, `w${count++}`);
  mkdirSync(dir);
  if (valRecordText !== undefined) writeFileSync(join(dir, 'val_record.json'), valRecordText);
  if (trainLogText !== undefined) writeFileSync(join(dir, 'train_log.jsonl'), trainLogText);
  return dir;
}

function report(dir: string) {
  const out = join(dir, 'report.html');
  const r = spawnSync(process.execPath, [CLI, 'report', '--weights-dir', dir, '--out', out], { encoding: 'utf8' });
  return { r, out };
}

test('a malformed val_record.json or train_log.jsonl is refused naming the file, the line and the field (exit 2)', () => {
  const pretty = (v: unknown) => `${JSON.stringify(v, null, 1)}\n`;
  const cases: [string, string | undefined, string | undefined, RegExp][] = [
    ['val not JSON', '[{"epoch": 1,\n', undefined, /val_record\.json(:\d+)?: not valid JSON/],
    ['val not a list', '{"epoch": 1}', undefined, /val_record\.json: not a validation record \(a JSON list/],
    [
      'val entry missing a field',
      pretty([goodVal[0], { epoch: 2, iteration: 20, top5Error: 0.1, loss: 1 }]),
      undefined,
      /val_record\.json: entry 2 \(line 11\): top1Error is missing \(expected a number or null\); not a validation result/,
    ],
    [
      'val entry of the wrong type',
      pretty([goodVal[0], { ...goodVal[1], loss: 'low' }]),
      undefined,
      /val_record\.json: entry 2 \(line 11\): expected a number or null for loss but received "low"/,
    ],
    ['val entry not an object', pretty([goodVal[0], 7]), undefined, /val_record\.json: entry 2 \(line 11\): expected a JSON object but received 7/],
    ['log line not JSON', undefined, `${logLine(2)}\n{"iteration": 4,\n${logLine(6)}\n`, /train_log\.jsonl:2: not valid JSON/],
    [
      'log field missing',
      undefined,
      `${logLine(2)}\n${logLine(4)}\n{"iteration": 6, "epoch": 1, "loss": 1}\n`,
      /train_log\.jsonl:3: lr is missing \(expected a number\); not a training log entry/,
    ],
    ['log field wrong type', undefined, `${logLine(2)}\n${logLine(4, [1])}\n`, /train_log\.jsonl:2: expected a number or null for loss but received \[1\]/],
  ];
  for (const [what, val, log, message] of cases) {
    const { r, out } = report(weightsDir(val, log));
    assert.equal(r.status, 2, `${what}: ${r.stderr}`);
    assert.match(r.stderr, message, what);
    assert.doesNotMatch(r.stderr, /Cannot read properties|at .*\.js:\d+|TypeError/, what);
    assert.throws(() => readFileSync(out), /ENOENT/, `${what}: no report written`);
  }
});

test('a line torn by a kill at the end of train_log.jsonl is skipped; extreme values render as text and finite coordinates', () => {
  const extremeVal =
    '[\n' +
    [
      '{"epoch": 1, "iteration": 10, "top1Error": 1e308, "top5Error": -0.5, "loss": 1e999, "images": 40, "lr": 0.01}',
      '{"epoch": 2, "iteration": 20, "top1Error": null, "top5Error": null, "loss": null, "images": 0, "lr": 0.01}',
      '{"epoch": 3, "iteration": 30, "top1Error": -1e308, "top5Error": 0.1, "loss": -1e999, "images": 40, "lr": 1e-300}',
    ].join(',\n') +
    '\n]\n';
  // biome-ignore lint/correctness/noPrecisionLoss: 1e999 is Infinity on purpose: a log value that overflowed
  const log = `${logLine(2, 1e308)}\n${logLine(4, -1e308)}\n${logLine(6, 1e999)}\n${logLine(8, null)}\n{"iteration": 10, "epo`;
  const dir = weightsDir(extremeVal, log);
  const { r, out } = report(dir);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /3 epochs, 4 log lines/, 'the torn last line is skipped');
  const html = readFileSync(out, 'utf8');
  assert.doesNotMatch(html, /NaN|undefined|Infinity%/, 'no NaN, undefined or Infinity% in the page');
  const coordinates = [...html.matchAll(/\s(?:points|cx|cy|x1|x2|y1|y2|x|y)="([^"]*)"/g)].map((m) => m[1]);
  assert.ok(coordinates.length > 20);
  for (const c of coordinates) for (const n of c.split(/[ ,]/).filter(Boolean)) assert.ok(Number.isFinite(Number(n)), `coordinate ${n} is finite`);
  assert.match(html, /<td>∞<\/td>/, 'an infinite loss shows as ∞');
  assert.match(html, /<td>−∞<\/td>/, 'a negative infinite loss shows as −∞');
  assert.match(html, /<td>–<\/td>/, 'a missing (null) metric shows as –');
  assert.match(html, /1\.00e\+308 \(as a fraction\)/, 'a top-1 error of 1e308 is written out');
  assert.match(html, /-50\.00%/, 'a negative error renders as a number');
  const png = readFileSync(join(dir, 'report.png'));
  assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47], 'the PNG renders too');
});
