/**
 * How N ranks form a group: rank 0 binds a ROUTER on the coordinator endpoint; every other rank
 * connects a DEALER and says hello (its rank, world size, the hashes of what must agree, and the
 * data endpoint its predecessor pushes into). Rank 0 waits for one hello per rank, refuses the
 * group (telling every rank why) when one differs, and otherwise answers each with the data
 * endpoints of all ranks. The ring's PULL is bound before the hello; its PUSH is created here and
 * connected by the group once it watches for disconnects.
 */
import { hostname } from 'node:os';
import type * as zmq from 'zeromq';
import { ProtocolError, RendezvousError } from './errors';
import { differingFields, type IdentityHashes } from './identity';
import { parseEndpoint } from './launch-env';
import { closeAll, CONTROL_LINGER_MS, defaultAdvertiseHost, isIpLiteral, isLoopbackHost, SendQueue, socketOptions, type ZeroMq } from './zmq-sockets';

export type Hello = {
  t: 'hello';
  rank: number;
  worldSize: number;
  identity: IdentityHashes;
  dataEndpoint: string;
  host: string;
  pid: number;
};

/** Every control message (JSON in the first frame; a float64 payload may follow). */
export type ControlMessage =
  | Hello
  | { t: 'welcome'; endpoints: string[] }
  | { t: 'refused'; reason: string }
  | { t: 'gather'; seq: number; kind: string; rank: number }
  | { t: 'result'; seq: number; kind: string }
  | { t: 'lost'; rank: number; detail: string; reporter: number }
  | { t: 'abort'; rank: number; detail: string };

export interface RendezvousOptions {
  rank: number;
  worldSize: number;
  coordinator: string;
  identity: IdentityHashes;
  peerTimeoutMs: number;
  rendezvousTimeoutMs: number;
  advertiseHost?: string;
}

/** The sockets of a formed group. */
export interface Formed {
  pull: zmq.Pull;
  push: zmq.Push;
  /** Rank 0's control socket. */
  router?: zmq.Router;
  /** A worker's control socket. */
  dealer?: zmq.Dealer;
  controlSend: SendQueue;
  /** Rank 0: the routing ids of the workers, index = rank (0: unused). */
  workerIds: Buffer[];
  /** Every rank's data endpoint, index = rank. */
  endpoints: string[];
}

export async function rendezvous(z: ZeroMq, o: RendezvousOptions): Promise<Formed> {
  const sockOpts = socketOptions(o.peerTimeoutMs);
  const pull = new z.Pull({ ...sockOpts, linger: 0, receiveHighWaterMark: 64 });
  const made: zmq.Socket[] = [pull];
  try {
    const dataEndpoint = await bindDataEndpoint(pull, o);
    const hello: Hello = { t: 'hello', rank: o.rank, worldSize: o.worldSize, identity: o.identity, dataEndpoint, host: hostname(), pid: process.pid };
    let control: Omit<Formed, 'pull' | 'push'>;
    if (o.rank === 0) {
      const router = new z.Router({ ...sockOpts, linger: CONTROL_LINGER_MS, mandatory: false });
      made.push(router);
      control = await coordinate(router, hello, o);
    } else {
      const dealer = new z.Dealer({
        ...sockOpts,
        linger: CONTROL_LINGER_MS,
        routingId: `rank${o.rank}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`,
      });
      made.push(dealer);
      control = await join(dealer, hello, o);
    }
    const push = new z.Push({ ...sockOpts, linger: 0, sendHighWaterMark: 64 });
    return { pull, push, ...control };
  } catch (err) {
    // Control sockets linger: a refusal queued for the other ranks still reaches them.
    closeAll(made);
    throw err;
  }
}

/** Our data endpoint: the predecessor pushes into it. */
async function bindDataEndpoint(pull: zmq.Pull, o: RendezvousOptions): Promise<string> {
  const endpoint = parseEndpoint(o.coordinator);
  if (endpoint.transport === 'ipc') {
    const bindAt = `ipc://${endpoint.path}.rank${o.rank}`;
    await pull.bind(bindAt);
    return bindAt;
  }
  const local = isLoopbackHost(endpoint.host);
  await pull.bind(local ? 'tcp://127.0.0.1:*' : 'tcp://*:*');
  const port = /:(\d+)$/.exec(pull.lastEndpoint ?? '')?.[1];
  const host = local ? '127.0.0.1' : (o.advertiseHost ?? defaultAdvertiseHost());
  return `tcp://${host}:${port}`;
}

/** Rank 0: bind, gather one hello per rank, refuse or welcome them all. */
async function coordinate(router: zmq.Router, own: Hello, o: RendezvousOptions): Promise<Omit<Formed, 'pull' | 'push'>> {
  const endpoint = parseEndpoint(o.coordinator);
  let bindAt = o.coordinator;
  if (endpoint.transport === 'tcp' && !isIpLiteral(endpoint.host)) {
    bindAt = isLoopbackHost(endpoint.host) ? `tcp://127.0.0.1:${endpoint.port}` : `tcp://*:${endpoint.port}`;
  }
  try {
    await router.bind(bindAt);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'EADDRINUSE' ? 'address already in use (another job? choose another port)' : e.message;
    throw new RendezvousError(`rank 0 cannot bind the coordinator endpoint ${bindAt}: ${why}`);
  }
  const controlSend = new SendQueue(router);
  const { hellos, ids, problems } = await gatherHellos(router, own, o);
  const refuse = async (reason: string): Promise<never> => {
    for (const id of ids) controlSend.push([id, JSON.stringify({ t: 'refused', reason })]);
    await controlSend.drained(); // queued in libzmq; the router's linger delivers them
    throw new RendezvousError(reason);
  };
  if (ids.length < o.worldSize - 1) {
    const missing = [...Array(o.worldSize).keys()].filter((r) => r !== 0 && !hellos.has(r));
    await refuse(
      `only ${hellos.size + 1} of ${o.worldSize} ranks joined within ${Math.round(o.rendezvousTimeoutMs / 1000)} s; missing rank(s) ${missing.join(', ')}`,
    );
  }
  if (problems.length) await refuse(`workers refused: ${problems.join('; ')}`);
  const endpoints = [own.dataEndpoint];
  const workerIds: Buffer[] = [Buffer.alloc(0)];
  for (let r = 1; r < o.worldSize; r++) {
    endpoints.push(hellos.get(r)!.hello.dataEndpoint);
    workerIds.push(hellos.get(r)!.id);
  }
  for (let r = 1; r < o.worldSize; r++) controlSend.push([workerIds[r], JSON.stringify({ t: 'welcome', endpoints })]);
  await controlSend.drained();
  return { router, controlSend, workerIds, endpoints };
}

/**
 * One hello per other rank (refused ones count, so that every worker hears why), until the
 * deadline: each receive waits at most for the time left (no polling).
 */
async function gatherHellos(router: zmq.Router, own: Hello, o: RendezvousOptions) {
  const hellos = new Map<number, { id: Buffer; hello: Hello }>();
  const problems: string[] = [];
  const ids: Buffer[] = [];
  const deadline = Date.now() + o.rendezvousTimeoutMs;
  while (ids.length < o.worldSize - 1) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    router.receiveTimeout = left;
    let parts: Buffer[];
    try {
      parts = await router.receive();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break; // the deadline passed
      throw err;
    }
    const [id, body] = parts;
    let msg: ControlMessage;
    try {
      msg = JSON.parse(body.toString()) as ControlMessage;
    } catch {
      continue; // not one of ours (a port scanner, a stray client): ignore
    }
    if (msg.t !== 'hello') continue;
    ids.push(id);
    const problem = helloProblem(msg, own, hellos, o.worldSize);
    if (problem) problems.push(problem);
    else hellos.set(msg.rank, { id, hello: msg });
  }
  router.receiveTimeout = -1;
  return { hellos, ids, problems };
}

/** Why a hello cannot join the group, or undefined. */
function helloProblem(msg: Hello, own: Hello, hellos: Map<number, unknown>, worldSize: number): string | undefined {
  const where = `rank ${msg.rank} (pid ${msg.pid} on ${msg.host})`;
  if (msg.worldSize !== worldSize) return `${where} was started with world size ${msg.worldSize}, rank 0 with ${worldSize}`;
  if (msg.rank === 0 || msg.rank >= worldSize || hellos.has(msg.rank)) {
    return `${where}: rank ${msg.rank} is ${msg.rank === 0 ? 'rank 0 itself' : hellos.has(msg.rank) ? 'taken twice' : 'out of range'}`;
  }
  const differ = differingFields(own.identity, msg.identity);
  return differ.length ? `${where} differs from rank 0 in ${differ.join(', ')}` : undefined;
}

/** A worker: connect, say hello, wait for the welcome (or the refusal that says why). */
async function join(dealer: zmq.Dealer, hello: Hello, o: RendezvousOptions): Promise<Omit<Formed, 'pull' | 'push'>> {
  dealer.connect(o.coordinator);
  const controlSend = new SendQueue(dealer);
  controlSend.push([JSON.stringify(hello)]);
  // Longer than rank 0's own deadline, so that its refusal (naming who is missing) wins.
  const timeoutMs = o.rendezvousTimeoutMs + 5000;
  dealer.receiveTimeout = timeoutMs;
  let parts: Buffer[];
  try {
    parts = await dealer.receive();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
      throw new RendezvousError(
        `no answer from the coordinator ${o.coordinator} within ${Math.round(timeoutMs / 1000)} s (is rank 0 running, and are all ${o.worldSize} ranks started?)`,
      );
    }
    throw err;
  }
  dealer.receiveTimeout = -1;
  const msg = JSON.parse(parts[0].toString()) as ControlMessage;
  if (msg.t === 'refused') throw new RendezvousError(msg.reason);
  if (msg.t !== 'welcome') throw new ProtocolError(`unexpected first message from the coordinator: ${msg.t}`);
  return { dealer, controlSend, workerIds: [], endpoints: msg.endpoints };
}
