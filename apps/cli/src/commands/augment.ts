/**
 * `augment --mean mean.npy --crop 227 [--mirror] [--center] [--per-batch] [--seed N]`: uint8
 * batches (stdin) → float32 mean-subtracted crops (stdout), as the seed's crop_and_mirror.
 */
import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { AugmentStage, readMeanNpy } from '@alexnet-stream/stream-io';
import { action, parseInteger, stdinRecords, stdoutRecords } from '../cli-support';
import { Progress } from '../progress';

interface AugmentCliOptions {
  mean: string;
  crop: number;
  mirror?: boolean;
  center?: boolean;
  perBatch?: boolean;
  seed: number;
}

export function register(program: Command): void {
  program
    .command('augment')
    .summary('mean-subtract, crop and mirror uint8 batches (stdin) into float32 batches (stdout)')
    .description(
      'For each uint8 NCHW batch on stdin: subtract the mean image (the full CxHxW mean, before cropping),\n' +
        'mirror horizontally (with --mirror, probability 1/2), crop --crop x --crop, and write float32 NCHW\n' +
        'batches on stdout. Crop offsets are drawn per image (default) or once per batch (--per-batch, the\n' +
        "seed's batch_crop_mirror); --center takes the fixed center crop without mirroring (validation:\n" +
        'offset 14 for 256 -> 227). Draws come from a seeded generator: the same --seed gives the same crops.',
    )
    .requiredOption('--mean <file>', "mean image .npy (float32 or float64, C x H x W), e.g. from `mean` or the seed's img_mean.npy")
    .option('--crop <n>', 'crop side in pixels', parseInteger('--crop'), 227)
    .option('--mirror', 'mirror each image (or batch, with --per-batch) with probability 1/2')
    .option('--center', 'center crop, no mirror (validation)')
    .option('--per-batch', 'one crop offset and mirror flag per batch instead of per image')
    .option('--seed <n>', 'seed of the crop/mirror draws', parseInteger('--seed'), 0)
    .action(
      action('augment', async (opts: AugmentCliOptions) => {
        const mean = await readMeanNpy(opts.mean);
        const stage = new AugmentStage({ mean, crop: opts.crop, mirror: opts.mirror, center: opts.center, perBatch: opts.perBatch, seed: opts.seed });
        const input = stdinRecords(['batch'], undefined, 'augment');
        const progress = new Progress({ label: 'augment', unit: 'batches' });
        stage.on('data', (r: { type: string }) => r.type === 'batch' && progress.tick());
        const { encoder, done } = stdoutRecords();
        try {
          // together: when the pipeline fails, `done` rejects too and must not go unhandled
          await Promise.all([pipeline(input, stage, encoder), done]);
        } finally {
          progress.stop();
        }
      }),
    );
}
