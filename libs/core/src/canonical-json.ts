/**
 * JSON with object keys sorted at every level, so that equal values give the same text whatever
 * order their keys were built in: what a hash of a config or a model spec is taken over
 * (onnx-export's `configHash`, stored in every exported model; the workers' identity check).
 * Object members whose value is `undefined` are left out and array holes become `null`, as in
 * `JSON.stringify`; the text of the value `undefined` itself is `undefined`.
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v) ?? 'null').join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** Whether two JSON-like values are equal regardless of key order (a spec read back vs one built). */
export function sameJson(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}
