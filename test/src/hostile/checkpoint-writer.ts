/**
 * A child process for checkpoints.test.ts: writes one checkpoint and SIGKILLs itself just
 * before step `killAt` of the write (0-based, counting every step atomic-dir.ts reports), so a
 * test can stop a writer at every rename, unlink and file write in turn.
 *
 *   node checkpoint-writer.js <dir> <version> <killAt> [pause]
 *
 * `version` seeds the weights and is stored in state.json, so the test can tell which version
 * of a checkpoint it finds. killAt -1: no kill (prints the steps it went through as JSON).
 * With `pause`, the writer stops at that step instead (prints "paused" and waits to be killed):
 * a writer that is alive in the middle of its write.
 */
import { saveCheckpoint } from '@alexnet-stream/model-alexnet';
import { checkpointVersion } from './checkpoint-fixtures';

const [dir, versionText, killAtText] = process.argv.slice(2);
const version = Number(versionText);
const killAt = Number(killAtText);
const pause = process.argv[5] === 'pause';
const steps: string[] = [];
saveCheckpoint(dir, checkpointVersion(version), {
  beforeStep(step) {
    if (steps.length === killAt) {
      if (!pause) process.kill(process.pid, 'SIGKILL');
      process.stdout.write('paused\n');
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // until killed
    }
    steps.push(step);
  },
});
process.stdout.write(`${JSON.stringify(steps)}\n`);
