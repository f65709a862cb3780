/**
 * Maps built from keys a file or a user chose (tensor names, metadata keys, config keys) must
 * not meet the prototype chain: `obj[key] = v` with key `__proto__` replaces the object's
 * prototype instead of storing v, and `obj[key]` with key `constructor` or `toString` finds
 * Object's. These two helpers store and look up own properties only.
 */

/** `obj[key] = value` as an own, enumerable data property, whatever the key (even `__proto__`). */
export function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** `obj[key]` when obj has it as its own property, else undefined (never an inherited member). */
export function getOwn<T>(obj: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}
