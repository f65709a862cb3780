import { createHash } from 'node:crypto';
import type { NamedTensors } from '@alexnet-stream/core';

/** SHA-256 over the raw bytes of the tensors in sorted name order: equal iff bit-identical. */
export function checksumTensors(tensors: NamedTensors): string {
  const hash = createHash('sha256');
  for (const name of Object.keys(tensors).sort()) {
    const t = tensors[name];
    hash.update(name);
    hash.update(new Uint8Array(t.buffer, t.byteOffset, t.byteLength));
  }
  return hash.digest('hex');
}
