/**
 * What export, predict and validate share: loading weights (a checkpoint or a seeded random
 * init) into a spec, mean images and class names.
 */
import { InputError, invalidParameter, type MeanImage, type NamedTensors, UsageError } from '@alexnet-stream/core';
import {
  alexnetSpec,
  foldInputScale,
  initParameters,
  isPresetName,
  loadCheckpoint,
  type ModelSpec,
  ModelSpecError,
  PRESETS,
} from '@alexnet-stream/model-alexnet';
import { readClassNames, readMeanNpy } from '@alexnet-stream/stream-io';

export interface WeightsOptions {
  weights?: string;
  randomInit?: boolean;
  seed?: number;
  preset?: string;
  numClasses?: number;
}

export interface LoadedWeights {
  spec: ModelSpec;
  /**
   * The weights for inputs of `pixels − mean`: a checkpoint trained with an input scale
   * (`input_scale`) has it folded into its first layer here (model-alexnet input-scale.ts), so
   * that export, validate and predict feed every model the same way.
   */
  weights: NamedTensors;
  /** The checkpoint's input scale, already folded into `weights` (for the record: export's metadata). */
  foldedInputScale?: number[];
  /** Class names the checkpoint knows (state.classNames), if any. */
  classNames?: string[];
  source: string;
}

function presetSpec(opts: WeightsOptions, fallback?: number): ModelSpec | undefined {
  if (opts.preset === undefined && opts.numClasses === undefined) return undefined;
  const preset = opts.preset ?? 'theano-alexnet';
  if (!isPresetName(preset)) throw invalidParameter('--preset', `one of ${PRESETS.join(', ')}`, preset);
  try {
    return alexnetSpec(preset, { numClasses: opts.numClasses ?? fallback });
  } catch (err) {
    // A spec the flags make but no model may have (a class count past the spec limits, an input
    // too small for a layer): say which flags made it. Parameter errors name their flag already.
    if (!(err instanceof ModelSpecError)) throw err;
    const flags = `--preset ${preset}${opts.numClasses !== undefined ? `, --num-classes ${opts.numClasses}` : ''}`;
    throw new UsageError(`${err.message} (the model of ${flags})`, { cause: err });
  }
}

/** `--weights <ckpt>` or `--random-init --seed N`, validated once here. */
export function loadWeights(opts: WeightsOptions): LoadedWeights {
  if (opts.weights && opts.randomInit) throw new UsageError('give either --weights <ckpt> or --random-init, not both');
  if (!opts.weights && !opts.randomInit) throw new UsageError('give --weights <ckpt> (a checkpoint directory or .safetensors file) or --random-init --seed N');
  if (opts.randomInit) {
    if (opts.seed === undefined) throw new UsageError('--random-init needs --seed N (the same seed gives the same weights)');
    const spec = presetSpec(opts) ?? alexnetSpec('theano-alexnet');
    return { spec, weights: initParameters(spec, opts.seed), source: `random init (seed ${opts.seed})` };
  }
  if (opts.seed !== undefined) throw new UsageError('--seed applies to --random-init only');
  const ckpt = loadCheckpoint(opts.weights!, presetSpec(opts));
  // state.json is input too: class names, when there, must be one string per class.
  const names = Object.hasOwn(ckpt.state, 'classNames') ? ckpt.state.classNames : undefined;
  if (names !== undefined && (!Array.isArray(names) || names.length !== ckpt.spec.numClasses || !names.every((n) => typeof n === 'string'))) {
    throw new InputError(`${opts.weights}: state.json classNames is not a list of ${ckpt.spec.numClasses} strings (one per class of the model)`);
  }
  const classNames = names as string[] | undefined;
  const scale = ckpt.inputScale;
  const weights = scale ? foldInputScale(ckpt.spec, ckpt.weights, scale) : ckpt.weights;
  return { spec: ckpt.spec, weights, ...(scale ? { foldedInputScale: scale } : {}), classNames, source: ckpt.weightsPath };
}

/** A class names file for a model of `numClasses` classes. */
export async function loadClassNames(path: string, numClasses: number, option: string): Promise<string[]> {
  const names = await readClassNames(path);
  if (names.length !== numClasses) throw new InputError(`${path} (${option}) lists ${names.length} classes, the model has ${numClasses}`);
  return names;
}

/** A mean image file with 3 channels and a square size at least `minSize`. */
export async function loadMeanImage(path: string, minSize: number): Promise<MeanImage> {
  const mean = await readMeanNpy(path);
  if (mean.channels !== 3 || mean.height !== mean.width || mean.height < minSize) {
    throw new InputError(`${path}: a mean image of 3xSxS with S >= ${minSize} is needed, this one is ${mean.channels}x${mean.height}x${mean.width}`);
  }
  return mean;
}

/**
 * Allocate a command's batch buffers; a size JS cannot allocate (a huge --batch-size) is a
 * UsageError that says which option to lower, instead of a RangeError from deep inside.
 */
export function allocateBatch<T extends unknown[]>(allocate: () => T, what: string): T {
  try {
    return allocate();
  } catch (err) {
    if (err instanceof RangeError) throw new UsageError(`cannot allocate the buffers for ${what} (${err.message}): lower --batch-size`);
    throw err;
  }
}
