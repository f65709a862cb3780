/**
 * `decode`: item records (stdin) → image records (stdout), uint8 RGB CHW at --size.
 */
import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { DEFAULT_MAX_IMAGE_FILE_BYTES } from '@alexnet-stream/core';
import { DecodeStage, type ResizeMode, tuneSharpForDecoding } from '@alexnet-stream/stream-io';
import { action, parseByteSize, parseInteger, stdinRecords, stdoutRecords } from '../cli-support';
import { Progress } from '../progress';

interface DecodeCliOptions {
  size: number;
  resize: ResizeMode;
  concurrency?: number;
  workers?: number;
  strict?: boolean;
  maxFileBytes?: number;
}

export function register(program: Command): void {
  program
    .command('decode')
    .summary('decode and resize the images of an item stream (stdin) into image records (stdout)')
    .description(
      'Read item records on stdin, decode each file (JPEG, PNG, WebP, TIFF, GIF; EXIF orientation applied;\n' +
        'grayscale, CMYK, palette and 16-bit become 8-bit RGB; alpha is dropped) and write uint8 RGB\n' +
        'images in CHW order on stdout, in input order. Files that cannot be decoded (missing, empty,\n' +
        'truncated or corrupt, not an image, not a regular file, larger than --max-file-bytes) are\n' +
        'skipped with one warning line each on stderr. The input must end with its trailer (a stream cut\n' +
        'short upstream is an error, exit 2); the output ends with one counting images and skipped files.',
    )
    .option('--size <n>', 'output height and width in pixels', parseInteger('--size'), 256)
    .option('--resize <mode>', 'squash: whole image to size x size (the seed); center-crop: shorter side to size, then the center', 'squash')
    .option('--concurrency <n>', 'files read and decoded at once (default: 2x the CPU cores)', parseInteger('--concurrency'))
    .option(
      '--workers <n>',
      'worker threads that read, decode and resize plain JPEGs beside the main thread (0: none; default: one per core)',
      parseInteger('--workers'),
    )
    .option('--strict', 'exit with status 1 if any file was skipped')
    .option(
      '--max-file-bytes <n>',
      `skip image files larger than this (bytes; k, M, G suffixes; default ${DEFAULT_MAX_IMAGE_FILE_BYTES >> 20}M)`,
      parseByteSize('--max-file-bytes'),
    )
    .action(
      action('decode', async (opts: DecodeCliOptions) => {
        tuneSharpForDecoding(); // this process only decodes: no libvips operation cache
        const input = stdinRecords(['item'], undefined, 'decode');
        const progress = new Progress({ label: 'decode', unit: 'images' });
        const stage = new DecodeStage({
          size: opts.size,
          resize: opts.resize,
          concurrency: opts.concurrency,
          workers: opts.workers,
          maxFileBytes: opts.maxFileBytes,
          maxFileBytesName: '--max-file-bytes',
          onImage: () => progress.tick(),
          onSkip: (_key, reason, file) => process.stderr.write(`alexnet-stream decode: warning: skipped ${file}: ${reason}\n`),
        });
        const { encoder, done } = stdoutRecords();
        try {
          // together: when the pipeline fails, `done` rejects too and must not go unhandled
          await Promise.all([pipeline(input, stage, encoder), done]);
        } finally {
          progress.stop();
        }
        process.stderr.write(`alexnet-stream decode: ${stage.decoded} images decoded, ${stage.skipped} skipped\n`);
        return opts.strict && stage.skipped > 0 ? 1 : 0;
      }),
    );
}
