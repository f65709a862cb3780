import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { processExists, processIsGone, processStartTime } from './process-liveness';

test('this process and a running child are not gone; a child that exited is', async () => {
  assert.equal(processIsGone(process.pid), false);
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  const pid = child.pid!;
  try {
    assert.equal(processExists(pid), true);
    assert.equal(processIsGone(pid, processStartTime(pid)), false);
    if (existsSync('/proc/self/stat')) {
      // A pid taken over by another process (a different start time) counts as gone.
      assert.equal(processIsGone(pid, 'not-its-start-time'), true);
    }
  } finally {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
  assert.equal(processIsGone(pid), true);
});

test('a pid that no process holds is gone', () => {
  // A finished child's pid: no process until the kernel hands the pid out again (not soon).
  const { pid } = spawnSync(process.execPath, ['-e', '0']);
  assert.equal(processExists(pid!), false);
  assert.equal(processIsGone(pid!), true);
});
