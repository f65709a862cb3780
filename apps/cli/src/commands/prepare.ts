/**
 * `prepare --train <dir> [--val <dir> [--val-list <file>] | --val-split f] --out <data-dir>`: the
 * seed's generate_data.sh in one command (an in-process pipeline of the same stages).
 */
import type { Command } from 'commander';
import { formatPrepareSummary, prepareDataDir, type ResizeMode } from '@alexnet-stream/stream-io';
import { action, parseInteger, parseNumber } from '../cli-support';
import { Progress } from '../progress';

interface PrepareCliOptions {
  train: string;
  val?: string;
  valList?: string;
  valSplit?: number;
  out: string;
  batchSize: number;
  size: number;
  resize: ResizeMode;
  seed: number;
  concurrency?: number;
  limit?: number;
  batchesPerShard: number;
  force?: boolean;
  fsync: boolean;
  strict?: boolean;
}

export function register(program: Command): void {
  program
    .command('prepare')
    .summary('turn an image folder into a training data dir: shuffled train shards, val shards, mean.npy, classes.txt')
    .description(
      'Scan --train (one folder per class), shuffle it (--seed), decode every image to --size x --size,\n' +
        'and write train shards, val shards, the mean image of the training images (mean.npy), classes.txt\n' +
        "and prepare.json into --out: the seed's generate_data.sh in one command. Validation images come\n" +
        'from --val (class folders, or a flat folder with a Caffe list --val-list) or from a seeded\n' +
        '--val-split fraction of the training images. Unreadable images are skipped with a warning.\n' +
        'Work happens in <out>.partial/ and is renamed to <out> when complete: rerun after an interruption\n' +
        'and it starts over cleanly; rerun on a complete <out> and it says so (--force rebuilds).',
    )
    .requiredOption('--train <dir>', 'training images, one sub-folder per class (sorted names are labels)')
    .option('--val <dir>', 'validation images: class folders, or the root of the paths in --val-list')
    .option('--val-list <file>', 'Caffe-style list "relative/path label" of the validation images (paths relative to --val)')
    .option('--val-split <fraction>', 'hold out this fraction of the training images as the val set (seeded)', parseNumber('--val-split'))
    .requiredOption('--out <data-dir>', 'the data dir to create')
    .option('--batch-size <n>', 'images per batch', parseInteger('--batch-size'), 256)
    .option('--size <n>', 'decoded image height and width', parseInteger('--size'), 256)
    .option('--resize <mode>', 'squash (the seed) or center-crop', 'squash')
    .option('--seed <n>', 'seed of the train shuffle and the val split', parseInteger('--seed'), 0)
    .option('--concurrency <n>', 'images decoded at once (default: 2x the CPU cores)', parseInteger('--concurrency'))
    .option('--limit <n>', 'use at most n train images (and n val images), for a trial run', parseInteger('--limit'))
    .option('--batches-per-shard <n>', 'batches per shard file', parseInteger('--batches-per-shard'), 1)
    .option('--force', 'rebuild even if --out is already complete')
    .option('--no-fsync', 'do not fsync files before renaming them')
    .option('--strict', 'exit with status 1 if any image was skipped')
    .action(
      action('prepare', async (opts: PrepareCliOptions) => {
        let progress: Progress | undefined;
        let phase = '';
        const result = await prepareDataDir({
          ...opts,
          onProgress: (p, _done, total) => {
            if (p !== phase) {
              progress?.stop();
              phase = p;
              progress = new Progress({ label: `prepare ${p}`, unit: 'images', total });
            }
            progress!.tick();
          },
          onSkip: (_key, reason, file) => process.stderr.write(`alexnet-stream prepare: warning: skipped ${file}: ${reason}\n`),
          onNotice: (message) => process.stderr.write(`alexnet-stream prepare: ${message}\n`),
        }).finally(() => progress?.stop());
        process.stderr.write(`alexnet-stream prepare: ${formatPrepareSummary(result)}\n`);
        const skipped = result.manifest.train.skipped + (result.manifest.val?.skipped ?? 0);
        return opts.strict && !result.alreadyComplete && skipped > 0 ? 1 : 0;
      }),
    );
}
