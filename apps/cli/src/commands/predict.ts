/**
 * `predict --model model.onnx <image...>`: top-k classes per image with an exported model.
 *
 * Preprocessing is the pipeline's own: `decodeImage` (squash to 256x256, as the shards), then
 * `cropMirrorSubtract` with a center plan (offset 14 for 227) and the mean image from `--mean`
 * or the model's per-channel means. Models exported `--with-preprocessing` get the decoded
 * uint8 pixels (NHWC) and do the rest themselves.
 *
 * Throughput: `InferenceSession.run` blocks the JS thread, but sharp decodes on libuv's thread
 * pool, so decodes for the next batches are started *before* each run and proceed while it
 * computes (up to `2 x --batch-size` images in flight: bounded memory).
 *
 * Arguments that are not files are refused up front (nothing printed). A file that does not
 * decode is skipped with a message on stderr naming it, the others are still predicted, and
 * the exit code is 2: every stdout line is a complete result, and the exit code says not all
 * arguments gave one.
 */
import type { Command } from 'commander';
import { stat } from 'node:fs/promises';
import { InputError, UsageError } from '@alexnet-stream/core';
import { InferenceModel, topK } from '@alexnet-stream/onnx-export';
import {
  BatchRecord,
  centerOffset,
  cropMirrorSubtract,
  CropPlan,
  decodeImage,
  describeDecodeError,
  MeanImage,
  readImageBytes,
} from '@alexnet-stream/stream-io';
import { action, parseDeviceList, parseInteger } from '../cli-support';
import { allocateBatch, loadClassNames, loadMeanImage, meanFromChannels } from '../model-support';

interface PredictOptions {
  model: string;
  labels?: string;
  topk: number;
  json?: boolean;
  batchSize: number;
  mean?: string;
  threads?: number;
  devices?: string[];
  /** onnxruntime thread spinning (see InferenceOptions.allowSpinning); not a CLI flag. */
  allowSpinning?: boolean;
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

export interface PredictSummary {
  predicted: number;
  skipped: number;
  /** Seconds from the first decode to the last line written (model loading excluded). */
  seconds: number;
  /** CPU seconds of this process (all threads) over the same span. */
  cpuSeconds: number;
}

/** The work of `predict`, with the output sink injectable (bench/inference.mjs calls it). */
export async function runPredict(images: string[], opts: PredictOptions, write: (text: string) => void = (t) => process.stdout.write(t)): Promise<PredictSummary> {
  // Refuse arguments that are not files before any work, so nothing half-done is printed.
  // Named in argument order, whatever order the stat calls finish in.
  const problems = await Promise.all(images.map(async (path) => {
    const s = await stat(path).catch(() => undefined);
    if (!s) return `${path} (no such file)`;
    return s.isFile() ? undefined : `${path} (not a file)`;
  }));
  const notFiles = problems.filter((p): p is string => p !== undefined);
  if (notFiles.length) throw new InputError(`not image files: ${notFiles.join(', ')}`);

  const model = await InferenceModel.load(opts.model, { intraOpNumThreads: opts.threads, allowSpinning: opts.allowSpinning ?? false, devices: opts.devices });
  const { spec, input } = model.info;
  const classNames = opts.labels ? await loadClassNames(opts.labels, spec.numClasses, '--labels') : model.info.classNames;
  let mean: MeanImage | undefined;
  let imageSize: number;
  if (input === 'image') {
    if (opts.mean) throw new UsageError(`--mean does not apply: ${opts.model} was exported --with-preprocessing and subtracts its own mean image`);
    imageSize = model.info.imageSize ?? DEFAULT_IMAGE_SIZE;
  } else if (opts.mean) {
    mean = await loadMeanImage(opts.mean, spec.inputSize);
    imageSize = mean.height;
  } else if (model.info.meanChannels) {
    imageSize = model.info.imageSize ?? DEFAULT_IMAGE_SIZE;
    mean = meanFromChannels(model.info.meanChannels, imageSize);
  } else {
    throw new UsageError(`${opts.model} has no mean in its metadata: give --mean <mean.npy> (the mean image of the training data)`);
  }
  const k = Math.min(opts.topk, spec.numClasses);
  const c = spec.inputChannels;
  const crop = spec.inputSize;
  const batchSize = opts.batchSize;
  const imageLength = c * imageSize * imageSize;
  // Buffers reused by every batch.
  const cropLength = c * crop * crop;
  const [pixels, data] = allocateBatch(() => [
    input === 'image' ? new Uint8Array(batchSize * imageLength) : undefined,
    input === 'data' ? new Float32Array(batchSize * cropLength) : undefined,
  ], `--batch-size ${batchSize} of ${input === 'image' ? `${imageSize}x${imageSize}` : `${crop}x${crop}`} images`);
  const offset = centerOffset(imageSize, crop);
  const plan: CropPlan = { crop, offsetY: Int32Array.of(offset), offsetX: Int32Array.of(offset), mirror: new Uint8Array(1) };
  const one: BatchRecord = { type: 'batch', dtype: 'uint8', shape: [1, c, imageSize, imageSize], layout: 'NCHW', data: new Uint8Array(0), labels: new Int32Array(1), keys: [''] };

  const decodes: Promise<Decoded>[] = [];
  let started = 0;
  const startDecodes = (upTo: number): void => {
    for (; started < Math.min(upTo, images.length); started++) {
      const path = images[started];
      // The same reading and decoding as the `decode` stage: only a regular file of bounded size;
      // a truncated or corrupt image is refused with the reason, never predicted half grey.
      decodes[started] = readImageBytes(path, {})
        .then((buf) => {
          if (buf.length === 0) throw new Error('empty file (0 bytes)');
          return decodeImage(buf, { size: imageSize, resize: 'squash' });
        })
        .then((img): Decoded => ({ ok: true, chw: img.data }), (err): Decoded => ({ ok: false, why: describeDecodeError(err) }));
    }
  };

  let predicted = 0;
  let skipped = 0;
  const startNs = process.hrtime.bigint();
  const startCpu = process.cpuUsage();
  let endNs = startNs;
  let cpu = { user: 0, system: 0 };
  try {
    startDecodes(2 * batchSize);
    for (let first = 0; first < images.length; first += batchSize) {
      const last = Math.min(first + batchSize, images.length);
      const paths: string[] = [];
      let n = 0;
      for (let i = first; i < last; i++) {
        const decoded = await decodes[i];
        delete decodes[i];
        if (!decoded.ok) {
          skipped++;
          process.stderr.write(`alexnet-stream predict: skipped ${images[i]}: ${decoded.why}\n`);
          continue;
        }
        if (input === 'image') {
          chwToHwc(decoded.chw, imageSize, pixels!, n * imageLength);
        } else {
          // Crop and subtract straight from the decoded image into its slot of the batch.
          one.data = decoded.chw;
          cropMirrorSubtract(one, mean!, plan, data!.subarray(n * cropLength, (n + 1) * cropLength));
        }
        paths.push(images[i]);
        n++;
      }
      // Keep the decoder busy while the session runs (it blocks this thread).
      startDecodes(last + 2 * batchSize);
      if (n === 0) continue;
      const { prob } = await model.run(input === 'image' ? pixels! : data!, n);
      let text = '';
      for (let i = 0; i < n; i++) {
        const top = topK(prob, i, spec.numClasses, k);
        if (opts.json) {
          const entries = top.map((j) => ({ index: j, ...(classNames ? { label: classNames[j] } : {}), prob: prob[i * spec.numClasses + j] }));
          text += `${JSON.stringify({ path: paths[i], top: entries })}\n`;
        } else {
          text += `${paths[i]}: ${top.map((j) => `${classNames ? classNames[j] : `class ${j}`} ${(100 * prob[i * spec.numClasses + j]).toFixed(2)}%`).join(', ')}\n`;
        }
      }
      write(text);
      predicted += n;
    }
    endNs = process.hrtime.bigint();
    cpu = process.cpuUsage(startCpu);
  } finally {
    await Promise.allSettled(decodes.filter(Boolean));
    await model.close();
  }
  return { predicted, skipped, seconds: Number(endNs - startNs) / 1e9, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

export function register(program: Command): void {
  program
    .command('predict')
    .summary('top-k classes of images with an exported ONNX model')
    .description(
      'Decode each image as the pipeline does (squash to 256x256), take the center crop, subtract the\n' +
        'mean (--mean, else the per-channel means in the model\'s metadata), run the model in batches\n' +
        'and print the top-k classes with probabilities: one line per image, or JSON lines with --json.\n' +
        'Files that do not decode are skipped with a message on stderr, and the exit code is then 2.\n\n' +
        'Example: alexnet-stream predict --model alexnet.onnx --topk 5 photos/*.jpg',
    )
    .argument('<image...>', 'image files (JPEG, PNG, WebP, TIFF, GIF)')
    .requiredOption('--model <model.onnx>', 'model written by `alexnet-stream export`')
    .option('--labels <classes.txt>', 'class names, one per line (default: the model\'s)')
    .option('--topk <k>', 'classes per image', parseInteger('--topk', 1), 5)
    .option('--json', 'JSON lines: {"path", "top": [{"index", "label", "prob"}]}')
    .option('--batch-size <n>', 'images per inference batch', parseInteger('--batch-size', 1, 4096), 32)
    .option('--mean <mean.npy>', 'mean image (float32 3xSxS) of the training data')
    .option('--threads <n>', 'onnxruntime intra-op threads (default: the number of cores)', parseInteger('--threads', 1, 1024))
    .option('--devices <list>', 'where onnxruntime runs, in preference order: cpu (default), webgpu, cuda:0; README "GPUs"', parseDeviceList)
    .action(
      action('predict', async (images: string[], opts: PredictOptions) => {
        const { skipped } = await runPredict(images, opts);
        if (skipped > 0) {
          process.stderr.write(`alexnet-stream predict: ${skipped} of ${images.length} files were not decodable images (see above)\n`);
          return 2;
        }
      }),
    );
}
