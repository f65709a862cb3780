/**
 * `mean --out mean.npy [<shard-dir>]`: the mean image of a stream (passed through unchanged) or
 * of a shard directory's set, written as float32 CxHxW `.npy` when the input ends.
 */
import type { Command } from 'commander';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { resolveOutputTarget } from '@alexnet-stream/core';
import { MeanStage, ShardReader, writeMeanNpy } from '@alexnet-stream/stream-io';
import { action, stdinRecords, stdoutRecords, stdoutRequiredFor } from '../cli-support';
import { Progress } from '../progress';

interface MeanCliOptions {
  out: string;
  prefix: string;
  verify: boolean;
}

export function register(program: Command): void {
  program
    .command('mean')
    .summary('compute the mean image of an image/batch stream (passed through) or of a shard directory')
    .description(
      'Without <shard-dir>: read image records (or uint8 batch records) on stdin, write them unchanged on\n' +
        'stdout, and when the input ends write their per-pixel mean (accumulated in float64) to --out as a\n' +
        "float32 CxHxW .npy (the seed's img_mean.npy layout). With <shard-dir>: the mean of the set --prefix,\n" +
        'nothing on stdout. The file is written to a temp name and renamed, so it is never half-written,\n' +
        'and only once the input has ended with its trailer: a stream cut short upstream (a killed stage)\n' +
        'is an error (exit 2) and writes no mean; so is stdout closing before the stream ended.',
    )
    .argument('[shard-dir]', 'a shard directory written by `batch --out-dir` or `prepare`')
    .requiredOption('--out <file>', 'where to write the mean image (.npy)')
    .option('--prefix <name>', 'with <shard-dir>: which shard set', 'train')
    .option('--no-verify', 'with <shard-dir>: skip the sha256 check of each shard')
    .action(
      action('mean', async (dir: string | undefined, opts: MeanCliOptions) => {
        resolveOutputTarget(opts.out); // a folder, a block device or stdout itself: refused before any work
        const stage = new MeanStage();
        const progress = new Progress({ label: 'mean', unit: 'images' });
        let last = 0;
        stage.on('data', () => {
          progress.tick(stage.accumulator.count - last);
          last = stage.accumulator.count;
        });
        try {
          if (dir) {
            const discard = new Writable({ objectMode: true, write: (_r, _e, cb) => cb() });
            await pipeline(new ShardReader({ dir, prefix: opts.prefix, verify: opts.verify }), stage, discard);
          } else {
            stdoutRequiredFor(`${opts.out} was not written (the mean of part of a stream is not the mean)`);
            const { encoder, done } = stdoutRecords();
            // together: when the pipeline fails, `done` rejects too and must not go unhandled
            await Promise.all([pipeline(stdinRecords(['image', 'batch'], undefined, 'mean'), stage, encoder), done]);
          }
        } finally {
          progress.stop();
        }
        const mean = stage.accumulator.mean();
        await writeMeanNpy(opts.out, mean);
        process.stderr.write(
          `alexnet-stream mean: ${stage.accumulator.count} images, ${mean.channels}x${mean.height}x${mean.width} mean written to ${opts.out}\n`,
        );
      }),
    );
}
