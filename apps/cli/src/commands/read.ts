/**
 * `read <dir>`: a shard directory → batch records on stdout (verified, optionally shuffled and
 * split across workers).
 */
import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { ShardReader } from '@alexnet-stream/stream-io';
import { action, parseInteger, parseShard, stdoutRecords } from '../cli-support';

interface ReadCliOptions {
  prefix: string;
  shuffleBatches?: boolean;
  seed: number;
  shard?: { index: number; count: number };
  verify: boolean;
}

export function register(program: Command): void {
  program
    .command('read')
    .summary('read a shard directory as batch records (stdout)')
    .argument('<dir>', 'a shard directory written by `batch --out-dir` or `prepare`')
    .description(
      'Write the batches of one shard set (--prefix) on stdout, after checking each shard file against\n' +
        'the sha256 in index.json. A missing, truncated or corrupt shard stops the run with an error naming\n' +
        'the file (exit 2). Only files listed in index.json are read; temp files of a killed writer never are.',
    )
    .option('--prefix <name>', 'which shard set', 'train')
    .option('--shuffle-batches', 'shuffle the shard order (and the batches inside each shard), seeded')
    .option('--seed <n>', 'shuffle seed', parseInteger('--seed'), 0)
    .option('--shard <i/N>', 'read every N-th shard starting at i (after shuffling): N workers with the same seed read disjoint parts', parseShard('--shard'))
    .option('--no-verify', 'skip the sha256 check (truncation is still detected)')
    .action(
      action('read', async (dir: string, opts: ReadCliOptions) => {
        const reader = new ShardReader({ dir, prefix: opts.prefix, shuffle: opts.shuffleBatches, seed: opts.seed, shard: opts.shard, verify: opts.verify });
        const { encoder, done } = stdoutRecords();
        // together: when the pipeline fails, `done` rejects too and must not go unhandled
        await Promise.all([pipeline(reader, encoder), done]);
        if (reader.selectedShards === 0) {
          process.stderr.write(
            `alexnet-stream read: warning: --shard ${opts.shard!.index}/${opts.shard!.count} selects none of the ${reader.set!.shards.length} shards; wrote a header only\n`,
          );
        }
      }),
    );
}
