/**
 * `predict --model model.onnx <image...>`: top-k classes per image with an exported model.
 * The work is onnx-export's `runPredict` (preprocessing, batching, top-k); this command reads
 * the class names and mean files it names, decodes images as the `decode` stage does
 * (stream-io), prints the lines on stdout and a skipped file's reason on stderr.
 *
 * A file that does not decode is skipped with a message on stderr naming it, the others are
 * still predicted, and the exit code is 2: every stdout line is a complete result, and the exit
 * code says not all arguments gave one.
 */
import type { Command } from 'commander';
import { runPredict, type ImageDecoder } from '@alexnet-stream/onnx-export';
import { decodeImageFile, describeDecodeError, readClassNames, readMeanNpy } from '@alexnet-stream/stream-io';
import { action, parseDeviceList, parseInteger } from '../cli-support';

interface PredictCliOptions {
  model: string;
  labels?: string;
  topk: number;
  json?: boolean;
  batchSize: number;
  mean?: string;
  threads?: number;
  devices?: string[];
}

/** Image files as the `decode` stage reads and decodes them (a regular file of bounded size; squashed). */
export const pipelineDecoder: ImageDecoder = {
  decode: async (path, size) => (await decodeImageFile(path, { size, resize: 'squash' })).data,
  describe: (err) => describeDecodeError(err),
};

export function register(program: Command): void {
  program
    .command('predict')
    .summary('top-k classes of images with an exported ONNX model')
    .description(
      'Decode each image as the pipeline does (squash to 256x256), take the center crop, subtract the\n' +
        "mean (--mean, else the per-channel means in the model's metadata), run the model in batches\n" +
        'and print the top-k classes with probabilities: one line per image, or JSON lines with --json.\n' +
        'Files that do not decode are skipped with a message on stderr, and the exit code is then 2.\n\n' +
        'Example: alexnet-stream predict --model alexnet.onnx --topk 5 photos/*.jpg',
    )
    .argument('<image...>', 'image files (JPEG, PNG, WebP, TIFF, GIF)')
    .requiredOption('--model <model.onnx>', 'model written by `alexnet-stream export`')
    .option('--labels <classes.txt>', "class names, one per line (default: the model's)")
    .option('--topk <k>', 'classes per image', parseInteger('--topk'), 5)
    .option('--json', 'JSON lines: {"path", "top": [{"index", "label", "prob"}]}')
    .option('--batch-size <n>', 'images per inference batch', parseInteger('--batch-size'), 32)
    .option('--mean <mean.npy>', 'mean image (float32 3xSxS) of the training data')
    .option('--threads <n>', 'onnxruntime intra-op threads (default: the number of cores)', parseInteger('--threads'))
    .option('--devices <list>', 'where onnxruntime runs, in preference order: cpu (default), webgpu, cuda:0; docs/gpus.md', parseDeviceList)
    .action(
      action(
        'predict',
        async (images: string[], opts: PredictCliOptions) => {
          const { skipped, unanswered } = await runPredict(images, {
            model: opts.model,
            decoder: pipelineDecoder,
            classNames: opts.labels ? await readClassNames(opts.labels) : undefined,
            topk: opts.topk,
            json: opts.json,
            batchSize: opts.batchSize,
            mean: opts.mean ? await readMeanNpy(opts.mean) : undefined,
            threads: opts.threads,
            devices: opts.devices,
            onSkip: (path, why) => process.stderr.write(`alexnet-stream predict: skipped ${path}: ${why}\n`),
            onUnanswered: (path, why) => process.stderr.write(`alexnet-stream predict: skipped ${path}: ${why}\n`),
          });
          if (skipped > 0) process.stderr.write(`alexnet-stream predict: ${skipped} of ${images.length} files were not decodable images (see above)\n`);
          if (unanswered > 0)
            process.stderr.write(`alexnet-stream predict: the model gave no usable answer for ${unanswered} of ${images.length} images (see above)\n`);
          if (skipped + unanswered > 0) return 2;
        },
        { classNames: '--labels', intraOpNumThreads: '--threads' },
      ),
    );
}
