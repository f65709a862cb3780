/**
 * `batch --size N [--out-dir <dir>]`: image records (stdin) → batch records (stdout), or → a
 * shard directory (shard files + index.json, atomic).
 */
import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { type BatchRecord, BatchStage, ShardWriter } from '@alexnet-stream/stream-io';
import { action, parseInteger, stdinRecords, stdoutRecords } from '../cli-support';
import { Progress } from '../progress';

interface BatchCliOptions {
  size: number;
  outDir?: string;
  prefix: string;
  dropLast?: boolean;
  batchesPerShard: number;
  fsync: boolean;
}

export function register(program: Command): void {
  program
    .command('batch')
    .summary('pack image records (stdin) into uint8 NCHW batches: on stdout, or as a shard directory')
    .description(
      'Read image records of one size on stdin and pack them, in order, into batches of --size images\n' +
        '(uint8, NCHW). The last, smaller batch is kept and marked partial, or dropped with --drop-last.\n' +
        'Without --out-dir the batches go to stdout. With --out-dir they are written as shard files\n' +
        '<prefix>-00000.msgpack … and an entry for <prefix> in <dir>/index.json (counts, shapes, class\n' +
        'names, sha256 per shard). Each shard is written to a temp name and renamed; the index entry is\n' +
        'added last, so an interrupted run never leaves a set that a reader takes as complete. Runs with\n' +
        'different --prefix (train, val) share one directory.',
    )
    .requiredOption('--size <n>', 'images per batch', parseInteger('--size'))
    .option('--out-dir <dir>', 'write a shard directory instead of batch records on stdout')
    .option('--prefix <name>', 'shard file prefix and index key (with --out-dir)', 'train')
    .option('--batches-per-shard <n>', 'batches per shard file (with --out-dir; 1 batch of 256 is ~50 MB)', parseInteger('--batches-per-shard'), 1)
    .option('--drop-last', 'drop the last batch if it is smaller than --size')
    .option('--no-fsync', 'do not fsync shards before renaming (faster; safe against a killed process, not a power cut)')
    .action(
      action(
        'batch',
        async (opts: BatchCliOptions) => {
          const input = stdinRecords(['image'], undefined, 'batch');
          const stage = new BatchStage({ batchSize: opts.size, dropLast: opts.dropLast });
          const progress = new Progress({ label: 'batch', unit: 'batches' });
          stage.on('data', (r: { type: string }) => r.type === 'batch' && progress.tick());
          try {
            if (opts.outDir) {
              const writer = new ShardWriter({
                dir: opts.outDir,
                prefix: opts.prefix,
                batchSize: opts.size,
                batchesPerShard: opts.batchesPerShard,
                fsync: opts.fsync,
              });
              writer.on('written', (batch: BatchRecord) => stage.assembler.recycle(batch.data));
              await pipeline(input, stage, writer);
              const e = writer.entry!;
              process.stderr.write(
                `alexnet-stream batch: ${e.images} images in ${e.batches} batches (${e.partialBatches} partial) in ${e.shards.length} shards under ${opts.outDir} (prefix ${opts.prefix})${e.skipped ? `; ${e.skipped} source items are not in it (undecodable, or dropped)` : ''}\n`,
              );
            } else {
              const { encoder, done } = stdoutRecords();
              // together: when the pipeline fails, `done` rejects too and must not go unhandled
              await Promise.all([pipeline(input, stage, encoder), done]);
            }
          } finally {
            progress.stop();
          }
          if (stage.assembler.dropped) process.stderr.write(`alexnet-stream batch: dropped the last ${stage.assembler.dropped} images (--drop-last)\n`);
        },
        { batchSize: '--size', dir: '--out-dir' },
      ),
    );
}
