/**
 * `scan <dir>` / `scan --list <file> --root <dir>`: a data set → item records on stdout.
 */
import type { Command } from 'commander';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { InputError, UsageError } from '@alexnet-stream/core';
import { listClassFolders, makeHeader, readCaffeList, readClassNames, selectItems, wholeStream } from '@alexnet-stream/stream-io';
import { action, parseInteger, parseShard, stdoutRecords } from '../cli-support';

interface ScanOptions {
  list?: string;
  root?: string;
  classes?: string;
  shuffle?: boolean;
  seed: number;
  shard?: { index: number; count: number };
  limit?: number;
}

export function register(program: Command): void {
  program
    .command('scan')
    .summary('list a data set as item records (stdout)')
    .description(
      'List the images of a data set as item records on stdout.\n' +
        '  scan <dir>                     ImageNet train layout: one folder per class; sorted folder names are labels 0..K-1\n' +
        '  scan --list <file> --root <dir> a Caffe-style list of "relative/path label" lines',
    )
    .argument('[dir]', 'data set folder with one sub-folder per class')
    .option('--list <file>', 'Caffe-style list file ("relative/path label" per line) instead of class folders')
    .option('--root <dir>', "folder the paths in --list are relative to (default: the list file's folder)")
    .option('--classes <file>', 'class names, one per line in label order (with --list; checks labels and names them)')
    .option('--shuffle', 'shuffle the items (seeded: the same --seed gives the same order everywhere)')
    .option('--seed <n>', 'shuffle seed', parseInteger('--seed'), 0)
    .option('--shard <i/N>', 'keep every N-th item starting at i (after shuffling), to split work across N machines', parseShard('--shard'))
    .option('--limit <n>', 'keep at most n items (after sharding)', parseInteger('--limit'))
    .action(
      action('scan', async (dir: string | undefined, opts: ScanOptions) => {
        let list;
        if (opts.list) {
          if (dir) throw new UsageError(`give either a folder (${dir}) or --list, not both; with --list the image folder is --root`);
          const root = opts.root ?? path.dirname(opts.list);
          const classNames = opts.classes ? await readClassNames(opts.classes) : undefined;
          list = await readCaffeList(opts.list, root, classNames);
        } else {
          if (!dir) throw new UsageError('give a data set folder (scan <dir>) or a list file (scan --list <file> --root <dir>)');
          if (opts.root || opts.classes) throw new UsageError('--root and --classes go with --list; a class-folder data set names its own classes');
          list = await listClassFolders(dir, { onWarning: (message) => process.stderr.write(`alexnet-stream scan: warning: ${message}\n`) });
        }
        const source = opts.list ?? dir!;
        if (list.items.length === 0) {
          throw new InputError(
            `${source}: no images found (looked for ${opts.list ? 'lines in the list' : 'files with an image extension in class sub-folders'})`,
          );
        }
        const items = selectItems(list.items, { shuffle: opts.shuffle, seed: opts.seed, shard: opts.shard, limit: opts.limit });
        if (items.length === 0) process.stderr.write(`alexnet-stream scan: warning: the selection (--shard/--limit) is empty; writing a header only\n`);
        const header = makeHeader('item', {
          ...(list.classNames.length ? { classNames: list.classNames } : {}),
          producer: 'alexnet-stream scan',
        });
        const { encoder, done } = stdoutRecords();
        await Promise.all([pipeline(Readable.from(wholeStream(header, items), { objectMode: true, highWaterMark: 16 }), encoder), done]);
        process.stderr.write(
          `alexnet-stream scan: ${items.length} of ${list.items.length} items${list.classNames.length ? `, ${list.classNames.length} classes` : ''}\n`,
        );
      }),
    );
}
