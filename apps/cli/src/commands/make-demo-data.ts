/**
 * `make-demo-data --out <dir>`: generate the small deterministic demo data set (no downloads).
 */
import type { Command } from 'commander';
import { generateDemoDataset } from '@alexnet-stream/stream-io';
import { action, parseInteger } from '../cli-support';

interface MakeDemoOptions {
  out: string;
  seed: number;
  trainPerClass: number;
  valPerClass: number;
}

export function register(program: Command): void {
  program
    .command('make-demo-data')
    .summary('generate a small deterministic JPEG data set (6 classes of shapes and textures)')
    .description(
      'Generate a small, learnable JPEG data set: train/<class>/*.jpg, val/*.jpg, train.txt, val.txt\n' +
        '(Caffe-style "path label") and classes.txt. Six classes (checkerboard, disk, horizontal-stripes,\n' +
        'square, triangle, vertical-stripes) with random sizes (160-520 px), positions, colours, noise\n' +
        'and JPEG quality. The same --seed gives byte-identical files.',
    )
    .requiredOption('--out <dir>', 'output folder (created if needed)')
    .option('--seed <n>', 'random seed', parseInteger('--seed'), 1)
    .option('--train-per-class <n>', 'training images per class', parseInteger('--train-per-class'), 60)
    .option('--val-per-class <n>', 'validation images per class', parseInteger('--val-per-class'), 10)
    .action(
      action('make-demo-data', async (opts: MakeDemoOptions) => {
        const summary = await generateDemoDataset(opts.out, { seed: opts.seed, trainPerClass: opts.trainPerClass, valPerClass: opts.valPerClass });
        process.stderr.write(
          `alexnet-stream make-demo-data: ${summary.train} train + ${summary.val} val images, ${summary.classNames.length} classes in ${opts.out}\n`,
        );
      }),
    );
}
