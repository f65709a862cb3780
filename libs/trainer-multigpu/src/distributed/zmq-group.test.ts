/**
 * The ZeroMQ group with real sockets in real processes (ipc in a temp dir, tcp on loopback
 * with ephemeral ports): averaging over each transport, faults (a killed, a silent, a lost
 * rank 0), refusals. Timeouts are generous: the machine has 2 cores shared by other jobs.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { checksumTensors } from './checksum';
import { fixtureTensors } from './testing/fixture-data';
import type { FixtureArgs } from './testing/group-worker';

const FIXTURE = join(__dirname, 'testing', 'group-worker.js');
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function ipcEndpoint(): string {
  const dir = mkdtempSync(join(tmpdir(), 'zmq-group-test-'));
  dirs.push(dir);
  return `ipc://${dir}/coordinator`;
}

/** A port that was free a moment ago (the OS picks it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

interface Worker {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: string;
  /** Once the process has exited and its output is read: its status, and when it exited. */
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>;
  /** Resolves with the first stdout record matching `pred`. */
  waitFor(pred: (line: Record<string, unknown>) => boolean): Promise<void>;
}

function startWorker(args: Partial<FixtureArgs> & { rank: number; worldSize: number; coordinator: string }): Worker {
  const child = spawn(process.execPath, [FIXTURE, JSON.stringify({ scenario: 'allreduce', sizes: [10], ...args })], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Record<string, unknown>[] = [];
  const listeners: (() => void)[] = [];
  let buffered = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buffered.slice(0, nl)));
      buffered = buffered.slice(nl + 1);
      listeners.forEach((l) => l());
    }
  });
  const worker: Worker = {
    child,
    lines,
    stderr: '',
    // Resolved at 'close', not 'exit': a process can exit before its last stdout lines are read
    // here (a loaded machine), and the tests read `lines` next. The time is the exit's.
    exit: new Promise((resolve) => {
      let atMs = 0;
      child.once('exit', () => (atMs = Date.now()));
      child.once('close', (code, signal) => resolve({ code, signal, atMs: atMs || Date.now() }));
    }),
    waitFor: (pred) =>
      new Promise((resolve, reject) => {
        const check = () => lines.some(pred) && resolve();
        listeners.push(check);
        check();
        child.on('close', () => (lines.some(pred) ? resolve() : reject(new Error(`rank ${args.rank} exited first: ${worker.stderr}`))));
      }),
  };
  child.stderr!.on('data', (chunk: Buffer) => (worker.stderr += chunk.toString()));
  return worker;
}

async function runGroup(worldSize: number, args: Partial<FixtureArgs> & { coordinator: string }) {
  const workers = [...Array(worldSize).keys()].map((rank) => startWorker({ ...args, rank, worldSize }));
  const exits = await Promise.all(workers.map((w) => w.exit));
  return { workers, exits };
}

function decode(base64: string): Float32Array {
  const bytes = Buffer.from(base64, 'base64');
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}

const TIMEOUT = { timeout: 120_000 };

// Two groups at a time: most of a test is processes starting and waiting on each other.
describe('ZmqWorkerGroup (real sockets, one process per rank)', { concurrency: 2 }, () => {
  // The ring's arithmetic over many world sizes, frames and fp16 is ring.test.ts's (in memory);
  // here, the same over the two real transports, once each.
  for (const [worldSize, transport] of [
    [2, 'tcp'],
    [3, 'ipc'],
  ] as const) {
    it(
      `averages weights across ${worldSize} ranks over ${transport}: matches a float64 hand sum, bit-identical on every rank${worldSize === 3 ? '; broadcast and metrics' : ''}`,
      TIMEOUT,
      async () => {
        // Odd sizes, a size smaller than the world, and frames (7 floats) that divide nothing.
        const sizes = [1, 5, 37, 1000, 3];
        const coordinator = transport === 'tcp' ? `tcp://127.0.0.1:${await freePort()}` : ipcEndpoint();
        const rounds = 2;
        const alsoCollectives = worldSize === 3;
        const { workers, exits } = await runGroup(worldSize, { coordinator, sizes, rounds, frameElements: 7, alsoCollectives });
        exits.forEach((e, r) => assert.equal(e.code, 0, `rank ${r} failed: ${workers[r].stderr}`));
        if (alsoCollectives) {
          // broadcastWeights: every rank ends with rank 0's tensors, exactly.
          const want = checksumTensors(fixtureTensors(sizes, 0, 0));
          workers.forEach((w, r) => assert.equal(w.lines.find((l) => l.broadcastChecksum)?.broadcastChecksum, want, `broadcast, rank ${r}`));
          // averageMetrics: ranks send [r, 10r + 1, r == 0 ? NaN : 1]; means [1, 11, NaN] everywhere.
          for (const w of workers) assert.deepEqual(w.lines.find((l) => l.values)?.values, [1, 11, 'NaN']);
        }
        for (let round = 0; round < rounds; round++) {
          const results = workers.map((w) => w.lines.find((l) => l.round === round)!);
          // Bit-identical replicas: one checksum for all ranks.
          assert.equal(new Set(results.map((r) => r.checksum)).size, 1, `round ${round}: checksums differ across ranks`);
          const inputs = [...Array(worldSize).keys()].map((rank) => fixtureTensors(sizes, rank, round));
          const names = Object.keys(inputs[0]).sort();
          names.forEach((name, t) => {
            const got = decode((results[0].data as string[])[t]);
            assert.equal(got.length, sizes[t]);
            for (let i = 0; i < got.length; i++) {
              let sum = 0;
              let magnitude = 0;
              for (const input of inputs) {
                sum += input[name][i];
                magnitude += Math.abs(input[name][i]);
              }
              // The ring adds the n float32 values in a fixed order, then divides by n. Each of the
              // n-1 additions errs by at most 2^-24·|partial sum| ≤ 2^-24·Σ|x|, the division by
              // 2^-24·|mean|: in all ≤ 2^-24·Σ|x| after dividing by n (the float64 reference is exact
              // to far better than that).
              const tolerance = 2 ** -24 * magnitude + 1e-30;
              assert.ok(Math.abs(got[i] - sum / worldSize) <= tolerance, `${name}[${i}]: got ${got[i]}, want ${sum / worldSize} ± ${tolerance}`);
            }
          });
        }
      },
    );
  }

  it('a worker killed with SIGKILL: the others exit non-zero within the peer timeout, naming the lost rank', TIMEOUT, async () => {
    const peerTimeoutMs = 4000;
    const worldSize = 4;
    const coordinator = ipcEndpoint();
    const workers = [...Array(worldSize).keys()].map((rank) =>
      startWorker({ rank, worldSize, coordinator, scenario: 'forever', sizes: [50_000], peerTimeoutMs }),
    );
    await Promise.all(workers.map((w) => w.waitFor((l) => l.event === 'synced')));
    const victim = 2;
    const killedAt = Date.now();
    workers[victim].child.kill('SIGKILL');
    const exits = await Promise.all(workers.map((w) => w.exit));
    assert.equal(exits[victim].signal, 'SIGKILL');
    for (let r = 0; r < worldSize; r++) {
      if (r === victim) continue;
      assert.equal(exits[r].code, 1, `rank ${r}: ${workers[r].stderr}`);
      assert.match(workers[r].stderr, /lost worker rank 2\b/, `rank ${r} must name rank 2: ${workers[r].stderr}`);
      // Bound: peerTimeoutMs, plus slack for process exit on a loaded 2-core machine.
      assert.ok(exits[r].atMs - killedAt < peerTimeoutMs + 5000, `rank ${r} took ${exits[r].atMs - killedAt} ms`);
    }
  });

  it('a worker stopped with SIGSTOP (silent, connections open): heartbeats time out and the others stop, naming it', TIMEOUT, async () => {
    const peerTimeoutMs = 3000;
    const coordinator = ipcEndpoint();
    const workers = [0, 1, 2].map((rank) => startWorker({ rank, worldSize: 3, coordinator, scenario: 'forever', sizes: [1000], peerTimeoutMs }));
    await Promise.all(workers.map((w) => w.waitFor((l) => l.event === 'synced')));
    const stoppedAt = Date.now();
    workers[1].child.kill('SIGSTOP');
    try {
      const exits = await Promise.all([workers[0].exit, workers[2].exit]);
      for (const [i, r] of [0, 2].entries()) {
        assert.equal(exits[i].code, 1, `rank ${r}: ${workers[r].stderr}`);
        assert.match(workers[r].stderr, /lost worker rank 1\b/);
        assert.ok(exits[i].atMs - stoppedAt < peerTimeoutMs + 5000, `rank ${r} took ${exits[i].atMs - stoppedAt} ms`);
      }
    } finally {
      workers[1].child.kill('SIGKILL'); // a stopped process still takes SIGKILL
    }
  });

  it('rank 0 killed: the workers notice the coordinator is gone and name rank 0', TIMEOUT, async () => {
    const peerTimeoutMs = 3000;
    const coordinator = ipcEndpoint();
    const workers = [0, 1, 2].map((rank) => startWorker({ rank, worldSize: 3, coordinator, scenario: 'forever', sizes: [1000], peerTimeoutMs }));
    await Promise.all(workers.map((w) => w.waitFor((l) => l.event === 'synced')));
    workers[0].child.kill('SIGKILL');
    const exits = await Promise.all(workers.map((w) => w.exit));
    for (const r of [1, 2]) {
      assert.equal(exits[r].code, 1, `rank ${r}: ${workers[r].stderr}`);
      assert.match(workers[r].stderr, /lost worker rank 0\b/);
    }
  });

  it('refuses workers whose model spec differs, naming the rank and the field, exit code 2', TIMEOUT, async () => {
    const coordinator = ipcEndpoint();
    const workers = [0, 1, 2].map((rank) =>
      startWorker({ rank, worldSize: 3, coordinator, identity: { config: { batchSize: 128 }, modelSpec: { preset: rank === 2 ? 'tiny' : 'theano-alexnet' } } }),
    );
    const exits = await Promise.all(workers.map((w) => w.exit));
    exits.forEach((e, r) => {
      assert.equal(e.code, 2, `rank ${r}: ${workers[r].stderr}`);
      assert.match(workers[r].stderr, /rank 2 \(pid \d+ on [^)]+\) differs from rank 0 in modelSpec/);
    });
  });

  it('refuses a world-size disagreement', TIMEOUT, async () => {
    const coordinator = ipcEndpoint();
    const a = startWorker({ rank: 0, worldSize: 2, coordinator });
    const b = startWorker({ rank: 1, worldSize: 3, coordinator });
    const [ea, eb] = await Promise.all([a.exit, b.exit]);
    assert.equal(ea.code, 2);
    assert.equal(eb.code, 2);
    assert.match(b.stderr, /rank 1 .* was started with world size 3, rank 0 with 2/);
  });

  it('a coordinator port that cannot be bound is refused with a clear message, exit code 2', TIMEOUT, async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const w = startWorker({ rank: 0, worldSize: 2, coordinator: `tcp://127.0.0.1:${port}` });
      const e = await w.exit;
      assert.equal(e.code, 2, w.stderr);
      assert.match(w.stderr, new RegExp(`cannot bind the coordinator endpoint tcp://127\\.0\\.0\\.1:${port}: address already in use`));
    } finally {
      server.close();
    }
  });
});
