/**
 * What the stream/data hostile tests share: the CLI as a shell command, a run that reports
 * every stage's exit status, a small demo data set made once per test file, and the checks
 * every hostile case makes (a clear one-line message, no stack trace).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runPipeline, type PipelineRun } from '../pipeline-helpers';

export const CLI = resolve(__dirname, '../../../apps/cli/bin/alexnet-stream.js');
/** The CLI as a shell word: `${A} scan …`. */
export const A = `"${process.execPath}" "${CLI}"`;

/** A scratch folder for one test file, removed when the process exits. */
export function scratch(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `hostile-${name}-`));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Run a bash script in `dir`: every stage's exit status, stdout bytes, stderr. */
export function sh(dir: string, script: string, input?: Buffer): PipelineRun {
  return runPipeline(dir, script, input);
}

/** The CLI with arguments (no shell), in `dir`. */
export function cli(dir: string, args: string[], options: { input?: Buffer; timeoutMs?: number } = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd: dir,
    input: options.input,
    timeout: options.timeoutMs ?? 120_000,
    maxBuffer: 1 << 28,
    env: { ...process.env, ALEXNET_STREAM_PROGRESS: '0' },
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr?.toString() ?? '' };
}

/** stderr says what went wrong in a line naming the command, and shows no stack trace. */
export function clearError(stderr: string, pattern: RegExp, context = ''): void {
  assert.match(stderr, pattern, context);
  assert.doesNotMatch(stderr, /\n\s+at .*:\d+:\d+/, `no stack trace${context ? ` (${context})` : ''}:\n${stderr}`);
  assert.doesNotMatch(stderr, /Unhandled 'error' event|ERR_UNHANDLED_ERROR/, `no unhandled error event: ${stderr}`);
}

/** A demo data set (6 classes, `perClass` train images each) in `dir/demo`, made once. */
export function demoData(dir: string, perClass = 10): string {
  const demo = join(dir, 'demo');
  if (!existsSync(join(demo, 'classes.txt'))) {
    const r = cli(dir, ['make-demo-data', '--out', demo, '--train-per-class', String(perClass), '--val-per-class', '2', '--seed', '3']);
    assert.equal(r.status, 0, r.stderr);
  }
  return demo;
}
