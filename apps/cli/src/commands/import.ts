/**
 * `import <source> --from <format> --out <ckpt-dir>`: weights from another layout into one of
 * our checkpoint directories (weights.safetensors + state.json), usable with `--weights`.
 *
 * Each `--from` value dispatches to one function of `IMPORTERS` below that reads everything and
 * returns `{ spec, weights, state }` (throwing an InputError naming the file on bad input); only
 * then is anything written, atomically, so a failed import leaves nothing behind. A new format
 * is one more entry there.
 */
import type { Command } from 'commander';
import { existsSync, lstatSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { AlexnetStreamError, encodeNpy, InputError, invalidParameter, type NamedTensors, UsageError, writeFileAtomicSync } from '@alexnet-stream/core';
import {
  alexnetSpec,
  checkReplaceableCheckpoint,
  describeSpec,
  importMeanImage,
  importTheanoNpy,
  isPresetName,
  type ImportedMeanImage,
  MEAN_FILE,
  type ModelSpec,
  PRESETS,
  saveCheckpoint,
  theanoEpochs,
  theanoLearningRate,
  theanoNumClasses,
} from '@alexnet-stream/model-alexnet';
import { importOnnxWeights } from '@alexnet-stream/onnx-export';
import { action, parseInteger } from '../cli-support';

interface ImportOptions {
  from: string;
  out: string;
  epoch?: number;
  preset?: string;
  numClasses?: number;
  inputSize?: number;
  flip: boolean;
  mean?: string;
  meanOut?: string;
  force?: boolean;
}

interface Imported {
  spec: ModelSpec;
  weights: NamedTensors;
  state: Record<string, unknown>;
  /** Lines for stderr (conversions the user should know about). */
  notes: string[];
}

type Importer = (source: string, opts: ImportOptions) => Imported;

/** theano_alexnet's `save_weights` layout: W_i_N.npy / W0_i_N.npy … in one folder. */
function fromTheanoNpy(source: string, opts: ImportOptions): Imported {
  if (!existsSync(source) || !statSync(source).isDirectory())
    throw new InputError(`${source}: not a directory (expected the seed's weights folder with W_0_N.npy …)`);
  if (opts.epoch === undefined) {
    const epochs = theanoEpochs(source);
    throw new UsageError(
      `--from theano-npy needs --epoch N (${epochs.length ? `epochs found in ${source}: ${epochs.join(', ')}` : `no W_0_N.npy / W0_0_N.npy files in ${source}`})`,
    );
  }
  const epochs = theanoEpochs(source);
  if (!epochs.includes(opts.epoch)) {
    throw new InputError(
      `${source}: no weights of epoch ${opts.epoch} (W_0_${opts.epoch}.npy or W0_0_${opts.epoch}.npy); ${epochs.length ? `epochs found there: ${epochs.join(', ')}` : 'no seed weight files there at all'}`,
    );
  }
  const preset = opts.preset ?? 'theano-alexnet';
  if (!isPresetName(preset)) throw invalidParameter('--preset', `one of ${PRESETS.join(', ')}`, preset);
  const numClasses = opts.numClasses ?? theanoNumClasses(source, opts.epoch);
  let spec: ModelSpec;
  try {
    spec = alexnetSpec(preset, { numClasses, inputSize: opts.inputSize });
  } catch (err) {
    const from = `(from --preset ${preset}, --num-classes ${numClasses}${opts.inputSize ? `, --input-size ${opts.inputSize}` : ''})`;
    throw new UsageError((name) => `${err instanceof AlexnetStreamError ? err.renamed(name).message : (err as Error).message} ${from}`, { cause: err });
  }
  const weights = importTheanoNpy(source, opts.epoch, spec, { flip: opts.flip });
  const lr = theanoLearningRate(source, opts.epoch);
  const state: Record<string, unknown> = {
    epoch: opts.epoch,
    ...(lr !== undefined ? { lr } : {}),
    imported: { from: 'theano-npy', source, epoch: opts.epoch, flipped: opts.flip },
  };
  return {
    spec,
    weights,
    state,
    notes: [opts.flip ? 'conv kernels flipped (Theano cuDNN true convolution -> cross-correlation)' : 'conv kernels not flipped (--no-flip)'],
  };
}

/** Any ONNX AlexNet of the presets (ours, the Model Zoo's bvlcalexnet, torchvision exports): onnx-export recognises it by structure. */
function fromOnnx(source: string, opts: ImportOptions): Imported {
  for (const [flag, given] of [
    ['--epoch', opts.epoch],
    ['--preset', opts.preset],
    ['--num-classes', opts.numClasses],
    ['--input-size', opts.inputSize],
  ] as const) {
    if (given !== undefined) throw new UsageError(`${flag} does not apply to --from onnx (the model's structure decides)`);
  }
  // Anything else there (a folder, a FIFO, a device) is refused by the bounded reader, saying what it is.
  if (!existsSync(source)) throw new InputError(`${source}: no such file (expected an .onnx model)`);
  const imported = importOnnxWeights(source); // its ImportError / OnnxFormatError are InputErrors (exit 2)
  const state: Record<string, unknown> = {
    imported: { from: 'onnx', source },
    ...(imported.classNames ? { classNames: imported.classNames } : {}),
  };
  return { spec: imported.spec, weights: imported.weights, state, notes: imported.notes };
}

/** `--from` values. */
export const IMPORTERS: Record<string, Importer> = {
  'theano-npy': fromTheanoNpy,
  onnx: fromOnnx,
};

/** The importer for a `--from` value (own keys only: `--from constructor` is not a format). */
function importerFor(from: string): Importer {
  if (!Object.hasOwn(IMPORTERS, from)) throw invalidParameter('--from', `one of ${Object.keys(IMPORTERS).join(', ')}`, from);
  return IMPORTERS[from];
}

/**
 * May the outputs be written? An existing --out needs --force, and then must be a checkpoint
 * directory this project wrote (model-alexnet's checkReplaceableCheckpoint): --force never
 * replaces a weights dir, a folder of notes, a file or a link. An existing --mean-out needs
 * --force too, and must be a regular file. Checked before anything is read or written.
 */
function checkOutputs(opts: ImportOptions, meanOut: string | undefined): void {
  if (existsSync(opts.out) || isLink(opts.out)) {
    if (!opts.force) throw new UsageError(`${opts.out} exists; choose another --out or add --force to replace it`);
    checkReplaceableCheckpoint(opts.out);
  }
  if (meanOut && (existsSync(meanOut) || isLink(meanOut))) {
    if (!opts.force) throw new UsageError(`${meanOut} (--mean-out) exists; choose another --mean-out or add --force to replace it`);
    if (!lstatSync(meanOut).isFile()) throw new InputError(`${meanOut} (--mean-out): not a regular file; --force replaces only a file`);
  }
}

function isLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

export function register(program: Command): void {
  program
    .command('import')
    .summary("import weights from the seed's .npy files or an ONNX model into a checkpoint")
    .description(
      [
        'Read weights in another layout and write a checkpoint directory',
        '(weights.safetensors, state.json) that --weights accepts. Everything is read',
        'and checked first: on bad input nothing is written.',
        '',
        'Formats (--from):',
        '  theano-npy  <dir> of theano_alexnet save_weights files: W_i_N.npy, b_i_N.npy',
        '              (W0_/W1_/b0_/b1_ halves for grouped layers), conv W c01b',
        '              (in, kh, kw, out), fc W (n_in, n_out). Kernels are flipped',
        "              (Theano's cuDNN dnn_conv is a true convolution) unless --no-flip.",
        '  onnx        <model.onnx>: an AlexNet of the presets, found by structure.',
        '',
        'Example:',
        '  alexnet-stream import ~/theano_alexnet/weights --from theano-npy \\',
        '    --epoch 65 --out weights/epoch-0065 \\',
        '    --mean ~/data/img_mean.npy --mean-out data/mean.npy',
      ].join('\n'),
    )
    .argument('<source>', "the seed's weights folder (theano-npy) or an .onnx file (onnx)")
    .requiredOption('--from <format>', `source format: ${Object.keys(IMPORTERS).join(', ')}`)
    .requiredOption('--out <ckpt-dir>', 'checkpoint directory to write (e.g. weights/epoch-0065)')
    .option('--epoch <n>', 'theano-npy: the epoch N of the files to read', parseInteger('--epoch'))
    .option('--preset <name>', `theano-npy: model preset (${PRESETS.join(', ')}); default theano-alexnet`)
    .option('--num-classes <k>', 'theano-npy: class count (default: from the softmax bias b_7_N.npy)', parseInteger('--num-classes'))
    .option('--input-size <n>', "theano-npy: network input (crop) size (default: the preset's, 227)", parseInteger('--input-size'))
    .option('--no-flip', 'theano-npy: do not flip conv kernels (weights from a cross-correlating backend, e.g. cuda-convnet)')
    .option('--mean <file>', "also import a mean image (the seed's img_mean.npy, float32 (3, H, W); (H, W, 3) is transposed)")
    .option('--mean-out <file>', 'where to write it as our mean.npy (default: <ckpt-dir>/mean.npy)')
    .option('--force', 'replace an existing checkpoint directory written by alexnet-stream (in one atomic step; any other directory or file is refused)')
    .action(
      action('import', async (source: string, opts: ImportOptions) => {
        const importer = importerFor(opts.from);
        if (opts.meanOut && !opts.mean) throw new UsageError('--mean-out needs --mean (the mean image to import)');
        // The mean goes into the checkpoint directory (in the same atomic step) unless --mean-out names another place.
        const meanInside = opts.mean !== undefined && (opts.meanOut === undefined || resolve(opts.meanOut) === resolve(opts.out, MEAN_FILE));
        checkOutputs(opts, opts.mean && !meanInside ? opts.meanOut : undefined);
        const imported = importer(source, opts);
        // Read and check the mean before writing anything.
        let mean: ImportedMeanImage | undefined;
        if (opts.mean) mean = importMeanImage(opts.mean);
        // The rule export and train apply to this model's mean image: square, at least its input size.
        if (mean && (mean.shape[1] !== mean.shape[2] || mean.shape[1] < imported.spec.inputSize)) {
          throw new InputError(
            `${opts.mean}: a mean image of 3xSxS with S >= ${imported.spec.inputSize} is needed for this model, this one is ${mean.shape.join('x')}`,
          );
        }
        const meanNpy = mean ? encodeNpy(mean.data, mean.shape) : undefined;
        const dir = saveCheckpoint(opts.out, { spec: imported.spec, weights: imported.weights, state: imported.state }, meanInside ? { meanNpy } : {});
        const lines = [`${opts.from} ${source} -> ${dir} (${describeSpec(imported.spec)})`, ...imported.notes];
        if (mean) {
          const meanOut = meanInside ? join(dir, MEAN_FILE) : opts.meanOut!;
          if (!meanInside) writeFileAtomicSync(meanOut, meanNpy!);
          lines.push(`mean image ${opts.mean} -> ${meanOut} (3x${mean.shape[1]}x${mean.shape[2]})${mean.notice ? `: ${mean.notice}` : ''}`);
        }
        for (const line of lines) process.stderr.write(`alexnet-stream import: ${line}\n`);
      }),
    );
}
