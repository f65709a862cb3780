/**
 * `validate --weights <ckpt> --data <data-dir>`: top-1 / top-5 error and loss on the val shards,
 * as the seed's `validate_performance.py` reports them: center crop (offset (256 − 227) >> 1),
 * no mirror, dropout off, the mean image `<data-dir>/mean.npy`.
 *
 * The checkpoint is lowered to the ONNX inference graph in memory (no file written) and run in
 * onnxruntime. The seed averages per-batch errors over batches; we average over images, which
 * is the same for equal batches and the exact data-set figure when the last batch is partial.
 * Loss = mean −log softmax(logits)[label], from the logits in float64 (no log(0)).
 */
import type { Command } from 'commander';
import { join } from 'node:path';
import { InputError, UsageError } from '@alexnet-stream/core';
import { checkDataClasses, describeSpec } from '@alexnet-stream/model-alexnet';
import { InferenceModel, lowerInference, topK } from '@alexnet-stream/onnx-export';
import {
  type BatchRecord,
  centerOffset,
  checkAugmentInput,
  cropMirrorSubtract,
  type CropPlan,
  readMeanNpy,
  readShard,
  readShardIndex,
  shardSet,
} from '@alexnet-stream/stream-io';
import { action, parseDeviceList, parseInteger } from '../cli-support';
import { Progress } from '../progress';
import { allocateBatch, loadWeights } from '../model-support';

interface ValidateOptions {
  weights: string;
  data: string;
  batchSize: number;
  prefix: string;
  json?: boolean;
  threads?: number;
  devices?: string[];
  preset?: string;
  numClasses?: number;
}

export interface ValidationResult {
  images: number;
  top1Error: number;
  top5Error: number;
  loss: number;
}

/** Running sums of top-1/top-5 misses and cross-entropy over a set. */
export class ValidationMetrics {
  private images = 0;
  private top1Misses = 0;
  private top5Misses = 0;
  private lossSum = 0;

  /** Add n rows of `logits` ([n, k]) with their labels. */
  add(logits: Float32Array, labels: Int32Array, n: number, k: number): void {
    const top = Math.min(5, k);
    for (let i = 0; i < n; i++) {
      const label = labels[i];
      const best = topK(logits, i, k, top);
      if (best[0] !== label) this.top1Misses++;
      if (!best.includes(label)) this.top5Misses++;
      let max = -Infinity;
      for (let j = 0; j < k; j++) max = Math.max(max, logits[i * k + j]);
      let sum = 0;
      for (let j = 0; j < k; j++) sum += Math.exp(logits[i * k + j] - max);
      this.lossSum += max + Math.log(sum) - logits[i * k + label];
    }
    this.images += n;
  }

  result(): ValidationResult {
    const n = Math.max(1, this.images);
    return { images: this.images, top1Error: this.top1Misses / n, top5Error: this.top5Misses / n, loss: this.lossSum / n };
  }
}

export async function runValidate(opts: ValidateOptions): Promise<ValidationResult & { spec: string }> {
  const loaded = loadWeights({ weights: opts.weights, preset: opts.preset, numClasses: opts.numClasses });
  const { spec } = loaded;
  const index = await readShardIndex(opts.data);
  const set = shardSet(index, opts.prefix, opts.data);
  const mean = await readMeanNpy(join(opts.data, 'mean.npy'));
  const [c, h, w] = set.imageShape;
  if (c !== spec.inputChannels || h < spec.inputSize || w < spec.inputSize) {
    throw new InputError(
      `${opts.data}: ${set.imageShape.join('x')} images cannot give the model's ${spec.inputChannels}x${spec.inputSize}x${spec.inputSize} center crop`,
    );
  }
  // The rule train applies (model-alexnet data-fit.ts): a model of other classes is refused.
  checkDataClasses(
    [{ name: `"${opts.prefix}" set`, labelCount: set.labelCount, classNames: set.classNames }],
    spec.numClasses,
    join(opts.data, 'index.json'),
    `the model (${loaded.source}: ${describeSpec(spec)})`,
  );
  const model = await InferenceModel.fromModel(lowerInference(spec, loaded.weights), loaded.source, { intraOpNumThreads: opts.threads, devices: opts.devices });
  const bs = opts.batchSize;
  const crop = spec.inputSize;
  const [data] = allocateBatch(() => [new Float32Array(bs * c * crop * crop)], `--batch-size ${bs} of ${crop}x${crop} crops`);
  const plan: CropPlan = {
    crop,
    offsetY: new Int32Array(bs).fill(centerOffset(h, crop)),
    offsetX: new Int32Array(bs).fill(centerOffset(w, crop)),
    mirror: new Uint8Array(bs),
  };
  const metrics = new ValidationMetrics();
  const progress = new Progress({ label: `validate ${opts.prefix}`, unit: 'images', total: set.images });
  const imageLength = c * h * w;
  try {
    // Read the next shard while this one is evaluated (file IO and checksum off the JS thread's critical path).
    let next = set.shards.length ? readShard(opts.data, set, set.shards[0]) : undefined;
    for (let s = 0; s < set.shards.length; s++) {
      const shard = await next!;
      next = s + 1 < set.shards.length ? readShard(opts.data, set, set.shards[s + 1]) : undefined;
      next?.catch(() => undefined); // reported when awaited
      for (const [b, batch] of shard.batches.entries()) {
        const where = `${join(opts.data, set.shards[s].file)} batch ${b + 1}`;
        checkAugmentInput(batch, mean, where);
        for (let i = 0; i < batch.labels.length; i++) {
          const label = batch.labels[i];
          if (!(label >= 0 && label < spec.numClasses)) throw new InputError(`${where}: label ${label} is outside the model's 0..${spec.numClasses - 1}`);
        }
        for (let first = 0; first < batch.shape[0]; first += bs) {
          const n = Math.min(bs, batch.shape[0] - first);
          const part: BatchRecord = {
            ...batch,
            shape: [n, c, h, w],
            data: (batch.data as Uint8Array).subarray(first * imageLength, (first + n) * imageLength),
          };
          cropMirrorSubtract(part, mean, plan, data);
          const { logits } = await model.run(data, n);
          metrics.add(logits, batch.labels.subarray(first, first + n), n, spec.numClasses);
          progress.tick(n);
        }
      }
    }
  } finally {
    progress.stop();
    await model.close();
  }
  return { ...metrics.result(), spec: describeSpec(spec) };
}

export function register(program: Command): void {
  program
    .command('validate')
    .summary('top-1 / top-5 error and loss of a checkpoint on the validation shards')
    .description(
      'Evaluate a checkpoint on a shard set (center crop, no mirror, dropout off, the mean image\n' +
        '<data-dir>/mean.npy) with onnxruntime: top-1 error, top-5 error and cross-entropy loss, as the\n' +
        "seed's validate_performance.py. Progress on stderr; the result on stdout.\n\n" +
        'Example: alexnet-stream validate --weights weights/epoch-0065 --data shards/',
    )
    .requiredOption('--weights <ckpt>', 'checkpoint directory (epoch-NNNN) or weights .safetensors file')
    .requiredOption('--data <data-dir>', 'shard directory (index.json, <prefix>-NNNNN.msgpack, mean.npy)')
    .option('--prefix <name>', 'shard set to evaluate', 'val')
    .option('--batch-size <n>', 'images per inference batch', parseInteger('--batch-size', 1, 4096), 32)
    .option('--preset <name>', 'model preset, for a .safetensors file without a spec')
    .option('--num-classes <k>', 'class count, with --preset', parseInteger('--num-classes'))
    .option('--threads <n>', 'onnxruntime intra-op threads (default: the number of cores)', parseInteger('--threads'))
    .option('--devices <list>', 'where onnxruntime runs, in preference order: cpu (default), webgpu, cuda:0; docs/gpus.md', parseDeviceList)
    .option('--json', 'print the result as one JSON object')
    .action(
      action(
        'validate',
        async (opts: ValidateOptions) => {
          if (!opts.prefix.trim()) throw new UsageError('Expected a shard set name for --prefix but received ""');
          const r = await runValidate(opts);
          if (opts.json) {
            process.stdout.write(
              `${JSON.stringify({ prefix: opts.prefix, images: r.images, top1Error: r.top1Error, top5Error: r.top5Error, loss: r.loss, model: r.spec })}\n`,
            );
          } else {
            process.stdout.write(
              `${opts.prefix}: ${r.images} images, top-1 error ${(100 * r.top1Error).toFixed(2)}%, top-5 error ${(100 * r.top5Error).toFixed(2)}%, loss ${r.loss.toFixed(4)}\n`,
            );
          }
        },
        { intraOpNumThreads: '--threads', expectedSpec: '--preset' },
      ),
    );
}
