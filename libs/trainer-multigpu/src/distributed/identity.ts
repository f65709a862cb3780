/**
 * What must agree across workers before they train together: a few named fields (training
 * config, model spec, tensor layout, …), each reduced to a hash so that a worker can say
 * *which* field differs without shipping the whole config over the wire.
 */
import { createHash } from 'node:crypto';
import { canonicalJson } from '@alexnet-stream/core';

export type IdentityHashes = Record<string, string>;

export function hashIdentity(fields: Record<string, unknown>): IdentityHashes {
  const out: IdentityHashes = {};
  for (const key of Object.keys(fields).sort()) {
    out[key] = createHash('sha256')
      .update(canonicalJson(fields[key]) ?? 'undefined')
      .digest('hex')
      .slice(0, 16);
  }
  return out;
}

/** The fields whose hashes differ (or exist on one side only), sorted. */
export function differingFields(a: IdentityHashes, b: IdentityHashes): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((k) => a[k] !== b[k]).sort();
}
