/**
 * `input_scale`: the per-channel factor the loader multiplies each mean-subtracted crop by, so
 * that the network sees inputs of about unit scale (torchvision's `Normalize(mean, std)`), not the
 * seed's raw `pixels − mean` (std ~50-90 levels: every layer then works at a scale the usable lr
 * window has to make up for; docs/training.md "Time to accuracy").
 *
 * `auto` is 1/std per channel of what the network is fed without it: the training pixels minus the
 * mean image (the data dir's `mean.npy`), over the first `maxImages` training images in shard
 * order (`prepare` shuffles, so they are a random sample; 10,000 images estimate a std to ~0.1%).
 * It is computed once, at the start of a run, and saved with every checkpoint: a resumed run
 * uses the saved factors, never a recomputation, so it stays exact whatever happens to the data.
 *
 * Memory: one decoded shard at a time.
 */
import { InputError, type MeanImage, UsageError } from '@alexnet-stream/core';
import { readShard, type ShardSetEntry } from '@alexnet-stream/stream-io';
import type { InputScaleSetting } from './config';

/** How many training images `auto` looks at, at most. */
export const INPUT_STD_MAX_IMAGES = 10_000;

export interface InputStdSource {
  dir: string;
  set: ShardSetEntry;
  mean: MeanImage;
  maxImages?: number;
  verify?: boolean;
}

/**
 * The standard deviation of (pixel − mean image) per channel, in pixel levels, over the first
 * `maxImages` images of `set` (float64 sums: ~10⁹ terms stay exact to ~1e-12 relative).
 */
export async function computeInputStd(source: InputStdSource): Promise<number[]> {
  const { dir, set, mean } = source;
  const [channels, height, width] = set.imageShape;
  if (mean.channels !== channels || mean.height !== height || mean.width !== width) {
    throw new InputError(`${dir}: the mean image is ${mean.channels}x${mean.height}x${mean.width} but the images are ${channels}x${height}x${width}`, {
      code: 'ERR_DATA_MISMATCH',
    });
  }
  const maxImages = source.maxImages ?? INPUT_STD_MAX_IMAGES;
  const plane = height * width;
  const sum = new Float64Array(channels);
  const sumSquares = new Float64Array(channels);
  let images = 0;
  for (const file of set.shards) {
    if (images >= maxImages) break;
    const shard = await readShard(dir, set, file, { verify: source.verify ?? true });
    for (const batch of shard.batches) {
      const pixels = batch.data as Uint8Array;
      const n = Math.min(batch.shape[0], maxImages - images);
      for (let i = 0; i < n; i++) {
        for (let c = 0; c < channels; c++) {
          const at = (i * channels + c) * plane;
          const m = mean.data.subarray(c * plane, (c + 1) * plane);
          let s = 0,
            ss = 0;
          for (let j = 0; j < plane; j++) {
            const d = pixels[at + j] - m[j];
            s += d;
            ss += d * d;
          }
          sum[c] += s;
          sumSquares[c] += ss;
        }
      }
      images += n;
      if (images >= maxImages) break;
    }
  }
  if (images === 0) throw new InputError(`${dir}: no training images to compute input_scale: auto from`, { code: 'ERR_INPUT_SCALE' });
  const count = images * plane;
  return Array.from(sum, (s, c) => Math.sqrt(Math.max(0, sumSquares[c] / count - (s / count) ** 2)));
}

/**
 * The factors for a fresh run: a configured list (one number: every channel), or for `auto`
 * 1/std from `computeStd()`. A channel with (almost) no variation has no usable std: refused.
 */
export async function resolveInputScale(
  setting: InputScaleSetting,
  channels: number,
  computeStd: () => Promise<number[]>,
): Promise<{ scale: number[] | undefined; std?: number[] }> {
  if (setting === null) return { scale: undefined };
  if (setting === 'auto') {
    const std = await computeStd();
    const flat = std.findIndex((s) => !(s > 1e-3));
    if (flat >= 0)
      throw new InputError(`input_scale: auto: channel ${flat} of the training images does not vary (std ${std[flat]}): give input_scale as numbers instead`, {
        code: 'ERR_INPUT_SCALE',
      });
    return { scale: std.map((s) => 1 / s), std };
  }
  if (setting.length === 1) return { scale: new Array<number>(channels).fill(setting[0]) };
  if (setting.length !== channels) throw new UsageError(`input_scale: ${setting.length} factors for ${channels} input channels; give one, or one per channel`);
  return { scale: setting.slice() };
}

/** Multiply each channel plane (`plane` values) of the first `n` NCHW images in `data` by its factor, in place. */
export function applyInputScale(data: Float32Array, n: number, channels: number, plane: number, scale: readonly number[]): void {
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < channels; c++) {
      const factor = scale[c];
      const at = (i * channels + c) * plane;
      for (let j = at; j < at + plane; j++) data[j] *= factor;
    }
  }
}
