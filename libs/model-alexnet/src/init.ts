/**
 * Seeded weight initialisation from the spec's init rules (DESIGN §6: every worker builds
 * identical initial weights from the same seed, in any process, on any platform).
 *
 * Each parameter draws from its own `Rng`, seeded by `parameterSeed(seed, name)` (FNV-1a of
 * the seed and the parameter's name), so adding, removing or resizing one layer leaves the
 * values of every other layer unchanged, and re-initialising fc8 for fine-tuning does not
 * depend on which layers precede it. Values are computed in float64 and rounded once to
 * float32 (`Float32Array` assignment rounds to nearest), so the bytes are a pure function of
 * (seed, name, shape, rule).
 */
import { check, InvalidParameterError, type NamedTensors, Rng } from '@alexnet-stream/core';
import { type InitRule, type ModelSpec, type ParamInfo, parameterList } from './spec';

/** 32-bit FNV-1a over UTF-16 code units of `text` (all our names are ASCII). */
function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** The `Rng` seed of one parameter: depends only on the run's seed and the parameter's name. */
export function parameterSeed(seed: number, name: string): number {
  return fnv1a32(`alexnet-stream/init/${seed}/${name}`);
}

function checkSeed(seed: number): void {
  check.seed('seed', seed);
}

/**
 * PyTorch's fan_in of a parameter's layer: in/group·kh·kw for conv weights `[out, in/g, kh, kw]`,
 * `in` for fc weights `[out, in]`. Biases use their layer's weight fan_in (as `nn.Conv2d` /
 * `nn.Linear.reset_parameters` do).
 */
export function fanIn(param: ParamInfo, all: ParamInfo[]): number {
  const weight = param.role === 'weight' ? param : all.find((p) => p.layer === param.layer && p.role === 'weight');
  if (!weight) throw new Error(`${param.name}: no weight in layer ${param.layer} to take fan_in from`);
  return weight.shape.slice(1).reduce((a, b) => a * b, 1);
}

/** Fill a new Float32Array of `count` values by `rule`, drawing from `rng`. */
export function sampleInit(rule: InitRule, count: number, rng: Rng, fanInValue: number): Float32Array {
  const out = new Float32Array(count);
  switch (rule.dist) {
    case 'normal': {
      const mean = rule.mean ?? 0;
      for (let i = 0; i < count; i++) out[i] = mean + rule.std * rng.nextNormal();
      break;
    }
    case 'constant':
      out.fill(rule.value);
      break;
    case 'fan-in-normal': {
      const std = rule.gain / Math.sqrt(fanInValue);
      for (let i = 0; i < count; i++) out[i] = std * rng.nextNormal();
      break;
    }
    case 'fan-in-uniform': {
      // kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default.
      const bound = 1 / Math.sqrt(fanInValue);
      for (let i = 0; i < count; i++) out[i] = (2 * rng.nextFloat() - 1) * bound;
      break;
    }
  }
  return out;
}

function initOne(param: ParamInfo, all: ParamInfo[], seed: number): Float32Array {
  const count = param.shape.reduce((a, b) => a * b, 1);
  return sampleInit(param.init, count, new Rng(parameterSeed(seed, param.name)), fanIn(param, all));
}

/** Every parameter of `parameterList(spec)`, in that order, initialised by its rule. */
export function initParameters(spec: ModelSpec, seed: number): NamedTensors {
  checkSeed(seed);
  const params = parameterList(spec);
  const weights: NamedTensors = {};
  for (const p of params) weights[p.name] = initOne(p, params, seed);
  return weights;
}

/**
 * Re-initialise some parameters (e.g. `['fc8']` or `['fc8.weight', 'fc8.bias']` when fine-tuning
 * to another class count): each named parameter (a layer name selects its weight and bias) is
 * replaced in `weights` by a fresh array of the spec's shape, exactly as `initParameters(spec,
 * seed)` would have made it. Mutates and returns `weights`; other entries are kept as they are.
 */
export function reinitParameters(spec: ModelSpec, weights: NamedTensors, names: string[], seed: number): NamedTensors {
  checkSeed(seed);
  const params = parameterList(spec);
  const selected = new Set<string>();
  for (const name of names) {
    const matches = params.filter((p) => p.name === name || p.layer === name);
    if (matches.length === 0) {
      throw new InvalidParameterError('names', `parameter or layer names of the ${spec.preset} spec (${params.map((p) => p.name).join(', ')})`, name);
    }
    for (const p of matches) selected.add(p.name);
  }
  for (const p of params) if (selected.has(p.name)) weights[p.name] = initOne(p, params, seed);
  return weights;
}
