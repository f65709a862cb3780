/**
 * ZeroMQ plumbing the group's parts share: loading zeromq (a native module) only when a group
 * forms, the heartbeat options that bound how long a dead peer goes unnoticed, a serial send
 * queue, disconnect events, and the host a rank advertises to the others.
 */
import { hostname, networkInterfaces } from 'node:os';
import type * as zmq from 'zeromq';

export type ZeroMq = typeof zmq;

/** zeromq is loaded by the first group that forms, not by the package barrel. */
export function loadZeroMq(): ZeroMq {
  return require('zeromq') as ZeroMq;
}

/**
 * libzmq's heartbeats: PING every interval; a connection with no traffic for `timeout` after a
 * PING is closed (and we see a 'disconnect'). TTL tells the peer the same bound. Handled by
 * libzmq's I/O thread, so a JS thread busy inside an onnxruntime step still answers them.
 */
export function socketOptions(peerTimeoutMs: number) {
  const half = Math.max(200, Math.floor(peerTimeoutMs / 2));
  return {
    heartbeatInterval: Math.max(50, Math.min(1000, Math.floor(half / 4))),
    heartbeatTimeout: half,
    heartbeatTimeToLive: half,
  };
}

/**
 * How long control sockets keep sending after they are closed: the last results, refusals and
 * aborts reach the wire while the process lives, and a process that ends normally waits for
 * them (libzmq's context termination at exit honours linger). Data sockets use 0: nobody waits
 * for weights once the group has stopped.
 */
export const CONTROL_LINGER_MS = 1000;

/** A serial send queue: zeromq allows one send in flight per socket. */
export class SendQueue {
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
  /** Every message pushed so far is queued in libzmq (not necessarily on the wire yet). */
  async drained(): Promise<void> {
    await this.tail;
    if (this.error !== undefined) throw this.error;
  }
}

/**
 * Watch a socket's connections closing. Starting the monitor can fail with EINTR when a
 * signal (a profiler's SIGPROF, a terminal resize) lands in the system call: try again.
 */
export function onDisconnect(socket: zmq.Socket, listener: () => void): void {
  for (let attempt = 1; ; attempt++) {
    try {
      socket.events.on('disconnect', listener);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINTR' || attempt >= 10) throw err;
    }
  }
}

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host.startsWith('127.') || host === '[::1]';
}

export function isIpLiteral(host: string): boolean {
  return /^\d+\.\d+\.\d+\.\d+$/.test(host) || host.startsWith('[') || host === '*';
}

/** The address other hosts can reach us at: ALEXNET_STREAM_HOST, else the first non-internal IPv4, else the host name. */
export function defaultAdvertiseHost(): string {
  if (process.env.ALEXNET_STREAM_HOST) return process.env.ALEXNET_STREAM_HOST;
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return hostname();
}

/** Close every socket given (already closed ones are skipped). */
export function closeAll(sockets: (zmq.Socket | undefined)[]): void {
  for (const s of sockets) {
    try {
      if (s && !s.closed) s.close();
    } catch {
      /* already closed */
    }
  }
}
