/**
 * `report --weights-dir <dir> --out report.html [--png curves.png]`: the training curves (from
 * val_record.json and train_log.jsonl) as a self-contained HTML page with inline SVG, and a PNG
 * rendered from the same SVG with sharp. Both written atomically.
 */
import type { Command } from 'commander';
import { join } from 'node:path';
import { InputError, readUserFileSync, writeFileAtomic } from '@alexnet-stream/core';
import { latestCheckpoint, MAX_STATE_FILE_BYTES, STATE_FILE } from '@alexnet-stream/model-alexnet';
import { bestEpoch, buildReportHtml, buildReportSvg, readTrainLog, readValRecord } from '@alexnet-stream/trainer-multigpu';
import { action, PROGRAM } from '../cli-support';

interface ReportCliOptions {
  weightsDir: string;
  out: string;
  png?: string | false;
  title?: string;
}

/**
 * The config of the run, from the latest checkpoint's state.json (not its weights: no need to
 * read them). Only a table in the page: a state.json that cannot give it is named in a warning
 * and the report goes on without it.
 */
function runConfig(weightsDir: string): Record<string, unknown> | undefined {
  const latest = latestCheckpoint(weightsDir);
  if (!latest) return undefined;
  const path = join(latest.path, STATE_FILE);
  let config: unknown;
  try {
    const state = JSON.parse(readUserFileSync(path, 'checkpoint state', MAX_STATE_FILE_BYTES).toString('utf8')) as unknown;
    config = typeof state === 'object' && state !== null && Object.hasOwn(state, 'config') ? (state as { config: unknown }).config : undefined;
  } catch (err) {
    const message = err instanceof InputError ? err.message : `${path}: ${(err as Error).message}`;
    process.stderr.write(`${PROGRAM} report: warning: ${message}; the report shows no config\n`);
    return undefined;
  }
  if (config === undefined) return undefined;
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    process.stderr.write(`${PROGRAM} report: warning: ${path}: "config" is not a mapping of config keys; the report shows no config\n`);
    return undefined;
  }
  return config as Record<string, unknown>;
}

export function register(program: Command): void {
  program
    .command('report')
    .summary('training curves (loss, top-1/top-5 error) as a self-contained HTML page and a PNG')
    .description(
      'Draw the curves of a training run from <weights-dir>/train_log.jsonl (training loss and error\n' +
        'every print_freq iterations) and val_record.json (validation top-1/top-5 error and loss every\n' +
        'epoch) as inline SVG in one self-contained HTML page, with the config and the best epoch, plus a\n' +
        'PNG of the same curves.',
    )
    .requiredOption('--weights-dir <dir>', 'the weights_dir of a training run (val_record.json, train_log.jsonl)')
    .requiredOption('--out <file.html>', 'the HTML report to write')
    .option('--png <file.png>', 'the PNG of the curves (default: --out with .png)')
    .option('--no-png', 'write no PNG')
    .option('--title <text>', 'page title')
    .action(
      action('report', async (opts: ReportCliOptions) => {
        const valRecord = await readValRecord(opts.weightsDir);
        const trainLog = await readTrainLog(opts.weightsDir);
        if (valRecord.length === 0 && trainLog.length === 0) {
          throw new InputError(`${opts.weightsDir}: no val_record.json or train_log.jsonl entries: nothing to report (train first)`);
        }
        const input = { valRecord, trainLog, config: runConfig(opts.weightsDir), title: opts.title };
        const svg = buildReportSvg(input);
        await writeFileAtomic(opts.out, buildReportHtml(input, svg));
        let pngPath: string | undefined;
        if (opts.png !== false) {
          pngPath = typeof opts.png === 'string' ? opts.png : `${opts.out.replace(/\.html?$/i, '')}.png`;
          // sharp (native) is loaded only here: building the program must not load it.
          const sharp = require('sharp') as typeof import('sharp');
          const png = await sharp(Buffer.from(svg)).png().toBuffer();
          await writeFileAtomic(pngPath, png);
        }
        const best = bestEpoch(valRecord);
        process.stderr.write(
          `${PROGRAM} report: wrote ${opts.out}${pngPath ? ` and ${pngPath}` : ''} (${valRecord.length} epochs, ${trainLog.length} log lines` +
            `${best ? `; best epoch ${best.epoch}: top-1 error ${(100 * best.top1Error).toFixed(2)}%` : ''})\n`,
        );
      }),
    );
}
