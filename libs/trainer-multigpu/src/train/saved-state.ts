/**
 * What the trainer keeps in a checkpoint's state.json besides the model spec and input scale
 * (those are model-alexnet's: checkpoint.ts): the loop's position and learning rate, the
 * validation record so far, the dropout RNG, the data fingerprint an exact resume compares, and
 * the config the run was started with. One zod schema describes it: `SavedTrainState` (what is
 * written) and `SavedState` (what is read back) are its types, and a resume parses the file
 * with it (the file can be edited or come from another checkpoint): a wrong field is an
 * InputError (ERR_CHECKPOINT) naming the file, the field, what was expected and what it holds.
 *
 * Fields a resume does not use are described loosely or not at all (the saved config is the
 * TrainConfig of the run, of which only n_epochs and learning_rate are compared), so that a
 * checkpoint stays resumable when a later version renames a config key.
 */
import type { z } from 'zod';
import { InputError, type KnownFields, lazySchema, parseWithSchema, type Zod } from '@alexnet-stream/core';
import { MAX_LEARNING_RATE, type TrainConfig } from './config';
import { runFileSchemas } from './files';
import type { ValidationResult } from './trainer';

function buildSavedStateSchemas(z: Zod) {
  const COUNT = 'a count (an integer >= 0)';
  const count = z.int({ error: COUNT }).min(0, { error: COUNT });
  const nullableCount = z
    .int({ error: `${COUNT} or null` })
    .min(0, { error: `${COUNT} or null` })
    .nullable();
  const POSITIVE = 'an integer >= 1';
  const positive = z.int({ error: POSITIVE }).min(1, { error: POSITIVE });
  const SEED = 'a seed (an integer from 0 to 4294967295)';
  const LR = `a learning rate > 0 and <= ${MAX_LEARNING_RATE}`;
  const NUMBER = 'a number';

  /** What a resume must find unchanged to continue at a position inside an epoch (saved with each checkpoint). */
  const fingerprint = z.looseObject(
    {
      trainImages: nullableCount,
      valImages: nullableCount,
      batchSize: positive,
      worldSize: positive,
      iterationsPerEpoch: nullableCount,
      shuffle: z.boolean({ error: 'true or false' }),
      seed: z.int({ error: SEED }).min(0, { error: SEED }).max(0xffffffff, { error: SEED }),
    },
    { error: 'a data fingerprint (an object)' },
  );

  const state = z.looseObject(
    {
      /** The checkpoint's epoch (its directory's name): the position below decides, this is for people. */
      epoch: count.optional(),
      epochsCompleted: count,
      /** Iterations already done inside epoch `epochsCompleted + 1` (0 at an epoch boundary). */
      iterationInEpoch: count,
      iteration: count,
      /** The base lr (lr-policy.ts), float32 as the seed keeps it. */
      lr: z.number({ error: LR }).gt(0, { error: LR }).max(MAX_LEARNING_RATE, { error: LR }),
      /** Epoch after which lr last changed (0: never). */
      lastLrChangeEpoch: count,
      val_record: z.array(runFileSchemas().validationResult, { error: 'a list of validation results' }).optional(),
      /** The run's config: only what a resume compares is described. */
      config: z
        .looseObject(
          { n_epochs: z.number({ error: NUMBER }).optional(), learning_rate: z.number({ error: NUMBER }).optional() },
          { error: 'a config (an object)' },
        )
        .optional(),
      /** The engine's dropout stream (checked by the engine's setRngState) and how the loader derives its seeds (nothing to restore). */
      rng: z.looseObject({ dropout: z.unknown().optional(), loader: z.unknown().optional() }, { error: 'RNG states (an object)' }).optional(),
      data: fingerprint.optional(),
      engine: z.string({ error: 'a string' }).optional(),
      savedAt: z.string({ error: 'a date (ISO 8601 text)' }).optional(),
    },
    { error: "a checkpoint's trainer state (an object)" },
  );
  return { fingerprint, state };
}

const savedStateSchemas = lazySchema(buildSavedStateSchemas);
type Schemas = ReturnType<typeof buildSavedStateSchemas>;

/** The schema of the trainer's part of state.json (built on first use: core's schema.ts says why). */
export const savedStateSchema = (): Schemas['state'] => savedStateSchemas().state;

export type DataFingerprint = KnownFields<z.output<Schemas['fingerprint']>>;

/** state.json's trainer fields as read back (each checked; the ones an old checkpoint may lack optional). */
export type SavedState = KnownFields<z.output<Schemas['state']>>;

/** state.json's trainer fields as the trainer writes them: all of them, the config whole. */
export type SavedTrainState = Omit<KnownFields<z.input<Schemas['state']>>, keyof SavedByTrainer> & SavedByTrainer;

/**
 * The fields the schema describes loosely or leaves optional (for older checkpoints), as the
 * trainer writes them (a type, not an interface: a state is passed on as a Record<string, unknown>).
 */
type SavedByTrainer = {
  epoch: number;
  val_record: ValidationResult[];
  config: TrainConfig;
  rng: { dropout: unknown; loader: { seed: number; epoch: number; position: number; scheme: string } };
  data: DataFingerprint;
  engine: string;
  savedAt: string;
};

/** The trainer's part of a checkpoint's state.json (`path` names it in errors), checked. */
export function parseSavedState(saved: unknown, path: string): SavedState {
  return parseWithSchema(savedStateSchema(), saved, { where: path, errorClass: InputError, code: 'ERR_CHECKPOINT' });
}
