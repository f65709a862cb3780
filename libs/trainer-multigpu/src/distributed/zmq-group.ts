/**
 * A group of N training workers that average weights over ZeroMQ (DESIGN §6).
 *
 * Topology
 *  - Control plane, a star: rank 0 binds a ROUTER on the coordinator endpoint; every other
 *    rank connects a DEALER. Used for rendezvous (rank, world size, config/spec hashes, data
 *    endpoint), small collectives (metrics average, barrier) and fault reports / abort.
 *  - Data plane, a ring: rank r binds a PULL (its predecessor r-1 pushes into it) and connects
 *    a PUSH to rank r+1. Weights are averaged by a ring all-reduce, reduce-scatter then
 *    all-gather, over frames of at most `frameElements` floats (4 MiB by default), pipelined
 *    frame by frame. Each rank sends and receives 2(n-1)/n of the model per average, whatever n.
 *  - Bit-identical replicas by construction: each segment of the flattened model has exactly
 *    one owner that computes its final value (the ring sum, in a fixed order, divided by n),
 *    and the all-gather only copies that value. Nobody recomputes a value someone else has.
 *
 * Faults: every socket runs ZMTP heartbeats (handled by libzmq's I/O thread, so a JS thread
 * busy inside an onnxruntime step still answers them). A killed peer's connections close at
 * once; a silent one (hung host, cable) times out after peerTimeoutMs / 2. The neighbours
 * that see a ring connection drop report the lost rank to rank 0, which decides (the first
 * report wins, so that the cascade of exits that follows is not blamed) and broadcasts an
 * abort; if rank 0 itself is gone, workers decide alone after peerTimeoutMs / 2. Every
 * pending and later call then rejects with PeerLostError and `onFatal` runs once.
 */
import { hostname, networkInterfaces } from 'node:os';
import type * as zmq from 'zeromq';
import { addHalfInto, check, checkOptional, decodeHalfInto, encodeHalf, type NamedTensors, roundToHalfInPlace } from '@alexnet-stream/core';
import { PeerLostError, ProtocolError, RendezvousError } from './errors';
import { differingFields, hashIdentity, type IdentityHashes } from './identity';
import { parseEndpoint } from './launch-env';
import { DEFAULT_FRAME_ELEMENTS, planRing, type RingPlan } from './plan';

export const TRANSFER_PRECISIONS = ['fp32', 'fp16'] as const;
export type TransferPrecision = (typeof TRANSFER_PRECISIONS)[number];

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

/** What the training loop needs from a group of workers (single-process or ZeroMQ). */
export interface DistributedGroup {
  readonly rank: number;
  readonly worldSize: number;
  /** Replace every tensor by the mean over ranks, in place; every rank ends bit-identical. */
  averageWeights(tensors: NamedTensors): Promise<NamedTensors>;
  /** Mean of each value over ranks, summed in rank order; every rank gets the same numbers. */
  averageMetrics(values: number[]): Promise<number[]>;
  /** Copy rank 0's tensors to every rank, in place. */
  broadcastWeights(tensors: NamedTensors): Promise<NamedTensors>;
  barrier(): Promise<void>;
  close(): Promise<void>;
  /** This rank failed on its own: the others stop, naming it. */
  abort(reason: string): Promise<void>;
}

const DEFAULT_PEER_TIMEOUT_MS = 30_000;
const DEFAULT_RENDEZVOUS_TIMEOUT_MS = 120_000;
const CONTROL_LINGER_MS = 1000;

/** Data message header: op sequence, phase, step, frame index (uint32 each). */
const enum Phase {
  ReduceScatter = 0,
  AllGather = 1,
  Broadcast = 2,
}

type Hello = {
  t: 'hello';
  rank: number;
  worldSize: number;
  identity: IdentityHashes;
  dataEndpoint: string;
  host: string;
  pid: number;
};
type ControlMessage =
  | Hello
  | { t: 'welcome'; endpoints: string[] }
  | { t: 'refused'; reason: string }
  | { t: 'gather'; seq: number; kind: string; rank: number }
  | { t: 'result'; seq: number; kind: string }
  | { t: 'lost'; rank: number; detail: string; reporter: number }
  | { t: 'abort'; rank: number; detail: string };

/** zeromq (a native module) is loaded by the first group that forms, not by the package barrel. */
function loadZeroMq(): typeof zmq {
  return require('zeromq') as typeof zmq;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host.startsWith('127.') || host === '[::1]';
}

function isIpLiteral(host: string): boolean {
  return /^\d+\.\d+\.\d+\.\d+$/.test(host) || host.startsWith('[') || host === '*';
}

/** The address other hosts can reach us at: first non-internal IPv4, else the host name. */
function defaultAdvertiseHost(): string {
  if (process.env.ALEXNET_STREAM_HOST) return process.env.ALEXNET_STREAM_HOST;
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return hostname();
}

function socketOptions(peerTimeoutMs: number) {
  // libzmq's heartbeats: PING every interval; a connection with no traffic for `timeout`
  // after a PING is closed (and we see a 'disconnect'). TTL tells the peer the same bound.
  const half = Math.max(200, Math.floor(peerTimeoutMs / 2));
  return {
    heartbeatInterval: Math.max(50, Math.min(1000, Math.floor(half / 4))),
    heartbeatTimeout: half,
    heartbeatTimeToLive: half,
  };
}

/** A serial send queue: zeromq allows one send in flight per socket. */
class SendQueue {
  private tail: Promise<void> = Promise.resolve();
  private error: unknown;
  constructor(private readonly socket: zmq.Writable) {}
  push(parts: zmq.MessageLike[]): void {
    this.tail = this.tail.then(async () => {
      if (this.error === undefined) await this.socket.send(parts);
    });
    this.tail.catch((err) => {
      this.error ??= err;
    });
  }
  async drained(): Promise<void> {
    await this.tail;
    if (this.error !== undefined) throw this.error;
  }
}

// Numeric kernels as small top-level functions: V8 optimizes them once, monomorphically,
// where the same loops inlined in the big async method ran ~10x slower.
function addInto(dst: Float32Array, src: Float32Array): void {
  for (let i = 0; i < dst.length; i++) dst[i] += src[i];
}

/** dst = (dst + src) / n: the owner's last addition and the mean, in one pass. */
function addAndDivide(dst: Float32Array, src: Float32Array, n: number): void {
  // For n a power of two, x * (1/n) is exactly x / n (1/n is exact), and a multiply is
  // cheaper than a divide; otherwise divide, so that the mean is the correctly rounded sum / n.
  if ((n & (n - 1)) === 0) {
    const inverse = 1 / n;
    for (let i = 0; i < dst.length; i++) dst[i] = (dst[i] + src[i]) * inverse;
  } else {
    for (let i = 0; i < dst.length; i++) dst[i] = (dst[i] + src[i]) / n;
  }
}

/**
 * Watch a socket's connections closing. Starting the monitor can fail with EINTR when a
 * signal (a profiler's SIGPROF, a terminal resize) lands in the system call: try again.
 */
function onDisconnect(socket: zmq.Socket, listener: () => void): void {
  for (let attempt = 1; ; attempt++) {
    try {
      socket.events.on('disconnect', listener);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINTR' || attempt >= 10) throw err;
    }
  }
}

let zeroBuffer = new Float32Array(0);
function zeros(length: number): Float32Array {
  if (zeroBuffer.length < length) zeroBuffer = new Float32Array(length);
  return zeroBuffer.subarray(0, length);
}

/** A Uint32 view-able copy of a received part when zeromq hands us an unaligned buffer. */
function aligned(buf: Buffer, bytesPerElement: number): Buffer {
  if (buf.byteOffset % bytesPerElement === 0) return buf;
  const copy = Buffer.alloc(buf.length);
  buf.copy(copy);
  return copy;
}

export class ZmqWorkerGroup implements DistributedGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly coordinator: string;
  readonly transfer: TransferPrecision;
  private readonly peerTimeoutMs: number;
  private readonly frameElements: number;
  private readonly onFatal?: (err: Error) => void;

  private router?: zmq.Router;
  private dealer?: zmq.Dealer;
  private pull?: zmq.Pull;
  private push?: zmq.Push;
  private controlSend?: SendQueue;
  private dataSend?: SendQueue;
  /** Routing ids of workers (rank 0 only), index = rank. */
  private workerIds: Buffer[] = [];

  private opSeq = 0;
  private collectiveSeq = 0;
  /** Rank 0: contributions per collective seq. Workers: results per seq. */
  private contributions = new Map<number, Map<number, { kind: string; values: Float64Array }>>();
  private waiters = new Map<number, { kind: string; resolve: (v: Float64Array) => void }>();
  private earlyResults = new Map<number, Float64Array>();

  private failure?: Error;
  private failing = false;
  private failedPromise: Promise<never>;
  private rejectFailed!: (err: Error) => void;
  private firstReport?: { rank: number; detail: string };
  private abortReceived?: { rank: number; detail: string };
  private closed = false;
  private closing = false;
  private planCache = new Map<string, RingPlan>();

  private constructor(options: ZmqGroupOptions) {
    this.rank = options.rank;
    this.worldSize = options.worldSize;
    this.coordinator = options.coordinator;
    this.transfer = options.transfer ?? 'fp32';
    this.peerTimeoutMs = options.peerTimeoutMs ?? DEFAULT_PEER_TIMEOUT_MS;
    this.frameElements = options.frameElements ?? DEFAULT_FRAME_ELEMENTS;
    this.onFatal = options.onFatal;
    this.failedPromise = new Promise<never>((_resolve, reject) => {
      this.rejectFailed = reject;
    });
    this.failedPromise.catch(() => undefined); // observed through race() in every operation
  }

  /** Rendezvous with the other ranks; resolves once the ring is connected and all have joined. */
  static async join(options: ZmqGroupOptions): Promise<ZmqWorkerGroup> {
    const { worldSize } = options;
    checkGroupOptions(options);
    const group = new ZmqWorkerGroup(options);
    if (worldSize === 1) return group;
    try {
      await group.rendezvous(options);
    } catch (err) {
      group.closeSockets();
      throw err;
    }
    return group;
  }

  private get graceMs(): number {
    return Math.max(200, Math.min(2000, Math.floor(this.peerTimeoutMs / 10)));
  }

  // ---------------------------------------------------------------- rendezvous

  private async rendezvous(options: ZmqGroupOptions): Promise<void> {
    const endpoint = parseEndpoint(this.coordinator);
    const identity = hashIdentity(options.identity ?? {});
    const timeoutMs = options.rendezvousTimeoutMs ?? DEFAULT_RENDEZVOUS_TIMEOUT_MS;
    const sockOpts = socketOptions(this.peerTimeoutMs);

    // Our data endpoint: the predecessor pushes into it.
    const z = loadZeroMq();
    this.pull = new z.Pull({ ...sockOpts, linger: 0, receiveHighWaterMark: 64 });
    let dataEndpoint: string;
    if (endpoint.transport === 'ipc') {
      const bindAt = `ipc://${endpoint.path}.rank${this.rank}`;
      await this.pull.bind(bindAt);
      dataEndpoint = bindAt;
    } else {
      const local = isLoopbackHost(endpoint.host);
      await this.pull.bind(local ? 'tcp://127.0.0.1:*' : 'tcp://*:*');
      const port = /:(\d+)$/.exec(this.pull.lastEndpoint ?? '')?.[1];
      const host = local ? '127.0.0.1' : (options.advertiseHost ?? defaultAdvertiseHost());
      dataEndpoint = `tcp://${host}:${port}`;
    }
    const hello: Hello = { t: 'hello', rank: this.rank, worldSize: this.worldSize, identity, dataEndpoint, host: hostname(), pid: process.pid };

    let endpoints: string[];
    if (this.rank === 0) {
      this.router = new z.Router({ ...sockOpts, linger: CONTROL_LINGER_MS, mandatory: false });
      let bindAt = this.coordinator;
      if (endpoint.transport === 'tcp' && !isIpLiteral(endpoint.host)) {
        bindAt = isLoopbackHost(endpoint.host) ? `tcp://127.0.0.1:${endpoint.port}` : `tcp://*:${endpoint.port}`;
      }
      try {
        await this.router.bind(bindAt);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        const why = e.code === 'EADDRINUSE' ? 'address already in use (another job? choose another port)' : e.message;
        throw new RendezvousError(`rank 0 cannot bind the coordinator endpoint ${bindAt}: ${why}`);
      }
      this.controlSend = new SendQueue(this.router);
      endpoints = await this.gatherHellos(hello, timeoutMs);
    } else {
      this.dealer = new z.Dealer({
        ...sockOpts,
        linger: CONTROL_LINGER_MS,
        routingId: `rank${this.rank}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`,
      });
      this.dealer.connect(this.coordinator);
      this.controlSend = new SendQueue(this.dealer);
      this.controlSend.push([JSON.stringify(hello)]);
      // Longer than rank 0's own deadline, so that its refusal (naming who is missing) wins.
      endpoints = await this.awaitWelcome(timeoutMs + 5000);
    }

    // Ring: connect to the successor. Fault detection starts once connections exist.
    this.push = new z.Push({ ...sockOpts, linger: 0, sendHighWaterMark: 64 });
    this.dataSend = new SendQueue(this.push);
    const successor = (this.rank + 1) % this.worldSize;
    const predecessor = (this.rank + this.worldSize - 1) % this.worldSize;
    // A connection drops when the peer dies (at once) or stays silent past the heartbeat timeout.
    const why = 'its connection dropped: killed, or silent past the heartbeat timeout';
    onDisconnect(this.push, () => this.onNeighbourGone(successor, why));
    onDisconnect(this.pull, () => this.onNeighbourGone(predecessor, why));
    if (this.dealer) onDisconnect(this.dealer, () => this.onCoordinatorGone());
    this.push.connect(endpoints[successor]);
    await this.barrier();
  }

  private async gatherHellos(own: Hello, timeoutMs: number): Promise<string[]> {
    const router = this.router!;
    const hellos = new Map<number, { id: Buffer; hello: Hello }>();
    const problems: string[] = [];
    const ids: Buffer[] = [];
    const deadline = Date.now() + timeoutMs;
    router.receiveTimeout = 250;
    // Wait for one hello per other rank (counting refused ones), so that every worker hears why.
    while (ids.length < this.worldSize - 1) {
      if (Date.now() > deadline) {
        const missing = [...Array(this.worldSize).keys()].filter((r) => r !== 0 && !hellos.has(r));
        const reason = `only ${hellos.size + 1} of ${this.worldSize} ranks joined within ${Math.round(timeoutMs / 1000)} s; missing rank(s) ${missing.join(', ')}`;
        await this.refuseAll(ids, reason);
        throw new RendezvousError(reason);
      }
      let parts: Buffer[];
      try {
        parts = await router.receive();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') continue;
        throw err;
      }
      const [id, body] = parts;
      let msg: ControlMessage;
      try {
        msg = JSON.parse(body.toString());
      } catch {
        continue; // not one of ours (a port scanner, a stray client): ignore
      }
      if (msg.t !== 'hello') continue;
      ids.push(id);
      const where = `rank ${msg.rank} (pid ${msg.pid} on ${msg.host})`;
      if (msg.worldSize !== this.worldSize) {
        problems.push(`${where} was started with world size ${msg.worldSize}, rank 0 with ${this.worldSize}`);
      } else if (msg.rank === 0 || msg.rank >= this.worldSize || hellos.has(msg.rank)) {
        problems.push(`${where}: rank ${msg.rank} is ${msg.rank === 0 ? 'rank 0 itself' : hellos.has(msg.rank) ? 'taken twice' : 'out of range'}`);
      } else {
        const differ = differingFields(own.identity, msg.identity);
        if (differ.length) problems.push(`${where} differs from rank 0 in ${differ.join(', ')}`);
        hellos.set(msg.rank, { id, hello: msg });
      }
    }
    router.receiveTimeout = -1;
    if (problems.length) {
      const reason = `workers refused: ${problems.join('; ')}`;
      await this.refuseAll(ids, reason);
      throw new RendezvousError(reason);
    }
    const endpoints = [own.dataEndpoint];
    this.workerIds = [Buffer.alloc(0)];
    for (let r = 1; r < this.worldSize; r++) {
      endpoints.push(hellos.get(r)!.hello.dataEndpoint);
      this.workerIds.push(hellos.get(r)!.id);
    }
    for (let r = 1; r < this.worldSize; r++) this.controlSend!.push([this.workerIds[r], JSON.stringify({ t: 'welcome', endpoints })]);
    await this.controlSend!.drained();
    void this.coordinatorLoop();
    return endpoints;
  }

  private async refuseAll(ids: Buffer[], reason: string): Promise<void> {
    for (const id of ids) this.controlSend!.push([id, JSON.stringify({ t: 'refused', reason })]);
    await this.controlSend!.drained();
    await sleep(100); // let libzmq put them on the wire before the socket closes
  }

  private async awaitWelcome(timeoutMs: number): Promise<string[]> {
    const dealer = this.dealer!;
    dealer.receiveTimeout = timeoutMs;
    let parts: Buffer[];
    try {
      parts = await dealer.receive();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
        throw new RendezvousError(`no answer from the coordinator ${this.coordinator} within ${Math.round(timeoutMs / 1000)} s (is rank 0 running, and are all ${this.worldSize} ranks started?)`);
      }
      throw err;
    }
    dealer.receiveTimeout = -1;
    const msg = JSON.parse(parts[0].toString()) as ControlMessage;
    if (msg.t === 'refused') throw new RendezvousError(msg.reason);
    if (msg.t !== 'welcome') throw new ProtocolError(`unexpected first message from the coordinator: ${msg.t}`);
    void this.workerLoop();
    return msg.endpoints;
  }

  // ---------------------------------------------------------------- control plane

  private async coordinatorLoop(): Promise<void> {
    const router = this.router!;
    try {
      for await (const [id, body, payload] of router) {
        const msg = JSON.parse(body.toString()) as ControlMessage;
        const from = this.workerIds.findIndex((w) => w.equals(id));
        if (msg.t === 'gather') this.contribute(msg.seq, msg.kind, from, payload);
        else if (msg.t === 'lost') this.onReport(msg.rank, msg.detail, msg.reporter);
      }
    } catch (err) {
      if (!this.closed) this.fail(new ProtocolError(`coordinator socket failed: ${(err as Error).message}`));
    }
  }

  private async workerLoop(): Promise<void> {
    const dealer = this.dealer!;
    try {
      for await (const [body, payload] of dealer) {
        const msg = JSON.parse(body.toString()) as ControlMessage;
        if (msg.t === 'result') {
          const b = aligned(payload, 8);
          const values = Float64Array.from(new Float64Array(b.buffer, b.byteOffset, b.length / 8));
          const waiter = this.waiters.get(msg.seq);
          if (waiter) {
            this.waiters.delete(msg.seq);
            waiter.resolve(values);
          } else this.earlyResults.set(msg.seq, values);
        } else if (msg.t === 'abort') {
          this.abortReceived = { rank: msg.rank, detail: msg.detail };
          this.fail(new PeerLostError(msg.rank, msg.detail));
        }
      }
    } catch (err) {
      if (!this.closed) this.fail(new ProtocolError(`control socket failed: ${(err as Error).message}`));
    }
  }

  /** Rank 0: one rank's contribution to collective `seq`; completes it when all are in. */
  private contribute(seq: number, kind: string, from: number, payload: Buffer | undefined): void {
    const b = payload && payload.length ? aligned(payload, 8) : Buffer.alloc(0);
    const values = Float64Array.from(new Float64Array(b.buffer, b.byteOffset, b.length / 8));
    let entry = this.contributions.get(seq);
    if (!entry) this.contributions.set(seq, (entry = new Map()));
    entry.set(from, { kind, values });
    const waiter = this.waiters.get(seq);
    if (entry.size === this.worldSize && waiter) this.completeCollective(seq);
  }

  private completeCollective(seq: number): void {
    const entry = this.contributions.get(seq)!;
    this.contributions.delete(seq);
    const waiter = this.waiters.get(seq)!;
    this.waiters.delete(seq);
    const length = entry.get(0)!.values.length;
    for (const [r, { kind, values }] of entry) {
      if (kind !== waiter.kind || values.length !== length) {
        this.fail(new ProtocolError(`rank ${r} called ${kind} with ${values.length} values where rank 0 called ${waiter.kind} with ${length} (collective #${seq}): the ranks run different code or configs`));
        return;
      }
    }
    // Sum in rank order so that the result does not depend on arrival order.
    const mean = new Float64Array(length);
    for (let r = 0; r < this.worldSize; r++) {
      const v = entry.get(r)!.values;
      for (let i = 0; i < length; i++) mean[i] += v[i];
    }
    for (let i = 0; i < length; i++) mean[i] /= this.worldSize;
    const bytes = Buffer.from(mean.buffer, mean.byteOffset, mean.byteLength);
    for (let r = 1; r < this.worldSize; r++) this.controlSend!.push([this.workerIds[r], JSON.stringify({ t: 'result', seq, kind: waiter.kind }), bytes]);
    waiter.resolve(mean);
  }

  /** A small all-reduce through rank 0 (metrics, barriers). */
  private collective(kind: string, values: number[]): Promise<Float64Array> {
    const seq = this.collectiveSeq++;
    const own = Float64Array.from(values);
    const result = new Promise<Float64Array>((resolve) => {
      if (this.rank === 0) {
        this.waiters.set(seq, { kind, resolve });
        this.contribute(seq, kind, 0, Buffer.from(own.buffer));
      } else {
        const early = this.earlyResults.get(seq);
        if (early) {
          this.earlyResults.delete(seq);
          resolve(early);
        } else this.waiters.set(seq, { kind, resolve });
        this.controlSend!.push([JSON.stringify({ t: 'gather', seq, kind, rank: this.rank }), Buffer.from(own.buffer)]);
      }
    });
    return this.guard(result);
  }

  // ---------------------------------------------------------------- faults

  private onNeighbourGone(rank: number, detail: string): void {
    if (this.closed || this.failing) return;
    void this.decide(rank, `worker rank ${this.rank} saw ${detail}`);
  }

  private onCoordinatorGone(): void {
    if (this.closed || this.failing) return;
    void this.decide(0, `worker rank ${this.rank} lost its connection to the coordinator`);
  }

  /** Rank 0: a worker's report. The first report names the culprit; later ones are the cascade. */
  private onReport(rank: number, detail: string, reporter: number): void {
    this.firstReport ??= { rank, detail: reporter === rank ? detail : `${detail}, reported by rank ${reporter}` };
    if (!this.failing) void this.decide(rank, detail);
  }

  /**
   * Something dropped. Wait a little (a disconnect can overtake the control message that
   * explains it: a clean close, an abort), then settle on one lost rank and stop.
   */
  private async decide(suspect: number, detail: string): Promise<void> {
    if (this.failing) return;
    this.failing = true;
    if (this.rank === 0) {
      await sleep(this.graceMs);
      if (this.closed) {
        this.failing = false;
        return;
      }
      const verdict = this.firstReport ?? { rank: suspect, detail };
      for (let r = 1; r < this.worldSize; r++) {
        this.controlSend!.push([this.workerIds[r], JSON.stringify({ t: 'abort', rank: verdict.rank, detail: verdict.detail })]);
      }
      this.finishFailure(new PeerLostError(verdict.rank, verdict.detail));
      return;
    }
    if (suspect !== 0) this.controlSend!.push([JSON.stringify({ t: 'lost', rank: suspect, detail, reporter: this.rank })]);
    // Rank 0 answers with an abort as soon as its thread is free; if it is gone, decide alone.
    const deadline = Date.now() + Math.max(this.graceMs, Math.floor(this.peerTimeoutMs / 2));
    while (Date.now() < deadline && !this.abortReceived && !this.closed) await sleep(50);
    if (this.closed && !this.abortReceived) {
      this.failing = false;
      return;
    }
    const verdict = this.abortReceived ?? { rank: suspect, detail };
    this.finishFailure(new PeerLostError(verdict.rank, verdict.detail));
  }

  private fail(err: Error): void {
    if (this.failure) return;
    if (err instanceof PeerLostError && this.rank !== 0) this.abortReceived ??= { rank: err.lostRank, detail: err.detail };
    this.failing = true;
    this.finishFailure(err);
  }

  private finishFailure(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.rejectFailed(err);
    // Let libzmq put our abort/lost messages on the wire before the owner stops the process:
    // process.exit() does not wait for socket linger.
    void (async () => {
      await this.controlSend?.drained().catch(() => undefined);
      await sleep(this.rank === 0 ? 300 : 100);
      this.closeSockets();
      this.onFatal?.(err);
    })();
  }

  private guard<T>(p: Promise<T>): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    return Promise.race([p, this.failedPromise]);
  }

  /** The failure that stopped the group, if any. */
  get error(): Error | undefined {
    return this.failure;
  }

  // ---------------------------------------------------------------- data plane

  private planFor(arrays: Float32Array[]): RingPlan {
    const lengths = arrays.map((a) => a.length);
    const key = lengths.join(',');
    let plan = this.planCache.get(key);
    if (!plan) {
      plan = planRing(lengths, this.worldSize, this.frameElements);
      this.planCache.set(key, plan);
    }
    return plan;
  }

  private header(op: number, phase: Phase, step: number, frame: number): Buffer {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(op >>> 0, 0);
    h.writeUInt32LE(phase, 4);
    h.writeUInt32LE(step, 8);
    h.writeUInt32LE(frame, 12);
    return h;
  }

  private payload(view: Float32Array): Buffer {
    if (this.transfer === 'fp16') {
      const half = encodeHalf(view);
      return Buffer.from(half.buffer, half.byteOffset, half.byteLength);
    }
    // Zero copy: the slice is not written again until the all-gather brings its final
    // value, which causally follows this message's arrival at the successor.
    return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
  }

  private async receiveFrame(op: number, phase: Phase, step: number, frame: number, length: number, bytesPerElement: number): Promise<Buffer> {
    const parts = await this.guard(this.pull!.receive());
    const [h, body] = parts;
    const predecessor = (this.rank + this.worldSize - 1) % this.worldSize;
    const got = [h.readUInt32LE(0), h.readUInt32LE(4), h.readUInt32LE(8), h.readUInt32LE(12)];
    const bytes = length * bytesPerElement;
    if (got[0] !== op >>> 0 || got[1] !== phase || got[2] !== step || got[3] !== frame || body.length !== bytes) {
      throw this.protocolFailure(
        `rank ${this.rank} expected frame (op ${op}, phase ${phase}, step ${step}, frame ${frame}, ${bytes} bytes) from rank ${predecessor} ` +
          `but got (op ${got[0]}, phase ${got[1]}, step ${got[2]}, frame ${got[3]}, ${body.length} bytes): the ranks disagree on the tensors or the call order`,
      );
    }
    return aligned(body, bytesPerElement);
  }

  private protocolFailure(message: string): Error {
    const err = new ProtocolError(message);
    this.fail(err);
    return err;
  }

  /** Replace each array by the mean over ranks, in place (ring reduce-scatter + all-gather). */
  async allReduceMean(arrays: Float32Array[]): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.worldSize === 1) return;
    const op = this.opSeq++;
    const n = this.worldSize;
    const plan = this.planFor(arrays);
    const views = plan.frames.map((f) => arrays[f.tensor].subarray(f.offset, f.offset + f.length));
    const segment = (k: number) => plan.segments[((k % n) + n) % n];
    const send = this.dataSend!;
    const fp16 = this.transfer === 'fp16';
    const width = fp16 ? 2 : 4;

    for (const f of segment(this.rank)) send.push([this.header(op, Phase.ReduceScatter, 0, f), this.payload(views[f])]);
    for (let step = 0; step < n - 1; step++) {
      for (const f of segment(this.rank - step - 1)) {
        const body = await this.receiveFrame(op, Phase.ReduceScatter, step, f, views[f].length, width);
        const view = views[f];
        const last = step === n - 2;
        if (fp16) {
          addHalfInto(new Uint16Array(body.buffer, body.byteOffset, view.length), view);
          if (last) addAndDivide(view, zeros(view.length), n);
        } else {
          const incoming = new Float32Array(body.buffer, body.byteOffset, view.length);
          if (last) addAndDivide(view, incoming, n);
          else addInto(view, incoming);
        }
        if (!last) send.push([this.header(op, Phase.ReduceScatter, step + 1, f), this.payload(view)]);
        else {
          // This rank owns the segment: its value is final here and only copied elsewhere.
          if (fp16) roundToHalfInPlace(view);
          send.push([this.header(op, Phase.AllGather, 0, f), this.payload(view)]);
        }
      }
    }
    for (let step = 0; step < n - 1; step++) {
      for (const f of segment(this.rank - step)) {
        const body = await this.receiveFrame(op, Phase.AllGather, step, f, views[f].length, width);
        if (fp16) decodeHalfInto(new Uint16Array(body.buffer, body.byteOffset, views[f].length), views[f]);
        else views[f].set(new Float32Array(body.buffer, body.byteOffset, views[f].length));
        if (step < n - 2) send.push([this.header(op, Phase.AllGather, step + 1, f), this.payload(views[f])]);
      }
    }
    await this.guard(send.drained());
    // Sends are zero-copy: libzmq reads the caller's arrays until the bytes are on the wire.
    // Once every rank has received everything (this barrier), the caller may write them again.
    await this.collective('allreduce-done', []);
  }

  /** Copy rank 0's arrays to every rank along the ring (always float32: exact). */
  async broadcast(arrays: Float32Array[]): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.worldSize === 1) return;
    const op = this.opSeq++;
    const plan = this.planFor(arrays);
    const views = plan.frames.map((f) => arrays[f.tensor].subarray(f.offset, f.offset + f.length));
    const send = this.dataSend!;
    const last = this.rank === this.worldSize - 1;
    const raw = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    if (this.rank === 0) {
      views.forEach((v, f) => send.push([this.header(op, Phase.Broadcast, 0, f), raw(v)]));
    } else {
      for (let f = 0; f < views.length; f++) {
        const body = await this.receiveFrame(op, Phase.Broadcast, 0, f, views[f].length, 4);
        views[f].set(new Float32Array(body.buffer, body.byteOffset, views[f].length));
        if (!last) send.push([this.header(op, Phase.Broadcast, 0, f), raw(views[f])]);
      }
    }
    await this.guard(send.drained());
    await this.collective('broadcast-done', []); // see allReduceMean: zero-copy sends
  }

  // ---------------------------------------------------------------- DistributedGroup

  async averageWeights(tensors: NamedTensors): Promise<NamedTensors> {
    await this.allReduceMean(Object.keys(tensors).sort().map((k) => tensors[k]));
    return tensors;
  }

  async broadcastWeights(tensors: NamedTensors): Promise<NamedTensors> {
    await this.broadcast(Object.keys(tensors).sort().map((k) => tensors[k]));
    return tensors;
  }

  async averageMetrics(values: number[]): Promise<number[]> {
    if (this.failure) throw this.failure;
    if (this.worldSize === 1) return [...values];
    return Array.from(await this.collective('metrics', values));
  }

  async barrier(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.worldSize === 1) return;
    await this.collective('barrier', []);
  }

  /** Leave together: a last barrier (so nobody mistakes a clean exit for a crash), then close. */
  async close(): Promise<void> {
    if (this.closed || this.closing) return;
    this.closing = true;
    try {
      if (!this.failure && this.worldSize > 1) {
        await this.collective('close', []);
        if (this.controlSend) await this.controlSend.drained().catch(() => undefined);
      }
    } finally {
      this.closed = true;
      if (this.rank === 0 && this.worldSize > 1) await sleep(50); // let the last results reach the wire
      this.closeSockets();
    }
    if (this.failure) throw this.failure;
  }

  /**
   * This rank cannot go on (an error of its own): tell the others, who stop with a
   * PeerLostError naming this rank and `reason`, then close. Never waits for the others.
   */
  async abort(reason: string): Promise<void> {
    if (this.closed || this.failure || this.worldSize === 1) {
      this.closed = true;
      this.closeSockets();
      return;
    }
    const detail = `it stopped: ${reason}`;
    this.failure = new PeerLostError(this.rank, detail);
    this.rejectFailed(this.failure);
    if (this.rank === 0) {
      for (let r = 1; r < this.worldSize; r++) this.controlSend!.push([this.workerIds[r], JSON.stringify({ t: 'abort', rank: 0, detail })]);
    } else {
      this.controlSend!.push([JSON.stringify({ t: 'lost', rank: this.rank, detail, reporter: this.rank })]);
    }
    await this.controlSend!.drained().catch(() => undefined);
    await sleep(200); // on the wire before the sockets go
    this.closed = true;
    this.closeSockets();
  }

  private closeSockets(): void {
    for (const s of [this.push, this.pull, this.dealer, this.router]) {
      try {
        if (s && !s.closed) s.close();
      } catch {
        /* already closed */
      }
    }
  }
}

/** Join a ZeroMQ group (see ZmqWorkerGroup). */
export function joinGroup(options: ZmqGroupOptions): Promise<ZmqWorkerGroup> {
  return ZmqWorkerGroup.join(options);
}
