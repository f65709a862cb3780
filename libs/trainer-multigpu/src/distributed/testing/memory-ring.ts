/**
 * The ring over memory, for tests: N `Ring`s in one process, rank r's sends queued for rank r+1
 * (copied at send, as the receiver gets its own bytes on a wire), and the end-of-operation
 * barrier a collective that resolves when every rank has reached it.
 */
import { Ring, type RingLink, type TransferPrecision } from '../ring';

class Mailbox {
  private readonly messages: Buffer[][] = [];
  private readonly waiting: ((parts: Buffer[]) => void)[] = [];
  put(parts: Buffer[]): void {
    const waiter = this.waiting.shift();
    if (waiter) waiter(parts);
    else this.messages.push(parts);
  }
  take(): Promise<Buffer[]> {
    const next = this.messages.shift();
    return next ? Promise.resolve(next) : new Promise((resolve) => this.waiting.push(resolve));
  }
}

/** A barrier over `n` ranks: the k-th call of every rank resolves together. */
class Barrier {
  private readonly arrivals = new Map<number, { count: number; release: () => void; done: Promise<void> }>();
  private readonly calls: number[];
  constructor(private readonly n: number) {
    this.calls = new Array<number>(n).fill(0);
  }
  arrive(rank: number): Promise<void> {
    const k = this.calls[rank]++;
    let entry = this.arrivals.get(k);
    if (!entry) {
      let release!: () => void;
      const done = new Promise<void>((resolve) => (release = resolve));
      entry = { count: 0, release, done };
      this.arrivals.set(k, entry);
    }
    entry.count++;
    if (entry.count === this.n) {
      this.arrivals.delete(k);
      entry.release();
    }
    return entry.done;
  }
}

export interface MemoryRingOptions {
  worldSize: number;
  frameElements: number;
  transfer?: TransferPrecision;
  /** Called with a rank's protocol error (default: ignored; the call also rejects with it). */
  onProtocolError?: (rank: number, err: Error) => void;
}

/** `worldSize` rings joined in memory; also the payload bytes each rank sent (to check the 2(n-1)/n traffic). */
export function memoryRings(options: MemoryRingOptions): { rings: Ring[]; sentBytes: number[] } {
  const { worldSize: n } = options;
  const boxes = Array.from({ length: n }, () => new Mailbox());
  const barrier = new Barrier(n);
  const sentBytes = new Array<number>(n).fill(0);
  // As in a group: one rank's protocol error stops every rank (their waits reject with it).
  let stopAll!: (err: Error) => void;
  const failed = new Promise<never>((_resolve, reject) => (stopAll = reject));
  failed.catch(() => undefined);
  const rings = boxes.map((_, rank) => {
    const link: RingLink = {
      send: (parts) => {
        sentBytes[rank] += parts[1].length;
        boxes[(rank + 1) % n].put(parts.map((p) => Buffer.from(p)));
      },
      receive: () => boxes[rank].take(),
      drained: () => Promise.resolve(),
    };
    return new Ring(link, {
      rank,
      worldSize: n,
      frameElements: options.frameElements,
      transfer: options.transfer ?? 'fp32',
      done: () => barrier.arrive(rank),
      guard: (p) => Promise.race([p, failed]),
      onProtocolError: (err) => {
        options.onProtocolError?.(rank, err);
        stopAll(err);
      },
    });
  });
  return { rings, sentBytes };
}
