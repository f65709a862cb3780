/**
 * What makes a mean image usable, for every reader of one (stream-io's `readMeanNpy`, and
 * model-alexnet's `import --mean` of the seed's `img_mean.npy`): one answer, so that a mean
 * refused by one is refused by the other.
 */

/**
 * What is wrong with a mean image's sides or values, or undefined: every side at least 1, every
 * value finite (a NaN or infinite mean turns every image it is subtracted from into NaN, and a
 * model exported with it carries NaN channel means).
 */
export function meanImageProblem(shape: readonly number[], data: ArrayLike<number>): string | undefined {
  if (shape.some((side) => side < 1)) return `shape (${shape.join(', ')}) has an empty side`;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) return `value ${i} is ${data[i]}: a mean image holds finite numbers only`;
  }
  return undefined;
}
