import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';

/**
 * Closing the pool while its workers are decoding must end the process normally.
 * `Worker.terminate()` while a worker was calling into TurboJPEG aborted it (SIGABRT from the
 * addon's C++ exception on a terminating thread): what a stage that stops early (a bad batch
 * size in `prepare`, an error downstream) does while images are still being decoded. Run in a
 * child process, since the failure kills the whole process, and several times, since it
 * depends on where each worker is when the pool closes (about 4 closes in 10 aborted before the fix).
 */
test('closing the decode pool while workers are decoding ends the process normally, every time', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'decode-pool-'));
  try {
    // Many small plain JPEGs (the workers' TurboJPEG path): many calls into the addon per second.
    const w = 440;
    const h = 300;
    const raw = Buffer.alloc(w * h * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = Math.round(128 + 100 * Math.sin(i / 97) * Math.cos(i / 1301));
    const photo = await sharp(raw, { raw: { width: w, height: h, channels: 3 } })
      .jpeg({ quality: 90 })
      .toBuffer();
    const paths = Array.from({ length: 240 }, (_, i) => join(dir, `${i}.jpg`));
    for (const path of paths) writeFileSync(path, photo);
    // Close as soon as the first image is back, with the rest queued and in flight; ten pools one
    // after another in each child process, each close a fresh chance to hit a worker mid-call.
    const script = `
      const { DecodePool } = require(${JSON.stringify(join(__dirname, 'decode-pool.js'))});
      const paths = ${JSON.stringify(paths)};
      async function once() {
        const pool = new DecodePool(2);
        let closing;
        const results = await Promise.all(paths.map((p) => pool.decode(p, { size: 256 }).then(
          () => { closing ??= pool.close(); return 'decoded'; },
          (e) => e.message,
        )));
        await closing;
        return results;
      }
      (async () => { const all = []; for (let i = 0; i < 10; i++) all.push(await once()); console.log(JSON.stringify(all)); })();
    `;
    for (let run = 1; run <= 2; run++) {
      const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.signal, null, `run ${run}: killed by ${r.signal}\n${r.stderr}`);
      assert.equal(r.status, 0, `run ${run}: exit ${r.status}\n${r.stderr}`);
      const pools = JSON.parse(r.stdout.trim()) as string[][];
      assert.equal(pools.length, 10);
      for (const results of pools) {
        assert.equal(results.length, paths.length);
        assert.ok(
          results.includes('decoded') && results.includes('decode pool closed'),
          `run ${run}: some decoded, the rest refused: ${[...new Set(results)].join(', ')}`,
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
