/**
 * Files and options described by a zod schema (the training config, a shard set's index.json,
 * a checkpoint's state.json): the schema is the one description, of the TypeScript type
 * (`z.output`), of the validation, and of the docs; this module turns what it refuses into the
 * project's error style, one line:
 *
 *   c.yaml: expected an integer >= 1 for batch_size but received 0
 *   c.yaml: unknown key "lerning_rate"; did you mean "learning_rate"?
 *   index.json prefix "train": expected an integer >= 0 for shards[3].bytes but received -1; the index is damaged …
 *
 * A schema states what it expects in its own words: every type or range check of a field is
 * given that field's description as its error (`z.int({ error: 'an integer >= 1' }).min(1, …)`),
 * which becomes the "expected …" of the message; a refinement that states a fact of its own
 * ("shard file "a" is listed twice") is marked with `statement()` and shown as it is.
 *
 * zod costs ~40 ms to load (its core loads every locale), more than most commands need at
 * start-up: nothing here loads it. Schemas are built on first use (`lazySchema`), so a command
 * that never reads a config or an index never loads zod.
 */
import type { z } from 'zod';
import { type AlexnetStreamError, describeValue, type ErrorDetails } from './errors';

/** The `z` namespace of zod, as schema builders receive it. */
export type Zod = typeof z;

let zod: Zod | undefined;

/**
 * The declared fields of a loose object's output type, without its `[key: string]: unknown`:
 * files read back keep fields they do not describe (a rewrite must not drop them), while code
 * that writes one is still checked field by field (a misspelt field is an error).
 */
export type KnownFields<T> = { [K in keyof T as string extends K ? never : K]: T[K] };

/** zod's `z`, loaded on first use (see the module comment for why not at start-up). */
export function loadZod(): Zod {
  zod ??= (require('zod') as { z: Zod }).z;
  return zod;
}

/**
 * A schema built on first use: `const indexSchema = lazySchema((z) => z.object({ … }))`, then
 * `indexSchema()` wherever it is needed. Its type is the builder's return type.
 */
export function lazySchema<S>(build: (z: Zod) => S): () => S {
  let built: S | undefined;
  return () => (built ??= build(loadZod()));
}

/**
 * Refinement options for an issue that states a fact in full ("shard file "a" is listed twice"),
 * shown as it is, rather than as the "expected …" of the value at its path: `.refine(ok, statement('…'))`.
 */
export function statement(message: string): { error: string; params: { statement: true } } {
  return { error: message, params: { statement: true } };
}

/** The same for a `superRefine`: `ctx.addIssue(statementIssue('…', ['shards']))`. */
export function statementIssue(
  message: string,
  path: PropertyKey[] = [],
): { code: 'custom'; message: string; path: PropertyKey[]; params: { statement: true } } {
  return { code: 'custom', message, path, params: { statement: true } };
}

/** Levenshtein distance (insert, delete, substitute: 1 each). */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length];
}

/**
 * The known key nearest to `key` (compared in lower case, `-` as `_`), if it is near enough to be
 * a plausible typo: a third of the key's length, at least 2 (`lerning_rate` → `learning_rate`,
 * while `zzzzzzzzzzzz` gets no suggestion).
 */
export function nearestKey<K extends string>(key: string, known: readonly K[]): K | undefined {
  const normalized = key.toLowerCase().replace(/-/g, '_');
  let best: K | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = editDistance(normalized, candidate);
    if (d < bestDistance) {
      bestDistance = d;
      best = candidate;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined;
}

type ErrorClass = new (message: string, details?: ErrorDetails) => AlexnetStreamError;

export interface SchemaParseOptions {
  /** Where the value comes from, first in every message: a file, `--set batch_size`, `index.json prefix "train"`. */
  where: string;
  /** The error thrown (UsageError for options and configs, InputError for files read back). */
  errorClass: ErrorClass;
  /** Its stable code (ERR_SHARD_INDEX, …); the class's default when absent. */
  code?: string;
  /** Appended to every message after "; " ("the index is damaged or was not written by alexnet-stream"). */
  hint?: string;
  /**
   * How many segments of a value's path a message names: 1 names the top-level key and shows
   * its whole value (a config key, `lr_step` with `[10, "x"]`); all of them when absent.
   */
  pathDepth?: number;
  /** The known key to suggest for an unknown one; `nearestKey` among the object's keys when absent. */
  suggestKey?: (key: string, known: readonly string[]) => string | undefined;
}

/**
 * `value` parsed by `schema` (defaults filled in, values normalised), or an `errorClass` error
 * whose message names `where`, the path of the first problem, what was expected and what was
 * received. An unknown key (a strict object's) is reported before any other problem: a typo in a
 * key is the likeliest cause of the rest.
 */
export function parseWithSchema<S extends z.ZodType>(schema: S, value: unknown, options: SchemaParseOptions): z.output<S> {
  // Checks a schema gave no words of its own get them from the issue (see `expectedOf`).
  const result = schema.safeParse(value, { error: expectedOf });
  if (result.success) return result.data;
  const issues = result.error.issues;
  const first = issues.find((issue) => issue.code === 'unrecognized_keys') ?? issues[0];
  const message = describeIssue(schema, value, first, options);
  throw new options.errorClass(options.hint ? `${message}; ${options.hint}` : message, options.code ? { code: options.code } : {});
}

type Issue = z.core.$ZodIssue;
type PathKey = PropertyKey;

function describeIssue(schema: z.ZodType, input: unknown, issue: Issue, options: SchemaParseOptions): string {
  const { where } = options;
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0];
    const at = issue.path.length ? ` in ${pathText(issue.path)}` : '';
    const known = objectKeysAt(schema, issue.path);
    const suggestion = known && (options.suggestKey ?? nearestKey)(key, known);
    const help = suggestion ? `; did you mean "${suggestion}"?` : known ? ` (known keys: ${known.join(', ')})` : '';
    return `${where}: unknown key ${JSON.stringify(key)}${at}${help}`;
  }
  const path = options.pathDepth === undefined ? issue.path : issue.path.slice(0, options.pathDepth);
  if (issue.code === 'custom' && (issue.params as { statement?: boolean } | undefined)?.statement) {
    return `${where}: ${path.length ? `${pathText(path)}: ` : ''}${issue.message}`;
  }
  const found = valueAt(input, path);
  if (!path.length) return `${where}: expected ${issue.message} but received ${describeReceived(input)}`;
  if (!found.present) return `${where}: ${pathText(path)} is missing (expected ${issue.message})`;
  return `${where}: expected ${issue.message} for ${pathText(path)} but received ${describeReceived(found.value)}`;
}

/** "an integer", "a number >= 1", "one of "a", "b"": what an issue says was expected, for a check the schema did not describe. */
function expectedOf(issue: z.core.$ZodRawIssue): string {
  const a = (noun: string) => (/^[aeiou]/.test(noun) ? `an ${noun}` : `a ${noun}`);
  const limit = (bound: unknown, inclusive: boolean | undefined, op: '>' | '<') => `${op}${inclusive ? '=' : ''} ${String(bound)}`;
  switch (issue.code) {
    case 'invalid_type':
      return issue.expected === 'array' ? 'a list' : a(issue.expected);
    case 'too_small':
      return issue.origin === 'array' || issue.origin === 'string'
        ? `${issue.origin === 'array' ? 'a list' : 'a string'} of length ${limit(issue.minimum, issue.inclusive, '>')}`
        : `a value ${limit(issue.minimum, issue.inclusive, '>')}`;
    case 'too_big':
      return issue.origin === 'array' || issue.origin === 'string'
        ? `${issue.origin === 'array' ? 'a list' : 'a string'} of length ${limit(issue.maximum, issue.inclusive, '<')}`
        : `a value ${limit(issue.maximum, issue.inclusive, '<')}`;
    case 'invalid_value':
      return issue.values.length === 1 ? JSON.stringify(issue.values[0]) : `one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_format':
      return `a string in ${issue.format} format`;
    default:
      return 'a valid value';
  }
}

/** `batch_size`, `shards[3].bytes`, `prefixes["my set"]`: a path as JavaScript would write it. */
export function pathText(path: readonly PathKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'string' && /^[A-Za-z_$][\w$]*$/.test(key)) out += out ? `.${key}` : key;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

/** The value at `path` in `input`, through own properties only (a key named `constructor` finds nothing inherited). */
function valueAt(input: unknown, path: readonly PathKey[]): { present: boolean; value?: unknown } {
  let value = input;
  for (const key of path) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, key)) return { present: false };
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return { present: value !== undefined, value };
}

const MAX_RECEIVED_CHARS = 200;

/** A received value in a message: strings quoted, lists as `[10, "x"]`, numbers as JavaScript prints them (`Infinity`, `1e+308`); bounded in length. */
export function describeReceived(value: unknown): string {
  const text = Array.isArray(value) ? `[${value.slice(0, 50).map(describeReceived).join(', ')}${value.length > 50 ? ', …' : ''}]` : describeValue(value);
  return text.length > MAX_RECEIVED_CHARS ? `${text.slice(0, MAX_RECEIVED_CHARS)}…` : text;
}

interface SchemaInternals {
  _zod: { def: { type: string; shape?: Record<string, unknown>; innerType?: unknown; in?: unknown; element?: unknown; valueType?: unknown } };
}

/** The keys of the object schema at `path` inside `schema` (through optional, nullable, default, pipe, array and record), if it is one. */
function objectKeysAt(schema: unknown, path: readonly PathKey[]): string[] | undefined {
  let at = schema as SchemaInternals | undefined;
  let i = 0;
  for (let guard = 0; at && guard < 64; guard++) {
    const def = at._zod.def;
    const key = path[i];
    let next: unknown;
    if (def.innerType) next = def.innerType;
    else if (def.type === 'pipe') next = def.in;
    else if (i === path.length) return def.type === 'object' && def.shape ? Object.keys(def.shape) : undefined;
    else if (def.type === 'object' && def.shape && typeof key === 'string' && Object.hasOwn(def.shape, key)) next = def.shape[key];
    else if (def.type === 'array' && typeof key === 'number') next = def.element;
    else if (def.type === 'record') next = def.valueType;
    else return undefined;
    // Wrappers (optional, default, pipe) stay at the same path segment; containers consume one.
    if (next !== def.innerType && next !== def.in) i++;
    at = next as SchemaInternals;
  }
  return undefined;
}
