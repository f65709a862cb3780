/**
 * Option checks, one way for every library (sharp's `lib/is.js` + `invalidParameterError`):
 * `is.*` answers a question about a value; `check.*` returns the value when it is what the
 * parameter takes and otherwise throws an `InvalidParameterError` that names the parameter,
 * says what was expected and shows what was received:
 *
 *   const crop = check.integer('crop', options.crop, { min: 1 });
 *   // Expected an integer >= 1 for crop but received 0
 *
 * Options are checked once, where a library receives them; inner code trusts its inputs. The
 * CLI does not repeat these checks: it turns text into values and, when a library refuses
 * one, names its own flag in the message (`AlexnetStreamError.renamed`).
 */
import { InvalidParameterError } from './errors';

/** Predicates (no throwing). */
export const is = {
  defined: (value: unknown): boolean => value !== undefined && value !== null,
  string: (value: unknown): value is string => typeof value === 'string',
  boolean: (value: unknown): value is boolean => typeof value === 'boolean',
  function: (value: unknown): value is (...args: never[]) => unknown => typeof value === 'function',
  /** A finite number (not NaN, not ±Infinity). */
  number: (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value),
  /** An integer a double holds exactly (|n| <= 2^53 - 1). */
  integer: (value: unknown): value is number => Number.isSafeInteger(value),
  inRange: (value: number, min: number, max: number): boolean => value >= min && value <= max,
  oneOf: <T>(value: unknown, choices: readonly T[]): value is T => (choices as readonly unknown[]).includes(value),
  /** An object made by `{}` or JSON.parse (not an array, a class instance or null). */
  plainObject: (value: unknown): value is Record<string, unknown> => {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
    const proto = Object.getPrototypeOf(value) as unknown;
    return proto === Object.prototype || proto === null;
  },
};

export interface IntegerRange {
  min?: number;
  max?: number;
}

export interface NumberRange extends IntegerRange {
  /** `min` itself is not allowed (a rate > 0). */
  minExclusive?: boolean;
  /** `max` itself is not allowed (a probability < 1). */
  maxExclusive?: boolean;
}

/** "an integer >= 1", "an integer between 0 and 256", "an integer" */
export function describeIntegerRange({ min, max }: IntegerRange): string {
  if (min !== undefined && max !== undefined) return `an integer between ${min} and ${max}`;
  if (min !== undefined) return `an integer >= ${min}`;
  if (max !== undefined) return `an integer <= ${max}`;
  return 'an integer';
}

/** "a number between 0 and 1", "a number in [0, 1)", "a number > 0", "a finite number" */
export function describeNumberRange({ min, max, minExclusive, maxExclusive }: NumberRange): string {
  if (min !== undefined && max !== undefined) {
    return minExclusive || maxExclusive
      ? `a number in ${minExclusive ? '(' : '['}${min}, ${max}${maxExclusive ? ')' : ']'}`
      : `a number between ${min} and ${max}`;
  }
  if (min !== undefined) return `a number ${minExclusive ? '>' : '>='} ${min}`;
  if (max !== undefined) return `a number ${maxExclusive ? '<' : '<='} ${max}`;
  return 'a finite number';
}

function inNumberRange(value: number, r: NumberRange): boolean {
  if (r.min !== undefined && (r.minExclusive ? !(value > r.min) : !(value >= r.min))) return false;
  if (r.max !== undefined && (r.maxExclusive ? !(value < r.max) : !(value <= r.max))) return false;
  return true;
}

/** "a or b", "one of a, b, c" */
export function describeChoices(choices: readonly unknown[]): string {
  const shown = choices.map((c) => String(c));
  return shown.length <= 2 ? shown.join(' or ') : `one of ${shown.join(', ')}`;
}

/** Checks that return the value or throw an `InvalidParameterError` naming `name`. */
export const check = {
  /** A safe integer within `range`. */
  integer(name: string, value: unknown, range: IntegerRange = {}): number {
    if (!is.integer(value) || (range.min !== undefined && value < range.min) || (range.max !== undefined && value > range.max)) {
      throw new InvalidParameterError(name, describeIntegerRange(range), value);
    }
    return value;
  },

  /** A finite number within `range`. */
  number(name: string, value: unknown, range: NumberRange = {}): number {
    if (!is.number(value) || !inNumberRange(value, range)) throw new InvalidParameterError(name, describeNumberRange(range), value);
    return value;
  },

  /** One of `choices` (compared with ===). */
  oneOf<T>(name: string, value: unknown, choices: readonly T[]): T {
    if (!is.oneOf(value, choices)) throw new InvalidParameterError(name, describeChoices(choices), value);
    return value;
  },

  /** A string; `nonEmpty` refuses "", `pattern` must match (then `expected` says what it describes). */
  string(name: string, value: unknown, options: { nonEmpty?: boolean; pattern?: RegExp; expected?: string } = {}): string {
    const ok = is.string(value) && (!options.nonEmpty || value.length > 0) && (!options.pattern || options.pattern.test(value));
    if (!ok) throw new InvalidParameterError(name, options.expected ?? (options.nonEmpty ? 'a non-empty string' : 'a string'), value);
    return value as string;
  },

  boolean(name: string, value: unknown): boolean {
    if (!is.boolean(value)) throw new InvalidParameterError(name, 'true or false', value);
    return value;
  },

  /** A seed: an integer in 0..2^32-1 (what `Rng` takes; larger ones would alias). */
  seed(name: string, value: unknown): number {
    return check.integer(name, value, { min: 0, max: 0xffffffff });
  },

  /** `{ index, count }` with 0 <= index < count: "every count-th item starting at index" (N machines split a set). */
  shard(name: string, value: { index: number; count: number }): { index: number; count: number } {
    const { index, count } = value;
    if (!(is.integer(index) && is.integer(count) && count >= 1 && index >= 0 && index < count)) {
      throw new InvalidParameterError(name, 'i/N with 0 <= i < N (e.g. 0/4)', `${index}/${count}`);
    }
    return value;
  },

  /** Any condition, with what it means: `check.that('crop', crop <= height, 'a crop no larger than the 256x256 images', crop)`. */
  that(name: string, condition: boolean, expected: string, value: unknown): void {
    if (!condition) throw new InvalidParameterError(name, expected, value);
  },
};

/** `check.*` for a parameter that may be left out: undefined stays undefined. */
export const checkOptional = {
  integer: (name: string, value: unknown, range?: IntegerRange): number | undefined => (value === undefined ? undefined : check.integer(name, value, range)),
  number: (name: string, value: unknown, range?: NumberRange): number | undefined => (value === undefined ? undefined : check.number(name, value, range)),
  oneOf: <T>(name: string, value: unknown, choices: readonly T[]): T | undefined => (value === undefined ? undefined : check.oneOf(name, value, choices)),
  string: (name: string, value: unknown, options?: Parameters<typeof check.string>[2]): string | undefined =>
    value === undefined ? undefined : check.string(name, value, options),
  boolean: (name: string, value: unknown): boolean | undefined => (value === undefined ? undefined : check.boolean(name, value)),
  seed: (name: string, value: unknown): number | undefined => (value === undefined ? undefined : check.seed(name, value)),
};
