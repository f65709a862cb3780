/**
 * `export --weights <ckpt> --out model.onnx`: a checkpoint (or a seeded random init) lowered to
 * an ONNX inference graph (onnx-export's `lowerInference`), optionally with the preprocessing
 * inside (`--with-preprocessing --mean mean.npy`: uint8 NHWC 256x256 images in). Everything is
 * read and checked before anything is written; the file is written atomically.
 */
import type { Command } from 'commander';
import { UsageError } from '@alexnet-stream/core';
import { channelMeans, lowerInference, lowerWithPreprocessing, META, writeOnnx } from '@alexnet-stream/onnx-export';
import { describeSpec } from '@alexnet-stream/model-alexnet';
import { action, parseInteger } from '../cli-support';
import { loadClassNames, loadMeanImage, loadWeights } from '../model-support';

interface ExportOptions {
  weights?: string;
  randomInit?: boolean;
  seed?: number;
  preset?: string;
  numClasses?: number;
  out: string;
  withPreprocessing?: boolean;
  mean?: string;
  classes?: string;
}

export function register(program: Command): void {
  program
    .command('export')
    .summary('export a checkpoint (or a random init) as an ONNX inference model')
    .description(
      'Lower a model to an ONNX graph for onnxruntime (opset 17): input "data" float32 [N,3,S,S]\n' +
        '(mean-subtracted center crop), outputs "logits" and "prob" (softmax). The weights are\n' +
        'initializers named as the parameters (conv1.weight, ...); the metadata holds the preset, the\n' +
        'model spec, class names, per-channel means and a config hash. A checkpoint trained with\n' +
        "input_scale has it folded into conv1's weights: the input is pixels − mean all the same.\n" +
        'With --with-preprocessing the input is "image" uint8 [N,256,256,3] (decoded pixels, NHWC) and\n' +
        'the graph subtracts the mean image and takes the center crop itself.\n\n' +
        'Examples: alexnet-stream export --weights weights/epoch-0065 --out alexnet.onnx --classes classes.txt\n' +
        '          alexnet-stream export --random-init --seed 1 --preset bvlc-alexnet --num-classes 10 --out m.onnx',
    )
    .requiredOption('--out <model.onnx>', 'ONNX file to write (replaced atomically)')
    .option('--weights <ckpt>', 'checkpoint directory (epoch-NNNN) or weights .safetensors file')
    .option('--random-init', 'export freshly initialised weights instead (needs --seed)')
    .option('--seed <n>', 'seed of --random-init', parseInteger('--seed'))
    .option('--preset <name>', 'model preset (--random-init, or a .safetensors file without a spec); default theano-alexnet')
    .option('--num-classes <k>', 'class count (with --preset / --random-init); default 1000', parseInteger('--num-classes'))
    .option('--with-preprocessing', 'take uint8 NHWC 256x256 images: mean subtraction and center crop in the graph (needs --mean)')
    .option('--mean <mean.npy>', 'mean image (float32 3x256x256); its per-channel means go into the metadata')
    .option('--classes <classes.txt>', "class names, one per line in label order (default: the checkpoint's, if known)")
    .action(
      action(
        'export',
        async (opts: ExportOptions) => {
          if (opts.withPreprocessing && !opts.mean) throw new UsageError('--with-preprocessing needs --mean <mean.npy> (the mean image the graph subtracts)');
          const loaded = loadWeights(opts);
          const { spec } = loaded;
          const classNames = opts.classes ? await loadClassNames(opts.classes, spec.numClasses, '--classes') : loaded.classNames;
          const mean = opts.mean ? await loadMeanImage(opts.mean, spec.inputSize) : undefined;
          const meanChannels = mean ? channelMeans(mean.data, mean.channels) : undefined;
          // A checkpoint trained with input_scale comes with it folded into conv1 (loadWeights):
          // the graph's input stays pixels − mean; the factors are recorded, not to be applied again.
          const metadata: Record<string, string> = {
            'alexnet_stream.source': loaded.source,
            ...(loaded.foldedInputScale ? { [META.foldedInputScale]: JSON.stringify(loaded.foldedInputScale) } : {}),
          };
          const model = opts.withPreprocessing
            ? lowerWithPreprocessing(spec, loaded.weights, { meanImage: mean!.data, imageSize: mean!.height, classNames, meanChannels, metadata })
            : lowerInference(spec, loaded.weights, { classNames, meanChannels, imageSize: mean?.height, metadata });
          const bytes = writeOnnx(opts.out, model);
          process.stderr.write(
            `alexnet-stream export: ${loaded.source} -> ${opts.out} (${describeSpec(spec)}${opts.withPreprocessing ? `, preprocessing for ${mean!.height}x${mean!.width} images` : ''}` +
              `${classNames ? ', class names' : ''}${loaded.foldedInputScale ? ', input scale folded into the first layer' : ''}, ${(bytes / 1e6).toFixed(1)} MB)\n`,
          );
        },
        { expectedSpec: '--preset' },
      ),
    );
}
