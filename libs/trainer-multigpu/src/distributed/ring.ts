/**
 * The data plane: a ring all-reduce (reduce-scatter, then all-gather) and a ring broadcast over
 * a `RingLink` (to the successor, from the predecessor). Rank r sends to r+1 and receives from
 * r-1; weights travel in frames of at most `frameElements` floats (plan.ts), pipelined frame by
 * frame, so each rank sends and receives 2(n-1)/n of the model per average, whatever n.
 *
 * Bit-identical replicas by construction: each segment of the flattened model has exactly one
 * owner that computes its final value (the ring sum, in a fixed order, divided by n), and the
 * all-gather only copies that value. Nobody recomputes a value someone else has.
 *
 * The link is ZeroMQ PUSH/PULL in a group (zmq-group.ts) and an in-memory queue in tests.
 */
import { addHalfInto, decodeHalfInto, encodeHalf, roundToHalfInPlace } from '@alexnet-stream/core';
import { ProtocolError } from './errors';
import { planRing, type RingPlan } from './plan';

export type TransferPrecision = 'fp32' | 'fp16';

/** One rank's two ring connections. */
export interface RingLink {
  /**
   * Queue a message (header, payload) to the successor. Zero-copy where the transport allows:
   * the payload's bytes must stay as they are until `done` (see `RingOptions.done`).
   */
  send(parts: Buffer[]): void;
  /** The next message from the predecessor. */
  receive(): Promise<Buffer[]>;
  /** Resolves when everything sent so far is handed to the transport. */
  drained(): Promise<void>;
}

export interface RingOptions {
  rank: number;
  worldSize: number;
  frameElements: number;
  transfer: TransferPrecision;
  /**
   * Resolves once every rank has received everything of operation `kind` (a barrier): sends
   * are zero-copy, so the caller may write its arrays again only then.
   */
  done(kind: 'allreduce-done' | 'broadcast-done'): Promise<void>;
  /** Wraps every wait, so that a failure of the group interrupts it. */
  guard<T>(p: Promise<T>): Promise<T>;
  /** A message that is not the one expected: the ranks disagree about what they are doing. */
  onProtocolError(err: ProtocolError): void;
}

/** Data message header: op sequence, phase, step, frame index (uint32 each). */
enum Phase {
  ReduceScatter = 0,
  AllGather = 1,
  Broadcast = 2,
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

let zeroBuffer = new Float32Array(0);
function zeros(length: number): Float32Array {
  if (zeroBuffer.length < length) zeroBuffer = new Float32Array(length);
  return zeroBuffer.subarray(0, length);
}

/** A Float32/Uint16/Float64 view-able copy of a received part when the transport hands over an unaligned buffer. */
export function aligned(buf: Buffer, bytesPerElement: number): Buffer {
  if (buf.byteOffset % bytesPerElement === 0) return buf;
  const copy = Buffer.alloc(buf.length);
  buf.copy(copy);
  return copy;
}

function header(op: number, phase: Phase, step: number, frame: number): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(op >>> 0, 0);
  h.writeUInt32LE(phase, 4);
  h.writeUInt32LE(step, 8);
  h.writeUInt32LE(frame, 12);
  return h;
}

export class Ring {
  private opSeq = 0;
  private readonly planCache = new Map<string, RingPlan>();

  constructor(
    private readonly link: RingLink,
    private readonly o: RingOptions,
  ) {}

  /** Replace each array by the mean over ranks, in place. */
  async allReduceMean(arrays: Float32Array[]): Promise<void> {
    const { rank, worldSize: n, transfer } = this.o;
    if (n === 1) return;
    const op = this.opSeq++;
    const plan = this.planFor(arrays);
    const views = plan.frames.map((f) => arrays[f.tensor].subarray(f.offset, f.offset + f.length));
    const segment = (k: number) => plan.segments[((k % n) + n) % n];
    const fp16 = transfer === 'fp16';
    const width = fp16 ? 2 : 4;
    const send = (phase: Phase, step: number, f: number) => this.link.send([header(op, phase, step, f), this.payload(views[f])]);

    for (const f of segment(rank)) send(Phase.ReduceScatter, 0, f);
    for (let step = 0; step < n - 1; step++) {
      for (const f of segment(rank - step - 1)) {
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
        if (!last) send(Phase.ReduceScatter, step + 1, f);
        else {
          // This rank owns the segment: its value is final here and only copied elsewhere.
          if (fp16) roundToHalfInPlace(view);
          send(Phase.AllGather, 0, f);
        }
      }
    }
    for (let step = 0; step < n - 1; step++) {
      for (const f of segment(rank - step)) {
        const body = await this.receiveFrame(op, Phase.AllGather, step, f, views[f].length, width);
        if (fp16) decodeHalfInto(new Uint16Array(body.buffer, body.byteOffset, views[f].length), views[f]);
        else views[f].set(new Float32Array(body.buffer, body.byteOffset, views[f].length));
        if (step < n - 2) send(Phase.AllGather, step + 1, f);
      }
    }
    await this.o.guard(this.link.drained());
    await this.o.done('allreduce-done');
  }

  /** Copy rank 0's arrays to every rank along the ring (always float32: exact). */
  async broadcast(arrays: Float32Array[]): Promise<void> {
    const { rank, worldSize } = this.o;
    if (worldSize === 1) return;
    const op = this.opSeq++;
    const plan = this.planFor(arrays);
    const views = plan.frames.map((f) => arrays[f.tensor].subarray(f.offset, f.offset + f.length));
    const last = rank === worldSize - 1;
    const raw = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    if (rank === 0) {
      views.forEach((v, f) => this.link.send([header(op, Phase.Broadcast, 0, f), raw(v)]));
    } else {
      for (let f = 0; f < views.length; f++) {
        const body = await this.receiveFrame(op, Phase.Broadcast, 0, f, views[f].length, 4);
        views[f].set(new Float32Array(body.buffer, body.byteOffset, views[f].length));
        if (!last) this.link.send([header(op, Phase.Broadcast, 0, f), raw(views[f])]);
      }
    }
    await this.o.guard(this.link.drained());
    await this.o.done('broadcast-done');
  }

  private planFor(arrays: Float32Array[]): RingPlan {
    const lengths = arrays.map((a) => a.length);
    const key = lengths.join(',');
    let plan = this.planCache.get(key);
    if (!plan) {
      plan = planRing(lengths, this.o.worldSize, this.o.frameElements);
      this.planCache.set(key, plan);
    }
    return plan;
  }

  private payload(view: Float32Array): Buffer {
    if (this.o.transfer === 'fp16') {
      const half = encodeHalf(view);
      return Buffer.from(half.buffer, half.byteOffset, half.byteLength);
    }
    // Zero copy: the slice is not written again until the all-gather brings its final
    // value, which causally follows this message's arrival at the successor.
    return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
  }

  private async receiveFrame(op: number, phase: Phase, step: number, frame: number, length: number, bytesPerElement: number): Promise<Buffer> {
    const { rank, worldSize } = this.o;
    const [h, body] = await this.o.guard(this.link.receive());
    const got = [h.readUInt32LE(0), h.readUInt32LE(4), h.readUInt32LE(8), h.readUInt32LE(12)];
    const bytes = length * bytesPerElement;
    if (got[0] !== op >>> 0 || got[1] !== phase || got[2] !== step || got[3] !== frame || body.length !== bytes) {
      const predecessor = (rank + worldSize - 1) % worldSize;
      const err = new ProtocolError(
        `rank ${rank} expected frame (op ${op}, phase ${phase}, step ${step}, frame ${frame}, ${bytes} bytes) from rank ${predecessor} ` +
          `but got (op ${got[0]}, phase ${got[1]}, step ${got[2]}, frame ${got[3]}, ${body.length} bytes): the ranks disagree on the tensors or the call order`,
      );
      this.o.onProtocolError(err);
      throw err;
    }
    return aligned(body, bytesPerElement);
  }
}
