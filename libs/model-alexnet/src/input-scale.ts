/**
 * Input scaling (the trainer's `input_scale`): a network trained on `(pixels − mean) · s_c`, with
 * one positive factor s_c per channel (1/std gives torchvision's Normalize(mean, std)), instead
 * of the seed's raw `pixels − mean`.
 *
 * The scale is not a layer of the spec: checkpoints keep the weights as trained (so that a
 * resumed run continues bit for bit) and the scale beside them (`Checkpoint.inputScale`).
 * Everything that runs a model outside the trainer gets `foldInputScale`'s weights instead: the
 * first conv (or fc) layer is linear in its input, so
 *
 *   conv(W, (x − m) · s) = conv(W ⊙ s, x − m)      with (W ⊙ s)[o, c, …] = W[o, c, …] · s_c
 *
 * and layers before it that are positively homogeneous per channel (ReLU, max-pool, dropout,
 * flatten) commute with a positive per-channel factor. The folded model takes `pixels − mean`
 * like every other model of this project: export, predict, validate and third-party runtimes
 * need no code of their own. LRN is not homogeneous: a spec with LRN before its first weighted
 * layer cannot be folded (`inputScaleProblem`), and the trainer refuses to train it with a scale.
 */
import { InputError, type NamedTensors } from '@alexnet-stream/core';
import { inferShapes, type ModelSpec, type ParamLayer } from './spec';

/** Why `spec` cannot have its input scale folded into its first weighted layer, or undefined. */
export function inputScaleProblem(spec: ModelSpec): string | undefined {
  for (const { layer } of inferShapes(spec)) {
    if (layer.kind === 'conv' || layer.kind === 'fc') return undefined;
    if (layer.kind === 'lrn')
      return `${layer.name} (LRN) comes before the first weighted layer: it is not linear in its input, so an input scale cannot be folded into the weights`;
  }
  return 'the model has no weighted layer to fold an input scale into';
}

/**
 * Is `value` a usable input scale for `spec` (one finite positive number per input channel)?
 * Returns it as numbers, or throws an InputError naming `source`.
 */
export function checkInputScale(value: unknown, spec: Pick<ModelSpec, 'inputChannels'>, source: string): number[] {
  if (!Array.isArray(value) || value.length !== spec.inputChannels || !value.every((v) => typeof v === 'number' && Number.isFinite(v) && v > 0)) {
    const text = JSON.stringify(value) ?? String(value);
    throw new InputError(
      `${source}: input scale ${text.length > 80 ? `${text.slice(0, 77)}...` : text} is not ${spec.inputChannels} finite numbers > 0 (one per input channel)`,
      { code: 'ERR_INPUT_SCALE' },
    );
  }
  return value.slice() as number[];
}

/**
 * `weights` with the per-channel `scale` multiplied into the first weighted layer's weight (a new
 * object; every other tensor is shared, not copied): the model then takes unscaled input. With
 * `scale` all ones the same arrays come back. The bias is untouched (the scale multiplies the
 * input, not the output).
 */
export function foldInputScale(spec: ModelSpec, weights: NamedTensors, scale: readonly number[]): NamedTensors {
  const problem = inputScaleProblem(spec);
  if (problem) throw new RangeError(`foldInputScale: ${problem}`);
  if (scale.length !== spec.inputChannels || !scale.every((s) => Number.isFinite(s) && s > 0)) {
    throw new RangeError(`foldInputScale: expected ${spec.inputChannels} finite factors > 0, got [${scale.join(', ')}]`);
  }
  if (scale.every((s) => s === 1)) return weights;
  const shapes = inferShapes(spec);
  const first = shapes.find((s) => s.layer.kind === 'conv' || s.layer.kind === 'fc')!;
  const layer = first.layer as ParamLayer;
  const name = `${layer.name}.weight`;
  const w = weights[name];
  const out = Float32Array.from(w);
  if (layer.kind === 'conv') {
    // OIHW [out, in/group, k, k]: group g's filters read input channels g·(in/group) … .
    const group = layer.group;
    const inPerGroup = first.input[0] / group;
    const outPerGroup = layer.outChannels / group;
    const taps = layer.kernel * layer.kernel;
    for (let o = 0; o < layer.outChannels; o++) {
      const g = Math.floor(o / outPerGroup);
      for (let ci = 0; ci < inPerGroup; ci++) {
        const factor = scale[g * inPerGroup + ci];
        const at = (o * inPerGroup + ci) * taps;
        for (let t = 0; t < taps; t++) out[at + t] = w[at + t] * factor;
      }
    }
  } else {
    // fc after a flatten: [out, C·H·W], channel-major, so column j reads channel ⌊j / (H·W)⌋.
    const inFeatures = first.input[0];
    const perChannel = inFeatures / spec.inputChannels;
    for (let o = 0; o < layer.outFeatures; o++) {
      for (let j = 0; j < inFeatures; j++) out[o * inFeatures + j] = w[o * inFeatures + j] * scale[Math.floor(j / perChannel)];
    }
  }
  return { ...weights, [name]: out };
}

/**
 * Weights trained for input scale `from` (undefined: none), made to give the same function for
 * input scale `to` (undefined: none): the first layer's weight times from/to per channel. For
 * `--init` from a checkpoint trained with another scale.
 */
export function rescaleInputScale(
  spec: ModelSpec,
  weights: NamedTensors,
  from: readonly number[] | undefined,
  to: readonly number[] | undefined,
): NamedTensors {
  const ones = new Array<number>(spec.inputChannels).fill(1);
  const a = from ?? ones,
    b = to ?? ones;
  return foldInputScale(
    spec,
    weights,
    a.map((v, c) => v / b[c]),
  );
}
