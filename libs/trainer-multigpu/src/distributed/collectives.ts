/**
 * Small all-reduces through rank 0 on the control plane: metric means, barriers, and the
 * "everyone has received everything" that ends each ring operation. Every rank calls
 * `collective(kind, values)` in the same order (a sequence number ties the calls together);
 * rank 0 sums the contributions in rank order (so that the result does not depend on arrival
 * order), divides by n and sends the mean back. A call whose kind or length differs from rank
 * 0's is a ProtocolError: the ranks run different code or configs.
 */
import { ProtocolError } from './errors';

interface Waiter {
  kind: string;
  resolve: (values: Float64Array) => void;
}

export interface CollectiveTransport {
  rank: number;
  worldSize: number;
  /** Rank 0: send the result of collective `seq` to worker `to`. */
  sendResult(to: number, seq: number, kind: string, payload: Buffer): void;
  /** Workers: send this rank's contribution to rank 0. */
  sendContribution(seq: number, kind: string, payload: Buffer): void;
  onProtocolError(err: ProtocolError): void;
}

/** A float64 payload as values (a copy, aligned). */
export function valuesOf(payload: Buffer | undefined): Float64Array {
  if (!payload || payload.length === 0) return new Float64Array(0);
  const copy = new Float64Array(payload.length / 8);
  new Uint8Array(copy.buffer).set(payload);
  return copy;
}

export class Collectives {
  private seq = 0;
  /** Rank 0: contributions per collective seq. */
  private readonly contributions = new Map<number, Map<number, { kind: string; values: Float64Array }>>();
  private readonly waiters = new Map<number, Waiter>();
  /** Workers: results that arrived before this rank asked (a fast rank 0). */
  private readonly earlyResults = new Map<number, Float64Array>();

  constructor(private readonly t: CollectiveTransport) {}

  /** This rank's part of the next collective; resolves with the mean over ranks. */
  collective(kind: string, values: number[]): Promise<Float64Array> {
    const seq = this.seq++;
    const own = Float64Array.from(values);
    const payload = Buffer.from(own.buffer);
    return new Promise<Float64Array>((resolve) => {
      if (this.t.rank === 0) {
        this.waiters.set(seq, { kind, resolve });
        this.contribute(seq, kind, 0, payload);
        return;
      }
      const early = this.earlyResults.get(seq);
      if (early) {
        this.earlyResults.delete(seq);
        resolve(early);
      } else this.waiters.set(seq, { kind, resolve });
      this.t.sendContribution(seq, kind, payload);
    });
  }

  /** Rank 0: rank `from`'s contribution to collective `seq`; completes it when all are in. */
  contribute(seq: number, kind: string, from: number, payload: Buffer | undefined): void {
    let entry = this.contributions.get(seq);
    if (!entry) this.contributions.set(seq, (entry = new Map()));
    entry.set(from, { kind, values: valuesOf(payload) });
    if (entry.size === this.t.worldSize && this.waiters.has(seq)) this.complete(seq);
  }

  /** Workers: rank 0's result of collective `seq`. */
  result(seq: number, payload: Buffer | undefined): void {
    const values = valuesOf(payload);
    const waiter = this.waiters.get(seq);
    if (waiter) {
      this.waiters.delete(seq);
      waiter.resolve(values);
    } else this.earlyResults.set(seq, values);
  }

  private complete(seq: number): void {
    const { worldSize } = this.t;
    const entry = this.contributions.get(seq)!;
    this.contributions.delete(seq);
    const waiter = this.waiters.get(seq)!;
    this.waiters.delete(seq);
    const length = entry.get(0)!.values.length;
    for (const [r, { kind, values }] of entry) {
      if (kind !== waiter.kind || values.length !== length) {
        this.t.onProtocolError(
          new ProtocolError(
            `rank ${r} called ${kind} with ${values.length} values where rank 0 called ${waiter.kind} with ${length} (collective #${seq}): the ranks run different code or configs`,
          ),
        );
        return;
      }
    }
    // Sum in rank order so that the result does not depend on arrival order.
    const mean = new Float64Array(length);
    for (let r = 0; r < worldSize; r++) {
      const v = entry.get(r)!.values;
      for (let i = 0; i < length; i++) mean[i] += v[i];
    }
    for (let i = 0; i < length; i++) mean[i] /= worldSize;
    const bytes = Buffer.from(mean.buffer, mean.byteOffset, mean.byteLength);
    for (let r = 1; r < worldSize; r++) this.t.sendResult(r, seq, waiter.kind, bytes);
    waiter.resolve(mean);
  }
}
