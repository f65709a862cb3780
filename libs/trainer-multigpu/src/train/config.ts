/**
 * The training configuration: the seed's `config.yaml` keys (same names, same meaning) plus
 * ours. One zod schema (`trainConfigSchema`) declares every key with its type, range, default,
 * normalisation and a line of documentation: the `TrainConfig` type is inferred from it, and
 * parsing, validation, defaults, the CLI's `--set` and flags, and the table in
 * docs/training.md (checked against it by test/src/config-docs.test.ts) all come from it.
 *
 * Sources, later ones win: defaults < the YAML file < command-line overrides. Validation happens
 * once, here, at the boundary: an unknown key is an error that suggests the nearest known key
 * (edit distance, or another trainer's name for it), a wrong type or range names the key, what
 * was expected and what was given. Relative paths are taken relative to the current directory
 * (as the seed's were).
 */
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import {
  describeReadError,
  describeReceived,
  lazySchema,
  loadZod,
  nearestKey,
  parseWithSchema,
  readRegularFileAsync,
  UsageError,
  type Zod,
} from '@alexnet-stream/core';
import { INIT_SCHEMES, PRESETS } from '@alexnet-stream/model-alexnet';

export const ENGINE_NAMES = ['onnxruntime', 'tfjs'] as const;
export type EngineName = (typeof ENGINE_NAMES)[number];

export const LR_POLICIES = ['step', 'auto', 'cosine', 'poly'] as const;
export type LrPolicyName = (typeof LR_POLICIES)[number];

/**
 * The largest learning rate taken (as `--lr`): the graph gets lr, lr x bias_lr_multiplier and
 * weight_decay as float32, where 1e39 is already Infinity (and the engine failed with an
 * internal error); 1e6 (and 1e6 for the multiplier and decay) stays far inside float32's range.
 */
export const MAX_LEARNING_RATE = 1e6;

/**
 * The schema. Each check of a key carries the key's "expected …" text as its error, so that
 * every way a value can be wrong reads the same ("expected an integer >= 1 for batch_size").
 */
function buildTrainConfigSchema(z: Zod) {
  const bounds = (min: number, max: number | undefined, strict = false) => `${strict ? '>' : '>='} ${min}${max !== undefined ? ` and <= ${max}` : ''}`;
  const checkedInteger = (expected: string, min: number, max?: number) => {
    const value = z.int({ error: expected }).min(min, { error: expected });
    return max === undefined ? value : value.max(max, { error: expected });
  };
  const integer = (min: number, max?: number) => checkedInteger(`an integer ${bounds(min, max)}`, min, max);
  const nullableInteger = (min: number) => checkedInteger(`an integer ${bounds(min, undefined)} (or null)`, min).nullable();
  /** A finite number >= min (and <= max). */
  const number = (min: number, max?: number) => {
    const expected = `a number ${bounds(min, max)}`;
    const value = z.number({ error: expected }).min(min, { error: expected });
    return max === undefined ? value : value.max(max, { error: expected });
  };
  /** A finite number > min and <= max (a rate, an exponent). */
  const above = (min: number, max: number) => {
    const expected = `a number ${bounds(min, max, true)}`;
    return z.number({ error: expected }).gt(min, { error: expected }).max(max, { error: expected });
  };
  const boolean = () => z.boolean({ error: 'true or false' });
  // A NUL can be written in YAML ("\0") but no path holds one: Node refuses it deep inside.
  const checkedText = (expected: string) =>
    z
      .string({ error: expected })
      .min(1, { error: expected })
      .refine((s) => !s.includes('\0'), { error: expected });
  const text = () => checkedText('a string without NUL characters');
  const nullableText = () => checkedText('a string without NUL characters (or null)').nullable();
  const oneOf = <const T extends readonly [string, ...string[]]>(values: T) => z.enum(values, { error: `one of ${values.join(', ')}` });

  // Normalised lists: the seed's single lr_step epoch, a comma-separated device string, and
  // one input_scale factor for every channel become lists.
  const EPOCHS = 'a list of integers >= 1';
  const epoch = checkedInteger(EPOCHS, 1);
  const epochList = z.union([epoch.transform((v) => [v]), z.array(epoch, { error: EPOCHS })], { error: EPOCHS });
  const DEVICES = 'a list of strings (or one comma-separated string)';
  const deviceList = z.union(
    [
      z
        .string({ error: DEVICES })
        .refine((s) => s.trim() !== '' && !s.includes('\0'), { error: DEVICES })
        .transform((s) =>
          s
            .split(',')
            .map((d) => d.trim())
            .filter(Boolean),
        ),
      z.array(checkedText(DEVICES), { error: DEVICES }).min(1, { error: DEVICES }),
    ],
    { error: DEVICES },
  );
  const SCALE = '"auto", null, a number > 0 or a list of numbers > 0 (one per channel)';
  const factor = z.number({ error: SCALE }).gt(0, { error: SCALE });
  /**
   * `input_scale`: null (none: the seed's raw `pixels − mean`), `auto` (1/std per channel of the
   * mean-subtracted training pixels, computed at the start of a run: input-scale.ts), or one
   * factor per channel (a single number is the same factor for every channel).
   */
  const inputScale = z.union([z.null(), z.literal('auto'), factor.transform((v) => [v]), z.array(factor, { error: SCALE }).min(1, { error: SCALE })], {
    error: SCALE,
  });

  /** A key with its default and its line in docs/training.md; `seedKey`: one of the seed's config.yaml keys. */
  const key = <S extends z.ZodType>(schema: S, defaultValue: z.core.util.NoUndefined<z.output<S>>, doc: string, seed = false) =>
    schema.default(defaultValue).meta({ description: doc, seed });
  const seedKey = <S extends z.ZodType>(schema: S, defaultValue: z.core.util.NoUndefined<z.output<S>>, doc: string) => key(schema, defaultValue, doc, true);

  return z.strictObject({
    resume_train: seedKey(boolean(), false, 'continue from a checkpoint in weights_dir (same as --resume)'),
    load_epoch: seedKey(nullableInteger(0), null, 'checkpoint epoch to resume from; null = the latest'),
    n_epochs: seedKey(integer(1), 60, 'epochs to train (in total, counting resumed ones)'),
    learning_rate: seedKey(above(0, MAX_LEARNING_RATE), 0.01, 'initial learning rate'),
    lr_policy: seedKey(
      oneOf(LR_POLICIES),
      'step',
      "`step`: divide by 10 after the epochs in lr_step; `auto`: divide by 10 when validation error stops improving (both the seed's, per epoch); ours, per iteration: `cosine`: from learning_rate down to lr_min along a half cosine over the run's n_epochs; `poly`: learning_rate · (1 − progress)^lr_power down to lr_min (Caffe's `poly`)",
    ),
    lr_adapt_threshold: seedKey(number(0), 0.01, '`auto`: divide lr when top-1 error fell by less than this over the last two epochs'),
    lr_step: seedKey(epochList, [20, 40], '`step`: epochs after which lr is divided by 10'),
    rand_crop: seedKey(boolean(), true, 'random crop + mirror for training (false: center crop)'),
    shuffle: seedKey(boolean(), true, 'shuffle the batch order every epoch (deterministic from seed and epoch)'),
    para_load: seedKey(boolean(), true, 'load and augment in a worker thread (false: on the training thread)'),
    batch_crop_mirror: seedKey(boolean(), false, 'one crop/mirror draw per batch instead of per image'),
    use_momentum: seedKey(boolean(), true, 'SGD with momentum (false: plain SGD)'),
    use_nesterov_momentum: seedKey(boolean(), false, 'Nesterov momentum'),
    momentum: seedKey(number(0, 1), 0.9, 'momentum μ'),
    weight_decay: seedKey(number(0, 1e6), 0.0005, 'L2 weight decay λ (weights only, not biases)'),
    weights_dir: seedKey(text(), './weights', 'checkpoints, val_record.json/.npy and train_log.jsonl go here'),
    snapshot_freq: seedKey(integer(1), 1, 'write a checkpoint every this many epochs (and after the last)'),
    print_train_error: seedKey(boolean(), true, 'include the training top-1 error in progress lines'),
    print_freq: seedKey(integer(1), 20, 'a progress line (and a train_log.jsonl entry) every this many iterations'),
    batch_size: seedKey(integer(1), 256, 'images per training step (per worker)'),
    data_dir: key(nullableText(), null, 'shard directory with train/val shard sets and mean.npy (`prepare` writes one)'),
    mean_file: key(nullableText(), null, 'mean image .npy; default `<data_dir>/mean.npy`'),
    train_prefix: key(text(), 'train', 'shard prefix of the training set'),
    val_prefix: key(text(), 'val', 'shard prefix of the validation set'),
    preset: key(oneOf(PRESETS), 'theano-alexnet', 'model-alexnet preset'),
    spec_file: key(
      nullableText(),
      null,
      'a JSON model spec (model-alexnet `ModelSpec`) instead of preset/input_size/dropout/lrn; its class count must match the data',
    ),
    num_classes: key(nullableInteger(2), null, "classes; null = the data's class count (when given, must match the data)"),
    image_size: key(nullableInteger(1), null, 'expected stored image side (256 for ImageNet); null = whatever the data has'),
    input_size: key(nullableInteger(1), null, "crop / network input side; null = the preset's (227)"),
    dropout: key(number(0, 0.99), 0.5, 'dropout rate of fc6/fc7 (0 removes dropout)'),
    lrn: key(boolean(), true, 'keep the LRN layers of the preset'),
    init: key(
      oneOf(INIT_SCHEMES),
      'preset',
      "weight init: `preset` (the seed's fixed stds); `kaiming`: He-normal after the first layer (conv1 keeps the preset's std, for raw-scale pixels); `kaiming-all`: He-normal in every layer, for inputs of unit scale (`input_scale`)",
    ),
    input_scale: key(
      inputScale,
      null,
      "multiply the mean-subtracted input by this, per channel: `auto` = 1/std of the training data's mean-subtracted pixels (torchvision's `Normalize(mean, std)`), a number, or one per channel (`[0.0171, 0.0175, 0.0174]`); null = the seed's raw pixels. Kept with the checkpoints and folded into conv1 by export and validate: exported models take pixels − mean as before",
    ),
    lr_warmup_epochs: key(
      number(0, 1000),
      0,
      "linear warm-up from learning_rate/k to learning_rate over the first k iterations (this many epochs' worth, fractions allowed), per iteration, under any lr_policy",
    ),
    lr_min: key(number(0, MAX_LEARNING_RATE), 0, '`cosine`/`poly`: the learning rate the schedule ends at (its floor)'),
    lr_power: key(above(0, 100), 1, '`poly`: the exponent of (1 − progress); 1 = linear decay'),
    label_smoothing: key(
      number(0, 0.99),
      0,
      "training loss against (1 − ε)·one-hot + ε/classes targets (PyTorch's `CrossEntropyLoss(label_smoothing=ε)`); validation loss stays plain cross-entropy",
    ),
    bias_lr_multiplier: key(number(0, 1e6), 2, 'biases learn at this multiple of lr (the seed: 2)'),
    seed: key(integer(0, 0xffffffff), 1234, 'seeds weight init, data order, crops and dropout'),
    engine: key(oneOf(ENGINE_NAMES), 'onnxruntime', 'training engine'),
    devices: key(deviceList, ['cpu'], "devices of this worker's engine (`cpu`, `webgpu`, `cuda:0`; docs/gpus.md)"),
    sync_every: key(integer(1), 1, 'multi-worker: average weights every this many iterations'),
    sync_momentum: key(
      boolean(),
      false,
      'multi-worker: average the momentum velocities too at each sync (false: they stay local, as in the seed); needs `use_momentum`',
    ),
    intra_op_threads: key(integer(0, 1024), 0, 'onnxruntime intra-op threads; 0 = its default (all cores)'),
    queue_depth: key(integer(2, 64), 3, 'batch buffers between loader and engine (memory = queue_depth x batch)'),
    steps_per_run: key(
      integer(1, 64),
      8,
      'onnxruntime: SGD steps per engine run (an ONNX Loop), so that the 488 MB of weights and velocities leave onnxruntime once per run, not per step (memory: steps_per_run x batch for the stacked batches; the Loop also keeps a second copy of the state in onnxruntime); on webgpu always 1: the state stays on the GPU instead',
    ),
    verify_shards: key(boolean(), true, "check each shard's sha256 against index.json when reading it"),
  });
}

/** The training config's schema (built on first use: core's schema.ts says why). */
export const trainConfigSchema = lazySchema(buildTrainConfigSchema);

export type TrainConfigSchema = ReturnType<typeof buildTrainConfigSchema>;
export type TrainConfig = z.output<TrainConfigSchema>;
export type ConfigKey = keyof TrainConfig;
/** `input_scale` as configured: null, `auto`, or one factor per channel (one for all). */
export type InputScaleSetting = TrainConfig['input_scale'];

/** What docs/training.md's table says of a key: its default, its meaning, and whether the seed has it. */
export interface KeySpec {
  default: unknown;
  doc: string;
  /** True for keys that come from the seed's config.yaml. */
  seed: boolean;
}

/** Every key's KeySpec, in the schema's order (the docs table's). */
export const configKeys = lazySchema((): Record<ConfigKey, KeySpec> => {
  const out = {} as Record<ConfigKey, KeySpec>;
  for (const [name, schema] of Object.entries(trainConfigSchema().shape)) {
    const meta = schema.meta() as { description: string; seed: boolean };
    out[name as ConfigKey] = { default: schema.def.defaultValue, doc: meta.description, seed: meta.seed };
  }
  return out;
});

export function configKeyNames(): ConfigKey[] {
  return Object.keys(trainConfigSchema().shape) as ConfigKey[];
}

/** Is `key` a config key (an own key of the schema: `constructor` and `__proto__` are not)? */
export function isConfigKey(key: string): key is ConfigKey {
  return Object.hasOwn(trainConfigSchema().shape, key);
}

/** The same keys without defaults, each optional: what one source (a file, the flags) may set. */
const configValuesSchema = lazySchema((zod) => {
  const shape = trainConfigSchema().shape as Record<string, z.ZodDefault<z.ZodType>>;
  return zod.strictObject(Object.fromEntries(Object.entries(shape).map(([name, schema]) => [name, schema.removeDefault().optional()])));
});

/** The JSON Schema of a config file (for editors: YAML language servers take one); generated from the schema. */
export function trainConfigJsonSchema(): Record<string, unknown> {
  return loadZod().toJSONSchema(trainConfigSchema(), { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}

export function defaultConfig(): TrainConfig {
  return trainConfigSchema().parse({});
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
  const normalized = key.toLowerCase().replace(/-/g, '_');
  return nearestKey(key, configKeyNames()) ?? (Object.hasOwn(KEY_ALIASES, normalized) ? KEY_ALIASES[normalized] : undefined);
}

/**
 * Validate a parsed mapping of config values (from YAML or flags): every key must be known and
 * every value well-typed. Returns the normalised partial config; `where` (a file, a flag)
 * begins every message.
 */
export function validateConfigValues(values: Record<string, unknown>, where: string): Partial<TrainConfig> {
  // zod reads own keys only: `toString`, `constructor` and `__proto__` are unknown keys, never a prototype.
  return parseWithSchema(configValuesSchema(), values, { where, errorClass: UsageError, pathDepth: 1, suggestKey }) as Partial<TrainConfig>;
}

/** Check one value against its key's schema; returns the normalised value or throws a `UsageError`. */
export function checkConfigValue<K extends ConfigKey>(key: K, value: unknown, where: string): TrainConfig[K] {
  return validateConfigValues({ [key]: value }, where)[key] as TrainConfig[K];
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
    throw new UsageError(`${name}: expected a mapping of config keys at the top level but received ${describeReceived(raw)}`);
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
