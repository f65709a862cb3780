/**
 * `inspect [<dir>]`: a summary of a record stream (stdin) or of a shard directory on stdout;
 * optionally a contact sheet of the first images.
 */
import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { resolveOutputTarget, writeFileAtomic } from '@alexnet-stream/core';
import {
  ContactSheetCollector,
  formatShardDirSummary,
  formatSummary,
  inspectorSink,
  inspectShardDir,
  renderContactSheet,
  StreamInspector,
  type StreamRecord,
} from '@alexnet-stream/stream-io';
import { action, parseInteger, stdinRecords } from '../cli-support';
import { Progress } from '../progress';

interface InspectCliOptions {
  prefix?: string;
  json?: boolean;
  contactSheet?: string;
  count: number;
  tileSize: number;
  verify: boolean;
}

export function register(program: Command): void {
  program
    .command('inspect')
    .summary('summarise a record stream (stdin) or a shard directory; optionally draw a contact sheet')
    .argument('[dir]', 'a shard directory (default: read a record stream on stdin)')
    .description(
      'Print a summary on stdout: record counts, shapes, label histogram, per-channel pixel statistics\n' +
        '(mean, std, min, max). For a shard directory, every set (or --prefix) with its index facts, every\n' +
        'shard read and its checksum verified. --json prints the same as JSON. --contact-sheet draws the\n' +
        'first --count images as a labelled grid PNG (class name + key under each).',
    )
    .option('--prefix <name>', 'with <dir>: only this shard set')
    .option('--json', 'print the summary as JSON')
    .option('--contact-sheet <png>', 'write a contact sheet of the first images to this PNG file')
    .option('--count <n>', 'images on the contact sheet', parseInteger('--count'), 64)
    .option('--tile-size <px>', 'contact sheet tile side', parseInteger('--tile-size'), 128)
    .option('--no-verify', 'with <dir>: skip the sha256 check of each shard')
    .action(
      action('inspect', async (dir: string | undefined, opts: InspectCliOptions) => {
        if (opts.contactSheet) resolveOutputTarget(opts.contactSheet); // refused before any work, not after
        const collector = opts.contactSheet ? new ContactSheetCollector(opts.count, { tileSize: opts.tileSize }) : undefined;
        const progress = new Progress({ label: 'inspect', unit: 'records' });
        const onRecord = (record: StreamRecord): void => {
          collector?.add(record);
          if (record.type !== 'header') progress.tick();
        };
        let text: string;
        let json: unknown;
        try {
          if (dir) {
            const result = await inspectShardDir(dir, { prefix: opts.prefix, verify: opts.verify, onRecord });
            text = formatShardDirSummary(result);
            json = result;
          } else {
            const inspector = new StreamInspector('stdin');
            await pipeline(stdinRecords(['item', 'image', 'batch'], undefined, 'inspect'), inspectorSink(inspector, onRecord));
            const summary = inspector.summary();
            text = formatSummary(summary, 'stdin');
            json = summary;
          }
        } finally {
          progress.stop();
        }
        if (collector && opts.contactSheet) {
          await writeFileAtomic(opts.contactSheet, await renderContactSheet(collector.tiles, { tileSize: opts.tileSize }));
          process.stderr.write(`alexnet-stream inspect: contact sheet of ${collector.tiles.length} images written to ${opts.contactSheet}\n`);
        }
        process.stdout.write(opts.json ? `${JSON.stringify(json, null, 2)}\n` : text);
      }),
    );
}
