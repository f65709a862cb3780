/**
 * A group of N training workers that average weights over ZeroMQ (DESIGN §6), put together
 * from its parts:
 *  - rendezvous.ts: the control plane's star (rank 0's ROUTER, the workers' DEALERs) and how the
 *    ranks meet and agree on what they train;
 *  - ring.ts: the data plane, a ring of PUSH/PULL sockets that averages weights (reduce-scatter
 *    + all-gather) and broadcasts rank 0's;
 *  - collectives.ts: small all-reduces through rank 0 (metrics, barriers);
 *  - fault-state.ts: what a dropped connection, a report or an abort means in each state.
 *
 * Faults: every socket runs ZMTP heartbeats (libzmq's I/O thread answers them even while a JS
 * thread is busy inside an onnxruntime step). A killed peer's connections close at once; a
 * silent one (hung host, cable) times out after peerTimeoutMs / 2. The neighbours that see a
 * ring connection drop report the lost rank to rank 0, which decides (the first report within a
 * grace period wins, so that the cascade of exits that follows is not blamed) and broadcasts an
 * abort; if rank 0 itself is gone, a worker decides alone when no abort came within
 * peerTimeoutMs / 2. Every pending and later call then rejects with PeerLostError, `error` holds
 * it (the training loop checks it between steps), and `onFatal` runs once.
 *
 * Nothing waits on a timer for messages to reach the wire: control sockets linger (libzmq keeps
 * sending after close, and a process that ends normally waits for it), so a process that stops
 * because of a group failure should end by unwinding, not by process.exit().
 */
import { check, checkOptional, type NamedTensors } from '@alexnet-stream/core';
import type { WorkerGroup } from '../train/worker-group';
import { Collectives } from './collectives';
import { PeerLostError, ProtocolError } from './errors';
import { FaultState, type Verdict } from './fault-state';
import { hashIdentity } from './identity';
import { DEFAULT_FRAME_ELEMENTS } from './plan';
import { rendezvous, type ControlMessage, type Formed } from './rendezvous';
import { Ring, type RingLink, type TransferPrecision } from './ring';
import { closeAll, loadZeroMq, onDisconnect, SendQueue } from './zmq-sockets';

export type { TransferPrecision } from './ring';
export const TRANSFER_PRECISIONS = ['fp32', 'fp16'] as const;

export interface ZmqGroupOptions {
  rank: number;
  worldSize: number;
  /** `tcp://host:port` or `ipc:///path`: rank 0 binds it, the others connect to it. */
  coordinator: string;
  /** Named values that must be equal on every rank (config, model spec, …); compared by hash. */
  identity?: Record<string, unknown>;
  /** A peer that is gone is noticed within this bound (plus the step in progress). Default 30 s. */
  peerTimeoutMs?: number;
  /** How long to wait for all ranks to join. Default 120 s. */
  rendezvousTimeoutMs?: number;
  /** Floats per data message. Default 1 Mi (4 MiB). */
  frameElements?: number;
  /** fp16 halves the bytes on the wire; each average then rounds weights to float16. */
  transfer?: TransferPrecision;
  /** Host name or address other ranks use to reach this one (tcp only). */
  advertiseHost?: string;
  /** Runs once when the group fails after it formed (peer lost, protocol error). */
  onFatal?: (err: Error) => void;
}

/** Check a group's options (done by `join`; callers that want a bad option refused before other work call it first). */
export function checkGroupOptions(options: Omit<ZmqGroupOptions, 'onFatal' | 'identity'>): void {
  check.integer('worldSize', options.worldSize, { min: 1 });
  check.integer('rank', options.rank, { min: 0, max: options.worldSize - 1 });
  checkOptional.oneOf('transfer', options.transfer, TRANSFER_PRECISIONS);
  checkOptional.integer('peerTimeoutMs', options.peerTimeoutMs, { min: 200 });
  checkOptional.integer('rendezvousTimeoutMs', options.rendezvousTimeoutMs, { min: 100 });
  checkOptional.integer('frameElements', options.frameElements, { min: 1 });
}

const DEFAULT_PEER_TIMEOUT_MS = 30_000;
const DEFAULT_RENDEZVOUS_TIMEOUT_MS = 120_000;

export class ZmqWorkerGroup implements WorkerGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly coordinator: string;
  readonly transfer: TransferPrecision;
  private readonly peerTimeoutMs: number;
  private readonly onFatal?: (err: Error) => void;
  private readonly fault = new FaultState();
  private sockets: Formed | undefined;
  private ring: Ring | undefined;
  private collectives: Collectives | undefined;

  private constructor(private readonly options: ZmqGroupOptions) {
    this.rank = options.rank;
    this.worldSize = options.worldSize;
    this.coordinator = options.coordinator;
    this.transfer = options.transfer ?? 'fp32';
    this.peerTimeoutMs = options.peerTimeoutMs ?? DEFAULT_PEER_TIMEOUT_MS;
    this.onFatal = options.onFatal;
  }

  /** Rendezvous with the other ranks; resolves once the ring is connected and all have joined. */
  static async join(options: ZmqGroupOptions): Promise<ZmqWorkerGroup> {
    checkGroupOptions(options);
    const group = new ZmqWorkerGroup(options);
    if (options.worldSize > 1) {
      try {
        await group.form();
      } catch (err) {
        group.closeSockets();
        throw err;
      }
    }
    return group;
  }

  /** The failure that stopped the group, if any. */
  get error(): Error | undefined {
    return this.fault.failure;
  }

  /** How long rank 0 collects reports before it names the lost rank. */
  private get graceMs(): number {
    return Math.max(200, Math.min(2000, Math.floor(this.peerTimeoutMs / 10)));
  }

  // ---------------------------------------------------------------- forming

  private async form(): Promise<void> {
    const o = this.options;
    const sockets = await rendezvous(loadZeroMq(), {
      rank: this.rank,
      worldSize: this.worldSize,
      coordinator: this.coordinator,
      identity: hashIdentity(o.identity ?? {}),
      peerTimeoutMs: this.peerTimeoutMs,
      rendezvousTimeoutMs: o.rendezvousTimeoutMs ?? DEFAULT_RENDEZVOUS_TIMEOUT_MS,
      advertiseHost: o.advertiseHost,
    });
    this.sockets = sockets;
    this.collectives = new Collectives({
      rank: this.rank,
      worldSize: this.worldSize,
      sendResult: (to, seq, kind, payload) => sockets.controlSend.push([sockets.workerIds[to], JSON.stringify({ t: 'result', seq, kind }), payload]),
      sendContribution: (seq, kind, payload) => sockets.controlSend.push([JSON.stringify({ t: 'gather', seq, kind, rank: this.rank }), payload]),
      onProtocolError: (err) => this.fail(err),
    });
    this.ring = new Ring(this.ringLink(sockets), {
      rank: this.rank,
      worldSize: this.worldSize,
      frameElements: o.frameElements ?? DEFAULT_FRAME_ELEMENTS,
      transfer: this.transfer,
      done: async (kind) => void (await this.collective(kind, [])),
      guard: (p) => this.fault.guard(p),
      onProtocolError: (err) => this.fail(err),
    });
    if (sockets.router) void this.coordinatorLoop(sockets.router);
    else void this.workerLoop(sockets.dealer!);
    // Fault detection starts once connections exist. A connection drops when the peer dies
    // (at once) or stays silent past the heartbeat timeout.
    const successor = (this.rank + 1) % this.worldSize;
    const predecessor = (this.rank + this.worldSize - 1) % this.worldSize;
    const why = 'its connection dropped: killed, or silent past the heartbeat timeout';
    onDisconnect(sockets.push, () => this.onNeighbourGone(successor, why));
    onDisconnect(sockets.pull, () => this.onNeighbourGone(predecessor, why));
    if (sockets.dealer) onDisconnect(sockets.dealer, () => this.onNeighbourGone(0, `worker rank ${this.rank} lost its connection to the coordinator`, false));
    sockets.push.connect(sockets.endpoints[successor]);
    await this.barrier();
  }

  /** The ring's connections: PUSH to the successor, PULL from the predecessor. */
  private ringLink(sockets: Formed): RingLink {
    const queue = new SendQueue(sockets.push);
    return {
      send: (parts) => queue.push(parts),
      receive: () => sockets.pull.receive(),
      drained: () => queue.drained(),
    };
  }

  // ---------------------------------------------------------------- control plane

  private async coordinatorLoop(router: NonNullable<Formed['router']>): Promise<void> {
    const { workerIds } = this.sockets!;
    try {
      for await (const [id, body, payload] of router) {
        const msg = JSON.parse(body.toString()) as ControlMessage;
        const from = workerIds.findIndex((w) => w.equals(id));
        if (msg.t === 'gather') this.collectives!.contribute(msg.seq, msg.kind, from, payload);
        else if (msg.t === 'lost') this.onReport(msg.rank, msg.detail, msg.reporter);
      }
    } catch (err) {
      if (!this.fault.isFinal) this.fail(new ProtocolError(`coordinator socket failed: ${(err as Error).message}`));
    }
  }

  private async workerLoop(dealer: NonNullable<Formed['dealer']>): Promise<void> {
    try {
      for await (const [body, payload] of dealer) {
        const msg = JSON.parse(body.toString()) as ControlMessage;
        if (msg.t === 'result') this.collectives!.result(msg.seq, payload);
        else if (msg.t === 'abort') {
          this.fault.receiveVerdict({ rank: msg.rank, detail: msg.detail });
          this.fail(new PeerLostError(msg.rank, msg.detail));
        }
      }
    } catch (err) {
      if (!this.fault.isFinal) this.fail(new ProtocolError(`control socket failed: ${(err as Error).message}`));
    }
  }

  /** A small all-reduce through rank 0, failing with the group. */
  private collective(kind: string, values: number[]): Promise<Float64Array> {
    return this.fault.guard(this.collectives!.collective(kind, values));
  }

  // ---------------------------------------------------------------- faults

  /** A connection dropped: rank `suspect` may be lost (`seen`: the detail is what this rank saw on the ring). */
  private onNeighbourGone(suspect: number, detail: string, seen = true): void {
    if (!this.fault.suspect()) return; // closing, already deciding, or final: the cascade, or expected
    const because = seen ? `worker rank ${this.rank} saw ${detail}` : detail;
    void (this.rank === 0 ? this.decideAsCoordinator(suspect, because) : this.decideAsWorker(suspect, because));
  }

  /** Rank 0: a worker's report. The first report names the culprit; later ones are the cascade. */
  private onReport(rank: number, detail: string, reporter: number): void {
    this.fault.report({ rank, detail: reporter === rank ? detail : `${detail}, reported by rank ${reporter}` });
    if (this.fault.suspect()) void this.decideAsCoordinator(rank, detail);
  }

  /**
   * Rank 0 settles on one lost rank after a grace period (a disconnect can overtake the control
   * message that explains it, and the first report is the most precise), then aborts everyone.
   */
  private async decideAsCoordinator(suspect: number, detail: string): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, this.graceMs));
    if (this.fault.phase !== 'suspecting') return; // closed meanwhile: a clean leave, not a fault
    const verdict: Verdict = this.fault.firstReport ?? { rank: suspect, detail };
    const { controlSend, workerIds } = this.sockets!;
    for (let r = 1; r < this.worldSize; r++) controlSend.push([workerIds[r], JSON.stringify({ t: 'abort', rank: verdict.rank, detail: verdict.detail })]);
    this.fail(new PeerLostError(verdict.rank, verdict.detail));
  }

  /** A worker reports what it saw (unless rank 0 is the suspect) and waits for rank 0's abort; if rank 0 is gone, it decides alone. */
  private async decideAsWorker(suspect: number, detail: string): Promise<void> {
    if (suspect !== 0) this.sockets!.controlSend.push([JSON.stringify({ t: 'lost', rank: suspect, detail, reporter: this.rank })]);
    await this.fault.waitForVerdict(Math.max(this.graceMs, Math.floor(this.peerTimeoutMs / 2)));
    if (this.fault.phase === 'closed') return;
    const verdict = this.fault.verdict ?? { rank: suspect, detail };
    this.fail(new PeerLostError(verdict.rank, verdict.detail));
  }

  /**
   * The group has failed: every operation rejects with `err`, the sockets close (the control
   * sockets still deliver what is queued: linger), and `onFatal` runs once.
   */
  private fail(err: Error): void {
    if (!this.fault.fail(err)) return;
    void (async () => {
      await this.sockets?.controlSend.drained().catch(() => undefined);
      this.closeSockets();
      this.onFatal?.(err);
    })();
  }

  private closeSockets(): void {
    const s = this.sockets;
    if (s) closeAll([s.push, s.pull, s.dealer, s.router]);
  }

  // ---------------------------------------------------------------- WorkerGroup

  async averageWeights(tensors: NamedTensors): Promise<NamedTensors> {
    this.throwIfFailed();
    await this.ring?.allReduceMean(
      Object.keys(tensors)
        .sort()
        .map((k) => tensors[k]),
    );
    return tensors;
  }

  async broadcastWeights(tensors: NamedTensors): Promise<NamedTensors> {
    this.throwIfFailed();
    await this.ring?.broadcast(
      Object.keys(tensors)
        .sort()
        .map((k) => tensors[k]),
    );
    return tensors;
  }

  /** Replace each array by the mean over ranks, in place (what averageWeights does, by position). */
  async allReduceMean(arrays: Float32Array[]): Promise<void> {
    this.throwIfFailed();
    await this.ring?.allReduceMean(arrays);
  }

  async averageMetrics(values: number[]): Promise<number[]> {
    this.throwIfFailed();
    if (this.worldSize === 1) return [...values];
    return Array.from(await this.collective('metrics', values));
  }

  async barrier(): Promise<void> {
    this.throwIfFailed();
    if (this.worldSize === 1) return;
    await this.collective('barrier', []);
  }

  /** Leave together: a last collective (so nobody mistakes a clean exit for a crash), then close. */
  async close(): Promise<void> {
    if (this.worldSize > 1 && this.fault.startClosing()) {
      try {
        await this.collective('close', []);
        await this.sockets!.controlSend.drained().catch(() => undefined);
      } finally {
        this.fault.close();
        this.closeSockets(); // rank 0's last results still go out: the router lingers
      }
    } else if (!this.fault.isFinal) {
      this.fault.close();
      this.closeSockets();
    }
    this.throwIfFailed();
  }

  /**
   * This rank cannot go on (an error of its own): tell the others, who stop with a
   * PeerLostError naming this rank and `reason`, then close. Never waits for the others.
   */
  async abort(reason: string): Promise<void> {
    if (this.worldSize === 1 || this.fault.isFinal) {
      this.fault.close();
      this.closeSockets();
      return;
    }
    const detail = `it stopped: ${reason}`;
    const { controlSend, workerIds } = this.sockets!;
    if (this.rank === 0) {
      for (let r = 1; r < this.worldSize; r++) controlSend.push([workerIds[r], JSON.stringify({ t: 'abort', rank: 0, detail })]);
    } else {
      controlSend.push([JSON.stringify({ t: 'lost', rank: this.rank, detail, reporter: this.rank })]);
    }
    this.fault.fail(new PeerLostError(this.rank, detail));
    await controlSend.drained().catch(() => undefined); // queued; the control socket's linger delivers it
    this.closeSockets();
  }

  private throwIfFailed(): void {
    if (this.fault.failure) throw this.fault.failure;
  }
}

/** Join a ZeroMQ group (see ZmqWorkerGroup). */
export function joinGroup(options: ZmqGroupOptions): Promise<ZmqWorkerGroup> {
  return ZmqWorkerGroup.join(options);
}
