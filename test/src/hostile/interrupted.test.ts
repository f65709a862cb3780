/**
 * Writers stopped between two steps (issue 11's class of "a checkpoint can vanish", for the
 * other things that replace a whole folder): `prepare --force` swaps a complete data dir for a
 * rebuilt one with two renames, and a kill between them left no `<out>` — the next run then
 * deleted the new data as "left by an interrupted run" and kept the old one hidden for good.
 * The states a kill leaves are built here as they lie on disk (what `strace -e inject=rename:
 * signal=KILL` produced), and the next run must finish or undo the replacement. A run that
 * fails (rather than is killed) leaves no work folder behind.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, clearError, cli, demoData, scratch } from './stream-fixtures';

const dir = scratch('interrupted');
const p = (name: string) => join(dir, name);
let train: string;

/** A complete data dir at `out` whose images are `size` pixels (so two builds are told apart). */
function prepared(out: string, size: number): void {
  const r = cli(dir, ['prepare', '--train', train, '--out', out, '--size', String(size), '--batch-size', '4']);
  assert.equal(r.status, 0, r.stderr);
}

const imageSize = (out: string) => (JSON.parse(readFileSync(join(out, 'prepare.json'), 'utf8')) as { imageSize: number }).imageSize;
/** A pid no process has (above the kernel's pid_max). */
const DEAD_PID = 4_194_305;

before(() => {
  train = join(demoData(dir, 2), 'train');
});

test('prepare --force killed between its two renames: the next run puts the rebuilt data in place (no <out> was left)', () => {
  const out = p('forward');
  prepared(out, 16);
  prepared(p('rebuilt'), 24);
  // The state after `out -> out.partial.old-PID`, before `out.partial -> out`: a complete rebuilt
  // .partial (marked as prepare's work folder), the old data aside, no <out>.
  renameSync(out, `${out}.partial.old-${DEAD_PID}`);
  renameSync(p('rebuilt'), `${out}.partial`);
  writeFileSync(join(`${out}.partial`, '.prepare-partial'), `${DEAD_PID}\n`);
  const r = cli(dir, ['prepare', '--train', train, '--out', out, '--size', '24', '--batch-size', '4']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /finished replacing \S*forward with its rebuilt data/);
  assert.match(r.stderr, /is already complete/, 'nothing rebuilt: the data was there');
  assert.equal(imageSize(out), 24, 'the rebuilt data is in place');
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.startsWith('forward')),
    ['forward'],
    'no hidden copy or work folder left',
  );
});

test('prepare --force killed before its rebuilt data was complete: the next run restores the old data dir', () => {
  const out = p('back');
  prepared(out, 16);
  renameSync(out, `${out}.partial.old-${DEAD_PID}`);
  // a .partial without its manifest: not complete, never put in place
  cpSync(`${out}.partial.old-${DEAD_PID}`, `${out}.partial`, { recursive: true });
  writeFileSync(join(`${out}.partial`, '.prepare-partial'), `${DEAD_PID}\n`);
  writeFileSync(join(`${out}.partial`, 'prepare.json'), '{"schema":"alexnet-stream/prepare/1","complete":fal');
  const r = cli(dir, ['prepare', '--train', train, '--out', out, '--size', '16', '--batch-size', '4']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /restored \S*back from \S*back\.partial\.old-4194305/);
  assert.equal(imageSize(out), 16);
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.startsWith('back')),
    ['back'],
  );
});

test('prepare --force killed while deleting the old data: the next run removes the hidden copy', () => {
  const out = p('leftover');
  prepared(out, 16);
  cpSync(out, `${out}.partial.old-${DEAD_PID}`, { recursive: true });
  const r = cli(dir, ['prepare', '--train', train, '--out', out, '--size', '16', '--batch-size', '4']);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.startsWith('leftover')),
    ['leftover'],
  );
});

test('prepare --force killed while rebuilding: the next run keeps the complete data and removes the half-built work folder', () => {
  const out = p('rebuilding');
  prepared(out, 16);
  cpSync(out, `${out}.partial`, { recursive: true });
  writeFileSync(join(`${out}.partial`, '.prepare-partial'), `${DEAD_PID}\n`);
  writeFileSync(join(`${out}.partial`, 'prepare.json'), '{"sch');
  const r = cli(dir, ['prepare', '--train', train, '--out', out, '--size', '16', '--batch-size', '4']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /removing \S*rebuilding\.partial left by an interrupted run/);
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.startsWith('rebuilding')),
    ['rebuilding'],
  );
  assert.equal(imageSize(out), 16);
});

test('a prepare that fails (not killed) removes its work folder: nothing half-written is left', () => {
  const out = p('failed');
  const r = cli(dir, ['prepare', '--train', train, '--out', out, '--size', '32', '--batch-size', '1048576']);
  assert.equal(r.status, 2, r.stderr);
  clearError(r.stderr, /lower --batch-size/);
  assert.ok(!existsSync(out) && !existsSync(`${out}.partial`) && !existsSync(`${out}.lock`), readdirSync(dir).join(', '));
});

test("an export killed while writing leaves a hidden temp file that the next write of the same file removes; live or foreign writers' temps stay", async () => {
  const { spawn } = await import('node:child_process');
  const { createHash } = await import('node:crypto');
  const { hostname } = await import('node:os');
  const out = p('killed.onnx');
  // A real kill: an AlexNet-sized export (240 MB) is stopped once its temp file exists.
  const child = spawn(process.execPath, [CLI, 'export', '--random-init', '--seed', '1', '--num-classes', '10', '--out', out], { stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', r));
  const temp = () => readdirSync(dir).find((n) => n.startsWith('.killed.onnx.tmp-'));
  for (let i = 0; i < 6000 && !temp(); i++) await new Promise((r) => setTimeout(r, 10));
  child.kill('SIGKILL');
  await exited;
  assert.ok(temp(), 'the killed export left its temp file');
  // Names other writers would leave: a dead one of an older version (no host), a live process's, another host's.
  const host = createHash('sha256').update(hostname()).digest('hex').slice(0, 8);
  const other = host === 'ffffffff' ? 'eeeeeeee' : 'ffffffff';
  writeFileSync(p(`.killed.onnx.tmp-${DEAD_PID}-abcd`), 'old format, dead');
  writeFileSync(p(`.killed.onnx.tmp-${host}-${process.pid}-0badcafe`), 'live writer');
  writeFileSync(p(`.killed.onnx.tmp-${other}-${DEAD_PID}-0badcafe`), 'another host');
  const { saveCheckpoint, initParameters } = await import('@alexnet-stream/model-alexnet');
  const { tinySpec } = await import('@alexnet-stream/trainer-multigpu/testing');
  const spec = tinySpec(4, 35);
  saveCheckpoint(p('tiny-ckpt'), { spec, weights: initParameters(spec, 1), state: {} });
  const r = cli(dir, ['export', '--weights', p('tiny-ckpt'), '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(
    readdirSync(dir)
      .filter((n) => n.startsWith('.killed.onnx'))
      .sort(),
    [`.killed.onnx.tmp-${host}-${process.pid}-0badcafe`, `.killed.onnx.tmp-${other}-${DEAD_PID}-0badcafe`].sort(),
  );
});
