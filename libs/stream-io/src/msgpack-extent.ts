/**
 * Where one msgpack value ends, found by walking its type bytes and length prefixes without
 * decoding anything, over bytes that may be split across several chunks. RecordDecoder uses it
 * to wait until a whole record has arrived and then decode it once: image records (~196 KB)
 * arrive in 64 KB pipe chunks, and re-parsing the growing buffer on every chunk cost more
 * CPU than the decode itself.
 */

/** Bytes split over chunks, read by absolute offset (only headers are read this way: a few bytes). */
export class ChunkList {
  readonly chunks: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  byteAt(offset: number): number {
    for (const c of this.chunks) {
      if (offset < c.length) return c[offset];
      offset -= c.length;
    }
    throw new RangeError('ChunkList.byteAt past the end');
  }

  /** Big-endian unsigned integer of `size` bytes (1, 2 or 4) at `offset`. */
  uintAt(offset: number, size: number): number {
    let v = 0;
    for (let i = 0; i < size; i++) v = v * 256 + this.byteAt(offset + i);
    return v;
  }

  /** The first `n` bytes as one Buffer (no copy when they lie in the first chunk); removes them. */
  take(n: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (n <= first.length) {
      out = first.subarray(0, n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      for (const c of this.chunks) {
        const part = Math.min(c.length, n - filled);
        c.copy(out, filled, 0, part);
        filled += part;
        if (filled === n) break;
      }
    }
    let left = n;
    while (left > 0) {
      const c = this.chunks[0];
      if (c.length <= left) {
        this.chunks.shift();
        left -= c.length;
      } else {
        this.chunks[0] = c.subarray(left);
        left = 0;
      }
    }
    this.length -= n;
    return out;
  }
}

/** Header size and payload size of the value starting with type byte `t` (payload bytes skipped, not read). */
const FIXED_SIZES: Record<number, number> = {
  192: 1,
  194: 1,
  195: 1, // nil, false, true
  202: 5,
  203: 9, // float32, float64
  204: 2,
  205: 3,
  206: 5,
  207: 9, // uint8..64
  208: 2,
  209: 3,
  210: 5,
  211: 9, // int8..64
  212: 3,
  213: 4,
  214: 6,
  215: 10,
  216: 18, // fixext 1..16
};
/** Types followed by a length of 1, 2 or 4 bytes and then that many bytes (str, bin, ext: + 1 type byte). */
const SIZED: Record<number, { lengthBytes: number; extra: number }> = {
  217: { lengthBytes: 1, extra: 0 },
  218: { lengthBytes: 2, extra: 0 },
  219: { lengthBytes: 4, extra: 0 }, // str
  196: { lengthBytes: 1, extra: 0 },
  197: { lengthBytes: 2, extra: 0 },
  198: { lengthBytes: 4, extra: 0 }, // bin
  199: { lengthBytes: 1, extra: 1 },
  200: { lengthBytes: 2, extra: 1 },
  201: { lengthBytes: 4, extra: 1 }, // ext
};

/** `msgpackValueEnd`'s answer for a value that would end past the caller's limit. */
export const VALUE_TOO_LARGE = -2;

/**
 * The end offset of the msgpack value starting at `start`, `undefined` when the bytes so far
 * end inside it, `-1` for a byte that no msgpack value starts with (0xc1): the caller then
 * lets the real decoder report the error, or `VALUE_TOO_LARGE` as soon as a length prefix (or
 * the bytes walked) puts its end past `limit`: a record that claims 4 GiB is refused when its
 * length prefix arrives, not after 4 GiB have been buffered.
 */
export function msgpackValueEnd(bytes: ChunkList, start = 0, limit = Infinity): number | undefined {
  let pos = start;
  let values = 1; // values still to skip (containers add their children)
  while (values > 0) {
    if (pos > limit) return VALUE_TOO_LARGE;
    if (pos >= bytes.length) return undefined;
    const t = bytes.byteAt(pos);
    values -= 1;
    if (t <= 0x7f || t >= 0xe0)
      pos += 1; // fixint
    else if (t <= 0x8f) {
      values += 2 * (t & 0x0f);
      pos += 1;
    } // fixmap
    else if (t <= 0x9f) {
      values += t & 0x0f;
      pos += 1;
    } // fixarray
    else if (t <= 0xbf)
      pos += 1 + (t & 0x1f); // fixstr
    else if (FIXED_SIZES[t] !== undefined) pos += FIXED_SIZES[t];
    else if (SIZED[t] !== undefined) {
      const { lengthBytes, extra } = SIZED[t];
      if (pos + 1 + lengthBytes > bytes.length) return undefined;
      pos += 1 + lengthBytes + extra + bytes.uintAt(pos + 1, lengthBytes);
    } else if (t === 0xdc || t === 0xdd || t === 0xde || t === 0xdf) {
      // array16/32, map16/32
      const lengthBytes = t === 0xdc || t === 0xde ? 2 : 4;
      if (pos + 1 + lengthBytes > bytes.length) return undefined;
      const n = bytes.uintAt(pos + 1, lengthBytes);
      values += t >= 0xde ? 2 * n : n;
      pos += 1 + lengthBytes;
    } else return -1; // 0xc1: never used
    // every value takes at least one byte: more values left than bytes allowed is too large
    if (pos + values > limit) return VALUE_TOO_LARGE;
  }
  return pos <= bytes.length ? pos : undefined;
}
