/**
 * The training configuration: the seed's `config.yaml` keys (same names, same meaning) plus
 * ours. One table (`CONFIG_KEYS`) declares every key with its type, range, default and a line
 * of documentation; parsing, validation, defaults and the table in docs/training.md all come from it.
 *
 * Sources, later ones win: defaults < the YAML file < command-line overrides. Validation happens
 * once, here, at the boundary: an unknown key is an error that suggests the nearest known key
 * (edit distance), a wrong type or range names the key, what was expected and what was given.
 * Relative paths are taken relative to the current directory (as the seed's were).
 */
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { describeReadError, readRegularFileAsync, UsageError } from '@alexnet-stream/core';
import { INIT_SCHEMES, PRESETS } from '@alexnet-stream/model-alexnet';

export const ENGINE_NAMES = ['onnxruntime', 'tfjs'] as const;
export type EngineName = (typeof ENGINE_NAMES)[number];

export const LR_POLICIES = ['step', 'auto', 'cosine', 'poly'] as const;
export type LrPolicyName = (typeof LR_POLICIES)[number];

/**
 * `input_scale` as configured: null (none: the seed's raw `pixels − mean`), `auto` (1/std per
 * channel of the mean-subtracted training pixels, computed at the start of a run: input-scale.ts),
 * or one factor per channel (a single number is the same factor for every channel).
 */
export type InputScaleSetting = null | 'auto' | number[];

export interface TrainConfig {
  // --- the seed's keys
  /** Continue from a checkpoint in weights_dir (the seed's resume_train). */
  resume_train: boolean;
  /** Epoch to resume from; null: the latest checkpoint. */
  load_epoch: number | null;
  n_epochs: number;
  learning_rate: number;
  lr_policy: LrPolicyName;
  lr_adapt_threshold: number;
  lr_step: number[];
  rand_crop: boolean;
  shuffle: boolean;
  para_load: boolean;
  batch_crop_mirror: boolean;
  use_momentum: boolean;
  use_nesterov_momentum: boolean;
  momentum: number;
  weight_decay: number;
  weights_dir: string;
  snapshot_freq: number;
  print_train_error: boolean;
  print_freq: number;
  batch_size: number;
  // --- ours
  data_dir: string | null;
  mean_file: string | null;
  train_prefix: string;
  val_prefix: string;
  preset: (typeof PRESETS)[number];
  spec_file: string | null;
  num_classes: number | null;
  image_size: number | null;
  input_size: number | null;
  dropout: number;
  lrn: boolean;
  init: (typeof INIT_SCHEMES)[number];
  input_scale: InputScaleSetting;
  lr_warmup_epochs: number;
  lr_min: number;
  lr_power: number;
  label_smoothing: number;
  bias_lr_multiplier: number;
  seed: number;
  engine: EngineName;
  devices: string[];
  sync_every: number;
  sync_momentum: boolean;
  intra_op_threads: number;
  queue_depth: number;
  steps_per_run: number;
  verify_shards: boolean;
}

export type ConfigKey = keyof TrainConfig;

type KeyType =
  | { kind: 'boolean' }
  | { kind: 'integer'; min: number; max?: number; nullable?: boolean }
  | { kind: 'number'; min: number; max?: number; exclusiveMin?: boolean }
  | { kind: 'string'; nullable?: boolean }
  | { kind: 'enum'; values: readonly string[] }
  | { kind: 'integer-list'; min: number }
  | { kind: 'string-list' }
  | { kind: 'input-scale' };

export interface KeySpec {
  type: KeyType;
  default: unknown;
  doc: string;
  /** True for keys that come from the seed's config.yaml. */
  seed?: boolean;
}

/**
 * The largest learning rate taken (as `--lr`): the graph gets lr, lr x bias_lr_multiplier and
 * weight_decay as float32, where 1e39 is already Infinity (and the engine failed with an
 * internal error); 1e6 (and 1e6 for the multiplier and decay) stays far inside float32's range.
 */
export const MAX_LEARNING_RATE = 1e6;

export const CONFIG_KEYS: Record<ConfigKey, KeySpec> = {
  resume_train: { seed: true, type: { kind: 'boolean' }, default: false, doc: 'continue from a checkpoint in weights_dir (same as --resume)' },
  load_epoch: { seed: true, type: { kind: 'integer', min: 0, nullable: true }, default: null, doc: 'checkpoint epoch to resume from; null = the latest' },
  n_epochs: { seed: true, type: { kind: 'integer', min: 1 }, default: 60, doc: 'epochs to train (in total, counting resumed ones)' },
  learning_rate: { seed: true, type: { kind: 'number', min: 0, exclusiveMin: true, max: MAX_LEARNING_RATE }, default: 0.01, doc: 'initial learning rate' },
  lr_policy: {
    seed: true,
    type: { kind: 'enum', values: LR_POLICIES },
    default: 'step',
    doc: "`step`: divide by 10 after the epochs in lr_step; `auto`: divide by 10 when validation error stops improving (both the seed's, per epoch); ours, per iteration: `cosine`: from learning_rate down to lr_min along a half cosine over the run's n_epochs; `poly`: learning_rate · (1 − progress)^lr_power down to lr_min (Caffe's `poly`)",
  },
  lr_adapt_threshold: {
    seed: true,
    type: { kind: 'number', min: 0 },
    default: 0.01,
    doc: '`auto`: divide lr when top-1 error fell by less than this over the last two epochs',
  },
  lr_step: { seed: true, type: { kind: 'integer-list', min: 1 }, default: [20, 40], doc: '`step`: epochs after which lr is divided by 10' },
  rand_crop: { seed: true, type: { kind: 'boolean' }, default: true, doc: 'random crop + mirror for training (false: center crop)' },
  shuffle: { seed: true, type: { kind: 'boolean' }, default: true, doc: 'shuffle the batch order every epoch (deterministic from seed and epoch)' },
  para_load: { seed: true, type: { kind: 'boolean' }, default: true, doc: 'load and augment in a worker thread (false: on the training thread)' },
  batch_crop_mirror: { seed: true, type: { kind: 'boolean' }, default: false, doc: 'one crop/mirror draw per batch instead of per image' },
  use_momentum: { seed: true, type: { kind: 'boolean' }, default: true, doc: 'SGD with momentum (false: plain SGD)' },
  use_nesterov_momentum: { seed: true, type: { kind: 'boolean' }, default: false, doc: 'Nesterov momentum' },
  momentum: { seed: true, type: { kind: 'number', min: 0, max: 1 }, default: 0.9, doc: 'momentum μ' },
  weight_decay: { seed: true, type: { kind: 'number', min: 0, max: 1e6 }, default: 0.0005, doc: 'L2 weight decay λ (weights only, not biases)' },
  weights_dir: { seed: true, type: { kind: 'string' }, default: './weights', doc: 'checkpoints, val_record.json/.npy and train_log.jsonl go here' },
  snapshot_freq: { seed: true, type: { kind: 'integer', min: 1 }, default: 1, doc: 'write a checkpoint every this many epochs (and after the last)' },
  print_train_error: { seed: true, type: { kind: 'boolean' }, default: true, doc: 'include the training top-1 error in progress lines' },
  print_freq: { seed: true, type: { kind: 'integer', min: 1 }, default: 20, doc: 'a progress line (and a train_log.jsonl entry) every this many iterations' },
  batch_size: { seed: true, type: { kind: 'integer', min: 1 }, default: 256, doc: 'images per training step (per worker)' },
  data_dir: { type: { kind: 'string', nullable: true }, default: null, doc: 'shard directory with train/val shard sets and mean.npy (`prepare` writes one)' },
  mean_file: { type: { kind: 'string', nullable: true }, default: null, doc: 'mean image .npy; default `<data_dir>/mean.npy`' },
  train_prefix: { type: { kind: 'string' }, default: 'train', doc: 'shard prefix of the training set' },
  val_prefix: { type: { kind: 'string' }, default: 'val', doc: 'shard prefix of the validation set' },
  preset: { type: { kind: 'enum', values: PRESETS }, default: 'theano-alexnet', doc: 'model-alexnet preset' },
  spec_file: {
    type: { kind: 'string', nullable: true },
    default: null,
    doc: 'a JSON model spec (model-alexnet `ModelSpec`) instead of preset/input_size/dropout/lrn; its class count must match the data',
  },
  num_classes: {
    type: { kind: 'integer', min: 2, nullable: true },
    default: null,
    doc: "classes; null = the data's class count (when given, must match the data)",
  },
  image_size: {
    type: { kind: 'integer', min: 1, nullable: true },
    default: null,
    doc: 'expected stored image side (256 for ImageNet); null = whatever the data has',
  },
  input_size: { type: { kind: 'integer', min: 1, nullable: true }, default: null, doc: "crop / network input side; null = the preset's (227)" },
  dropout: { type: { kind: 'number', min: 0, max: 0.99 }, default: 0.5, doc: 'dropout rate of fc6/fc7 (0 removes dropout)' },
  lrn: { type: { kind: 'boolean' }, default: true, doc: 'keep the LRN layers of the preset' },
  init: {
    type: { kind: 'enum', values: INIT_SCHEMES },
    default: 'preset',
    doc: "weight init: `preset` (the seed's fixed stds); `kaiming`: He-normal after the first layer (conv1 keeps the preset's std, for raw-scale pixels); `kaiming-all`: He-normal in every layer, for inputs of unit scale (`input_scale`)",
  },
  input_scale: {
    type: { kind: 'input-scale' },
    default: null,
    doc: "multiply the mean-subtracted input by this, per channel: `auto` = 1/std of the training data's mean-subtracted pixels (torchvision's `Normalize(mean, std)`), a number, or one per channel (`[0.0171, 0.0175, 0.0174]`); null = the seed's raw pixels. Kept with the checkpoints and folded into conv1 by export and validate: exported models take pixels − mean as before",
  },
  lr_warmup_epochs: {
    type: { kind: 'number', min: 0, max: 1000 },
    default: 0,
    doc: "linear warm-up from learning_rate/k to learning_rate over the first k iterations (this many epochs' worth, fractions allowed), per iteration, under any lr_policy",
  },
  lr_min: { type: { kind: 'number', min: 0, max: MAX_LEARNING_RATE }, default: 0, doc: '`cosine`/`poly`: the learning rate the schedule ends at (its floor)' },
  lr_power: { type: { kind: 'number', min: 0, exclusiveMin: true, max: 100 }, default: 1, doc: '`poly`: the exponent of (1 − progress); 1 = linear decay' },
  label_smoothing: {
    type: { kind: 'number', min: 0, max: 0.99 },
    default: 0,
    doc: "training loss against (1 − ε)·one-hot + ε/classes targets (PyTorch's `CrossEntropyLoss(label_smoothing=ε)`); validation loss stays plain cross-entropy",
  },
  bias_lr_multiplier: { type: { kind: 'number', min: 0, max: 1e6 }, default: 2, doc: 'biases learn at this multiple of lr (the seed: 2)' },
  seed: { type: { kind: 'integer', min: 0, max: 0xffffffff }, default: 1234, doc: 'seeds weight init, data order, crops and dropout' },
  engine: { type: { kind: 'enum', values: ENGINE_NAMES }, default: 'onnxruntime', doc: 'training engine' },
  devices: { type: { kind: 'string-list' }, default: ['cpu'], doc: "devices of this worker's engine (`cpu`, `webgpu`, `cuda:0`; docs/gpus.md)" },
  sync_every: { type: { kind: 'integer', min: 1 }, default: 1, doc: 'multi-worker: average weights every this many iterations' },
  sync_momentum: {
    type: { kind: 'boolean' },
    default: false,
    doc: 'multi-worker: average the momentum velocities too at each sync (false: they stay local, as in the seed); needs `use_momentum`',
  },
  intra_op_threads: { type: { kind: 'integer', min: 0, max: 1024 }, default: 0, doc: 'onnxruntime intra-op threads; 0 = its default (all cores)' },
  queue_depth: { type: { kind: 'integer', min: 2, max: 64 }, default: 3, doc: 'batch buffers between loader and engine (memory = queue_depth x batch)' },
  steps_per_run: {
    type: { kind: 'integer', min: 1, max: 64 },
    default: 8,
    doc: 'onnxruntime: SGD steps per engine run (an ONNX Loop), so that the 488 MB of weights and velocities leave onnxruntime once per run, not per step (memory: steps_per_run x batch for the stacked batches; the Loop also keeps a second copy of the state in onnxruntime); on webgpu always 1: the state stays on the GPU instead',
  },
  verify_shards: { type: { kind: 'boolean' }, default: true, doc: "check each shard's sha256 against index.json when reading it" },
};

export const CONFIG_KEY_NAMES = Object.keys(CONFIG_KEYS) as ConfigKey[];

export function defaultConfig(): TrainConfig {
  const out: Record<string, unknown> = {};
  for (const key of CONFIG_KEY_NAMES) {
    const d = CONFIG_KEYS[key].default;
    out[key] = Array.isArray(d) ? d.slice() : d;
  }
  return out as unknown as TrainConfig;
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
 * Names other trainers use for our keys (PyTorch/timm, Caffe), suggested when one is given:
 * a user who writes `min_lr` or `warmup_epochs` is told the name here.
 */
const KEY_ALIASES: Record<string, ConfigKey> = {
  min_lr: 'lr_min',
  eta_min: 'lr_min',
  warmup_epochs: 'lr_warmup_epochs',
  lr_warmup: 'lr_warmup_epochs',
  warmup: 'lr_warmup_epochs',
  lr_schedule: 'lr_policy',
  lr_scheduler: 'lr_policy',
  power: 'lr_power',
  smoothing: 'label_smoothing',
  input_std: 'input_scale',
  normalize: 'input_scale',
  std: 'input_scale',
  lr: 'learning_rate',
  base_lr: 'learning_rate',
  epochs: 'n_epochs',
};

/** The known key nearest to `key`, if it is near enough to be a plausible typo (or another trainer's name for it). */
export function suggestKey(key: string): ConfigKey | undefined {
  let best: ConfigKey | undefined;
  let bestDistance = Infinity;
  const normalized = key.toLowerCase().replace(/-/g, '_');
  for (const known of CONFIG_KEY_NAMES) {
    const d = editDistance(normalized, known);
    if (d < bestDistance) {
      bestDistance = d;
      best = known;
    }
  }
  // A third of the key's length (at least 2) keeps `lerning_rate` → `learning_rate` and drops noise.
  if (bestDistance <= Math.max(2, Math.floor(key.length / 3))) return best;
  return Object.hasOwn(KEY_ALIASES, normalized) ? KEY_ALIASES[normalized] : undefined;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(describe).join(', ')}]`;
  if (typeof value === 'object') return 'a mapping';
  return String(value);
}

function expected(type: KeyType): string {
  switch (type.kind) {
    case 'boolean':
      return 'true or false';
    case 'integer':
      return `an integer >= ${type.min}${type.max !== undefined ? ` and <= ${type.max}` : ''}${type.nullable ? ' (or null)' : ''}`;
    case 'number':
      return `a number ${type.exclusiveMin ? '>' : '>='} ${type.min}${type.max !== undefined ? ` and <= ${type.max}` : ''}`;
    case 'string':
      return `a string without NUL characters${type.nullable ? ' (or null)' : ''}`;
    case 'enum':
      return `one of ${type.values.join(', ')}`;
    case 'integer-list':
      return `a list of integers >= ${type.min}`;
    case 'string-list':
      return 'a list of strings (or one comma-separated string)';
    case 'input-scale':
      return '"auto", null, a number > 0 or a list of numbers > 0 (one per channel)';
  }
}

/** Check one value against its key's type; returns the normalised value or throws a `UsageError`. */
export function checkConfigValue(key: ConfigKey, value: unknown, where: string): unknown {
  const type = CONFIG_KEYS[key].type;
  const fail = (): never => {
    throw new UsageError(`${where}: expected ${expected(type)} for ${key} but received ${describe(value)}`);
  };
  const isInteger = (v: unknown, min: number, max?: number): boolean =>
    typeof v === 'number' && Number.isSafeInteger(v) && v >= min && (max === undefined || v <= max);
  switch (type.kind) {
    case 'boolean':
      if (typeof value !== 'boolean') fail();
      return value;
    case 'integer':
      if (value === null && type.nullable) return null;
      if (!isInteger(value, type.min, type.max)) fail();
      return value;
    case 'number': {
      if (typeof value !== 'number' || !Number.isFinite(value)) fail();
      const n = value as number;
      if ((type.exclusiveMin ? n <= type.min : n < type.min) || (type.max !== undefined && n > type.max)) fail();
      return n;
    }
    case 'string':
      if (value === null && type.nullable) return null;
      // A NUL can be written in YAML ("\0") but no path holds one: Node refuses it deep inside.
      if (typeof value !== 'string' || value === '' || value.includes('\0')) fail();
      return value;
    case 'enum':
      if (typeof value !== 'string' || !type.values.includes(value)) fail();
      return value;
    case 'integer-list':
      if (Array.isArray(value) && value.every((v) => isInteger(v, type.min))) return (value as number[]).slice();
      if (isInteger(value, type.min)) return [value];
      return fail();
    case 'string-list':
      if (typeof value === 'string' && value.trim() !== '' && !value.includes('\0'))
        return value
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
      if (Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === 'string' && v !== '' && !v.includes('\0')))
        return (value as string[]).slice();
      return fail();
    case 'input-scale': {
      const positive = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;
      if (value === null || value === 'auto') return value;
      if (positive(value)) return [value];
      if (Array.isArray(value) && value.length > 0 && value.every(positive)) return (value as number[]).slice();
      return fail();
    }
  }
}

/**
 * Validate a parsed mapping of config values (from YAML or flags): every key must be known and
 * every value well-typed. Returns the normalised partial config.
 */
export function validateConfigValues(values: Record<string, unknown>, where: string): Partial<TrainConfig> {
  // No prototype: a key named `__proto__` is then an ordinary (unknown) key, never a prototype.
  const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const [key, value] of Object.entries(values)) {
    // Own keys only: `toString`, `constructor` and `__proto__` are not config keys.
    if (!Object.hasOwn(CONFIG_KEYS, key)) {
      const suggestion = suggestKey(key);
      throw new UsageError(`${where}: unknown key "${key}"${suggestion ? `; did you mean "${suggestion}"?` : ` (known keys: ${CONFIG_KEY_NAMES.join(', ')})`}`);
    }
    out[key] = checkConfigValue(key as ConfigKey, value, where);
  }
  return { ...out } as Partial<TrainConfig>;
}

/** Parse the text of a config.yaml; `name` appears in errors. An empty file is an empty mapping. */
export function parseConfigText(text: string, name: string): Partial<TrainConfig> {
  let raw: unknown;
  try {
    // Warnings (an unknown tag such as !!js/function) are not printed as process warnings: the
    // value is then a plain string, which the key's type check refuses with a clear message.
    raw = parseYaml(text, { logLevel: 'error' });
  } catch (err) {
    throw new UsageError(`${name}: not valid YAML (${(err as Error).message.split('\n')[0]})`);
  }
  if (raw === null || raw === undefined) return {};
  if (typeof raw !== 'object' || Array.isArray(raw))
    throw new UsageError(`${name}: expected a mapping of config keys at the top level but received ${describe(raw)}`);
  return validateConfigValues(raw as Record<string, unknown>, name);
}

/** A config is a few dozen lines; 4 MiB is far more than any (a FIFO or /dev/zero is refused, not read). */
const MAX_CONFIG_FILE_BYTES = 4 << 20;

export async function readConfigFile(path: string): Promise<Partial<TrainConfig>> {
  let text: string;
  try {
    text = (await readRegularFileAsync(path, { maxBytes: MAX_CONFIG_FILE_BYTES, limitName: 'the 4 MiB a config file may take' })).toString('utf8');
  } catch (err) {
    throw new UsageError(`${path}: cannot read the config file (${describeReadError(err)})`, { cause: err });
  }
  return parseConfigText(text, path);
}

/**
 * defaults < file < overrides, then cross-key checks (things no single key can check).
 * `overrides` are already validated values (from flags); undefined entries are ignored.
 */
export function resolveConfig(file: Partial<TrainConfig>, overrides: Partial<TrainConfig> = {}): TrainConfig {
  const config = defaultConfig() as unknown as Record<string, unknown>;
  for (const source of [file, overrides]) {
    for (const [key, value] of Object.entries(source)) if (value !== undefined) config[key] = value;
  }
  const c = config as unknown as TrainConfig;
  if (c.use_nesterov_momentum && !c.use_momentum) {
    throw new UsageError('use_nesterov_momentum: true needs use_momentum: true (Nesterov is a kind of momentum)');
  }
  if (c.sync_momentum && !c.use_momentum) {
    // Plain SGD has no velocities: the all-reduce would average zeros, doubling each sync's traffic.
    throw new UsageError('sync_momentum: true needs use_momentum: true (plain SGD has no velocities to average)');
  }
  if ((c.lr_policy === 'cosine' || c.lr_policy === 'poly') && c.lr_min >= c.learning_rate) {
    throw new UsageError(
      `lr_min ${c.lr_min} must be below learning_rate ${c.learning_rate}: lr_policy ${c.lr_policy} decays from learning_rate down to lr_min`,
    );
  }
  if (c.mean_file === null && c.data_dir !== null) c.mean_file = join(c.data_dir, 'mean.npy');
  c.lr_step = [...c.lr_step].sort((a, b) => a - b);
  return c;
}
