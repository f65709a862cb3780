/**
 * Prediction with an exported model: top-k classes per image file, one line (or JSON line) per
 * image, in argument order. The CLI's `predict` and bench/inference.mjs call it.
 *
 * Preprocessing is the pipeline's own: the caller's `decoder` reads and decodes each file as the
 * `decode` stage does (squash to the model's image size, 256 for the seed), then the center crop
 * (offset 14 for 227) minus the mean image: `mean`, else the per-channel means in the model's
 * metadata. Models exported with their preprocessing get the decoded uint8 pixels (NHWC) and do
 * the rest themselves. (Decoding is the caller's: this library loads no image codec.)
 *
 * Throughput: `InferenceSession.run` blocks the JS thread, but decoders work off it (libuv's
 * thread pool, worker threads), so the decodes for the next batches are started *before* each
 * run and proceed while it computes (up to 2 x `batchSize` images in flight: bounded memory).
 *
 * Arguments that are not files are refused up front (nothing written). A file that does not
 * decode is skipped (`onSkip` says why) and the others are still predicted: every line written
 * is a complete result, and `skipped` says how many arguments gave none. An image the model
 * answers with NaN or infinite probabilities (weights that overflow on it) is refused the same
 * way (`onUnanswered`, `unanswered`), never printed as "NaN%".
 */
import { stat } from 'node:fs/promises';
import { check, checkOptional, InputError, type MeanImage, UsageError } from '@alexnet-stream/core';
import { InferenceModel, topK } from './inference';

/** How image files become pixels: the caller's decoder (the CLI's is stream-io's). */
export interface ImageDecoder {
  /** `path` as uint8 RGB, CHW, squashed to `size` x `size`; rejects when the file does not decode. */
  decode(path: string, size: number): Promise<Uint8Array>;
  /** Why a file did not decode, in a few words (for `onSkip`). */
  describe(err: unknown): string;
}

export interface PredictOptions {
  /** The model file (`alexnet-stream export`'s .onnx). */
  model: string;
  decoder: ImageDecoder;
  /** Class names in label order (default: the model's, else "class N"). */
  classNames?: string[];
  /** Classes per image (default 5; at most the model's class count). */
  topk?: number;
  /** JSON lines `{"path", "top": [{"index", "label", "prob"}]}` instead of text lines. */
  json?: boolean;
  /** Images per inference run (default 32). */
  batchSize?: number;
  /** The training data's mean image, 3 x S x S with S >= the model's input (default: the model's per-channel means). */
  mean?: MeanImage;
  /** onnxruntime intra-op threads (default: the cores). */
  threads?: number;
  /** Where onnxruntime runs, in preference order (default cpu). */
  devices?: string[];
  /** onnxruntime thread spinning (see InferenceOptions.allowSpinning; default off). */
  allowSpinning?: boolean;
  /** Where the result lines go (default: stdout). */
  write?(text: string): void;
  /** Called for each file that does not decode, in argument order. */
  onSkip?(path: string, why: string): void;
  /** Called for each image the model answers with a NaN or infinite probability, in argument order. */
  onUnanswered?(path: string, why: string): void;
}

export interface PredictSummary {
  predicted: number;
  /** Files that were not decodable images. */
  skipped: number;
  /** Images the model answered with NaN or infinite probabilities (refused, not printed). */
  unanswered: number;
  /** Seconds from the first decode to the last line written (model loading excluded). */
  seconds: number;
  /** CPU seconds of this process (all threads) over the same span. */
  cpuSeconds: number;
}

/** The squashed image side the shards and the mean image use (DESIGN §1). */
const DEFAULT_IMAGE_SIZE = 256;

type Decoded = { ok: true; chw: Uint8Array } | { ok: false; why: string };

/** Pixels CHW → HWC into `out` at `offset` (for models with the preprocessing inside). */
function chwToHwc(chw: Uint8Array, size: number, out: Uint8Array, offset: number): void {
  const plane = size * size;
  for (let i = 0, j = offset; i < plane; i++, j += 3) {
    out[j] = chw[i];
    out[j + 1] = chw[plane + i];
    out[j + 2] = chw[2 * plane + i];
  }
}

/**
 * The center `crop` x `crop` of a CHW image of `size` x `size`, minus the same crop of the mean
 * image, into `out`: what augment's center plan gives (the same float32 values: uint8 − float32).
 */
export function centerCropMinusMean(chw: Uint8Array, mean: MeanImage, crop: number, out: Float32Array): void {
  const { channels, height: size } = mean;
  const offset = (size - crop) >> 1;
  let o = 0;
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < crop; y++) {
      const row = c * size * size + (offset + y) * size + offset;
      for (let x = 0; x < crop; x++) out[o + x] = chw[row + x] - mean.data[row + x];
      o += crop;
    }
  }
}

/** A mean image of `size` x `size` from per-channel means (what an exported model's metadata keeps). */
export function meanFromChannels(channels: number[], size: number): MeanImage {
  const plane = size * size;
  const data = new Float32Array(channels.length * plane);
  channels.forEach((m, c) => data.fill(m, c * plane, (c + 1) * plane));
  return { channels: channels.length, height: size, width: size, data };
}

/** Refuse arguments that are not files before any work, named in argument order. */
async function checkFiles(images: string[]): Promise<void> {
  const problems = await Promise.all(
    images.map(async (path) => {
      const s = await stat(path).catch(() => undefined);
      if (!s) return `${path} (no such file)`;
      return s.isFile() ? undefined : `${path} (not a file)`;
    }),
  );
  const notFiles = problems.filter((p): p is string => p !== undefined);
  if (notFiles.length) throw new InputError(`not image files: ${notFiles.join(', ')}`, { code: 'ERR_NOT_IMAGE_FILES' });
}

/** What the model's input takes: the decoded side, and the mean (data models) or none (image models). */
function inputPlan(model: InferenceModel, options: PredictOptions): { imageSize: number; mean?: MeanImage } {
  const { spec, input } = model.info;
  if (input === 'image') {
    if (options.mean) {
      throw new UsageError((name) => `${name('mean')} does not apply: ${options.model} was exported --with-preprocessing and subtracts its own mean image`);
    }
    return { imageSize: model.info.imageSize ?? DEFAULT_IMAGE_SIZE };
  }
  if (options.mean) {
    const m = options.mean;
    check.that(
      'mean',
      m.channels === 3 && m.height === m.width && m.height >= spec.inputSize,
      `a mean image of 3xSxS with S >= ${spec.inputSize}`,
      `${m.channels}x${m.height}x${m.width}`,
    );
    return { imageSize: m.height, mean: m };
  }
  if (model.info.meanChannels) {
    const imageSize = model.info.imageSize ?? DEFAULT_IMAGE_SIZE;
    return { imageSize, mean: meanFromChannels(model.info.meanChannels, imageSize) };
  }
  throw new UsageError((name) => `${options.model} has no mean in its metadata: give ${name('mean')} <mean.npy> (the mean image of the training data)`);
}

/** Allocate the batch buffers; a size JS cannot allocate is a UsageError that says to lower batchSize. */
function allocate<T>(make: () => T, what: string): T {
  try {
    return make();
  } catch (err) {
    if (err instanceof RangeError)
      throw new UsageError((name) => `cannot allocate the buffers for ${what} (${err.message}): lower ${name('batchSize')}`, { cause: err });
    throw err;
  }
}

export async function runPredict(images: string[], options: PredictOptions): Promise<PredictSummary> {
  const topk = checkOptional.integer('topk', options.topk, { min: 1 }) ?? 5;
  const batchSize = checkOptional.integer('batchSize', options.batchSize, { min: 1, max: 4096 }) ?? 32;
  const write = options.write ?? ((t: string) => process.stdout.write(t));
  await checkFiles(images);

  const model = await InferenceModel.load(options.model, {
    intraOpNumThreads: options.threads,
    allowSpinning: options.allowSpinning ?? false,
    devices: options.devices,
  });
  let predicted = 0;
  let skipped = 0;
  let unanswered = 0;
  const decodes: Promise<Decoded>[] = [];
  // Timed from the first decode to the last line written: model loading excluded.
  let startNs = process.hrtime.bigint();
  let startCpu = process.cpuUsage();
  let endNs = startNs;
  let cpu = { user: 0, system: 0 };
  try {
    const { spec, input } = model.info;
    const classNames = options.classNames ?? model.info.classNames;
    if (options.classNames) {
      check.that(
        'classNames',
        options.classNames.length === spec.numClasses,
        `a list of the model's ${spec.numClasses} class names`,
        `${options.classNames.length} names`,
      );
    }
    const { imageSize, mean } = inputPlan(model, options);
    const k = Math.min(topk, spec.numClasses);
    const c = spec.inputChannels;
    const crop = spec.inputSize;
    const imageLength = c * imageSize * imageSize;
    const cropLength = c * crop * crop;
    // Buffers reused by every batch.
    const pixels =
      input === 'image' ? allocate(() => new Uint8Array(batchSize * imageLength), `batchSize ${batchSize} of ${imageSize}x${imageSize} images`) : undefined;
    const data = input === 'data' ? allocate(() => new Float32Array(batchSize * cropLength), `batchSize ${batchSize} of ${crop}x${crop} crops`) : undefined;

    let started = 0;
    const startDecodes = (upTo: number): void => {
      for (; started < Math.min(upTo, images.length); started++) {
        decodes[started] = options.decoder.decode(images[started], imageSize).then(
          (chw): Decoded => ({ ok: true, chw }),
          (err): Decoded => ({ ok: false, why: options.decoder.describe(err) }),
        );
      }
    };

    startNs = process.hrtime.bigint();
    startCpu = process.cpuUsage();
    startDecodes(2 * batchSize);
    for (let first = 0; first < images.length; first += batchSize) {
      const last = Math.min(first + batchSize, images.length);
      const paths: string[] = [];
      for (let i = first; i < last; i++) {
        const decoded = await decodes[i];
        delete decodes[i];
        if (!decoded.ok) {
          skipped++;
          options.onSkip?.(images[i], decoded.why);
          continue;
        }
        const n = paths.length;
        if (pixels) chwToHwc(decoded.chw, imageSize, pixels, n * imageLength);
        // Crop and subtract straight from the decoded image into its slot of the batch.
        else centerCropMinusMean(decoded.chw, mean!, crop, data!.subarray(n * cropLength, (n + 1) * cropLength));
        paths.push(images[i]);
      }
      // Keep the decoders busy while the session runs (it blocks this thread).
      startDecodes(last + 2 * batchSize);
      if (paths.length === 0) continue;
      const { prob } = await model.run(pixels ?? data!, paths.length);
      const answered = answeredRows(paths, prob, spec.numClasses, options.onUnanswered);
      write(resultLines(answered, prob, spec.numClasses, k, classNames, options.json));
      predicted += answered.length;
      unanswered += paths.length - answered.length;
    }
    endNs = process.hrtime.bigint();
    cpu = process.cpuUsage(startCpu);
  } finally {
    await Promise.allSettled(decodes.filter(Boolean));
    await model.close();
  }
  return { predicted, skipped, unanswered, seconds: Number(endNs - startNs) / 1e9, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

/** The batch's rows with finite probabilities: a model whose weights overflow on an image answers NaN. */
function answeredRows(paths: string[], prob: Float32Array, numClasses: number, onUnanswered: PredictOptions['onUnanswered']): { path: string; i: number }[] {
  const rows: { path: string; i: number }[] = [];
  paths.forEach((path, i) => {
    const bad = prob.subarray(i * numClasses, (i + 1) * numClasses).find((v) => !Number.isFinite(v));
    if (bad === undefined) rows.push({ path, i });
    else onUnanswered?.(path, `the model's output is ${bad} for this image (its weights overflow)`);
  });
  return rows;
}

/** One line per image (row `i` of `prob`): `path: label 93.12%, …`, or a JSON line. */
function resultLines(
  rows: { path: string; i: number }[],
  prob: Float32Array,
  numClasses: number,
  k: number,
  classNames: string[] | undefined,
  json = false,
): string {
  let text = '';
  rows.forEach(({ path, i }) => {
    const top = topK(prob, i, numClasses, k);
    if (json) {
      const entries = top.map((j) => ({ index: j, ...(classNames ? { label: classNames[j] } : {}), prob: prob[i * numClasses + j] }));
      text += `${JSON.stringify({ path, top: entries })}\n`;
    } else {
      text += `${path}: ${top.map((j) => `${classNames ? classNames[j] : `class ${j}`} ${(100 * prob[i * numClasses + j]).toFixed(2)}%`).join(', ')}\n`;
    }
  });
  return text;
}
