/**
 * The ONNX graphs of the onnxruntime engine (DESIGN §5), pure functions of the spec:
 *
 * - `train`: forward with dropout → softmax cross-entropy (mean over the batch; against targets
 *   (1 − ε)·onehot + ε/K with label smoothing ε, `LossConfig`) → backward by
 *   the rules of rules.ts → the seed's optimizer update. Inputs: `data` [N,C,S,S] float32,
 *   `labels` [N] int32, `lr` [] float32, `mask.<dropout layer>` [N, …] float32 (keep/(1−rate)),
 *   every parameter `<name>` and (with momentum) its velocity `<name>.velocity`. Outputs: `loss`,
 *   `top1_errors`, `top5_errors` ([] float32 counts), `<name>.new`, `<name>.velocity.new`.
 * - `gradients`: the same forward and backward without the update; outputs `loss`, the error
 *   counts and `<name>.grad` (tests check these against tfjs autodiff).
 * - `eval`: forward without dropout; outputs `loss`, the error counts and `logits`.
 *
 * The batch dimension is symbolic (`N`), so one session serves full and partial last batches.
 */
import { inferShapes, isParamLayer, type LayerShapes, type ModelSpec, parameterList, type ParamInfo } from '@alexnet-stream/model-alexnet';
import { GraphBuilder, type ModelProto, int, ints } from '@alexnet-stream/onnx-export';
import { DEFAULT_LOSS, type LossConfig, type OptimizerConfig } from '../engine';
import { DEFAULT_LOWERING, type LoweringOptions, type Mode, RULES, type Rule, type RuleContext, type Saved } from './rules';
import { gemmGradient, lowerUpdate } from './update';

export type GraphKind = 'train' | 'gradients' | 'eval';

export interface MaskInput {
  layer: string;
  input: string;
  /** Shape without the batch dimension. */
  shape: number[];
  rate: number;
}

export interface BuiltGraph {
  kind: GraphKind;
  model: ModelProto;
  params: ParamInfo[];
  masks: MaskInput[];
  /** Whether velocities are inputs/outputs (train with momentum). */
  hasVelocities: boolean;
}

export const velocityName = (param: string) => `${param}.velocity`;
export const newName = (value: string) => `${value}.new`;
export const gradName = (param: string) => `${param}.grad`;
export const maskName = (layer: string) => `mask.${layer}`;

interface TapeEntry {
  shapes: LayerShapes;
  ctx: RuleContext;
  saved: Saved;
  needDx: boolean;
}

export function buildGraph(
  spec: ModelSpec,
  kind: GraphKind,
  optimizer?: OptimizerConfig,
  lowering: LoweringOptions = DEFAULT_LOWERING,
  loss: LossConfig = DEFAULT_LOSS,
): BuiltGraph {
  if (kind === 'train' && !optimizer) throw new Error('buildGraph: a train graph needs an optimizer config');
  const smoothing = kind === 'eval' ? 0 : loss.labelSmoothing;
  if (!(smoothing >= 0 && smoothing < 1)) throw new Error(`buildGraph: label smoothing must be in [0, 1), got ${smoothing}`);
  const b = new GraphBuilder(`${spec.preset}-${kind}`);
  const mode: Mode = kind === 'eval' ? 'eval' : 'train';
  const N = 'N';
  const params = parameterList(spec);
  const hasVelocities = kind === 'train' && optimizer!.useMomentum;

  const data = b.input('data', 'float32', [N, spec.inputChannels, spec.inputSize, spec.inputSize]);
  const labels = b.input('labels', 'int32', [N]);
  for (const p of params) b.input(p.name, 'float32', p.shape);
  if (hasVelocities) for (const p of params) b.input(velocityName(p.name), 'float32', p.shape);
  const lr = kind === 'train' ? b.input('lr', 'float32', []) : '';

  // Forward, recording a tape of what each backward rule needs.
  const masks: MaskInput[] = [];
  const tape: TapeEntry[] = [];
  let x = data;
  let seenParams = false;
  for (const shapes of inferShapes(spec)) {
    const { layer, input, output } = shapes;
    const ctx: RuleContext = { b, mode, lowering, inShape: input, outShape: output };
    if (isParamLayer(layer)) {
      ctx.weight = `${layer.name}.weight`;
      ctx.bias = `${layer.name}.bias`;
    }
    if (layer.kind === 'dropout' && mode === 'train' && layer.rate > 0) {
      ctx.mask = b.input(maskName(layer.name), 'float32', [N, ...output]);
      masks.push({ layer: layer.name, input: ctx.mask, shape: output, rate: layer.rate });
    }
    const rule = RULES[layer.kind] as Rule<typeof layer>;
    const f = rule.forward(ctx, layer, x);
    tape.push({ shapes, ctx, saved: f.saved, needDx: seenParams });
    seenParams ||= isParamLayer(layer);
    x = f.y;
  }
  const logits = x;

  // Softmax cross-entropy (mean over the batch) and top-1/top-5 error counts.
  const numClasses = spec.numClasses;
  const k = Math.min(5, numClasses);
  const batch = b.op('Cast', [b.op('Gather', [b.op('Shape', [logits]), b.int64s([0])], { axis: int(0) })], { to: int(1) }); // [1] float
  const { onehot, logp, top1Hits, topKHits } = lowering.portableOps
    ? portableLossTerms(b, logits, labels, numClasses, k)
    : lossTerms(b, logits, labels, numClasses, k);
  // The targets: one-hot, or with label smoothing ε, (1 − ε)·onehot + ε/K (rows still sum to 1,
  // so d(−Σ q·log softmax)/d logits = softmax − q, as for one-hot targets).
  const target = smoothing > 0 ? b.op('Add', [b.op('Mul', [onehot, b.scalar(1 - smoothing)]), b.scalar(smoothing / numClasses)]) : onehot;
  const nll = b.op('Neg', [b.op('ReduceSum', [b.op('Mul', [logp, target]), b.int64s([1])], { keepdims: int(0) })]);
  b.output(b.op('ReduceMean', [nll], { keepdims: int(0) }), 'float32', [], 'loss');
  const scalarBatch = b.op('Squeeze', [batch, b.int64s([0])]);
  b.output(b.op('Sub', [scalarBatch, top1Hits]), 'float32', [], 'top1_errors');
  b.output(b.op('Sub', [scalarBatch, topKHits]), 'float32', [], 'top5_errors');
  if (kind === 'eval') {
    b.output(logits, 'float32', [N, numClasses], 'logits');
    return { kind, model: b.model({ docString: `${spec.preset} evaluation graph` }), params, masks, hasVelocities };
  }

  // Backward: d loss / d logits = (softmax − target)/N, then the tape in reverse.
  // A train graph seeds it with lr·dLoss so that every gradient arrives scaled by lr (update.ts).
  const dLogits = b.op('Div', [b.op('Sub', [b.op('Exp', [logp]), target]), batch]);
  let dy = kind === 'train' ? b.op('Mul', [dLogits, lr]) : dLogits;
  const grads: Record<string, string | { dy: string; x: string }> = {};
  for (let i = tape.length - 1; i >= 0; i--) {
    const { shapes, ctx, saved, needDx } = tape[i];
    const rule = RULES[shapes.layer.kind] as Rule<typeof shapes.layer>;
    const r = rule.backward(ctx, shapes.layer, dy, saved, needDx);
    if (r.dWeight) grads[ctx.weight!] = r.dWeight;
    if (r.dWeightGemm) grads[ctx.weight!] = r.dWeightGemm;
    if (r.dBias) grads[ctx.bias!] = r.dBias;
    if (!needDx) break; // nothing before this layer has parameters
    dy = r.dx!;
  }
  for (const p of params) if (!grads[p.name]) throw new Error(`buildGraph: no gradient for ${p.name} (rule table incomplete?)`);

  if (kind === 'gradients') {
    for (const p of params) {
      const g = grads[p.name];
      b.output(typeof g === 'string' ? g : gemmGradient(b, g), 'float32', p.shape, gradName(p.name));
    }
    return { kind, model: b.model({ docString: `${spec.preset} gradient graph` }), params, masks, hasVelocities };
  }

  for (const p of params) {
    const out = { weight: newName(p.name), velocity: hasVelocities ? newName(velocityName(p.name)) : undefined };
    lowerUpdate(b, optimizer!, p, { weight: p.name, lrGrad: grads[p.name], velocity: hasVelocities ? velocityName(p.name) : undefined, lr }, out);
    b.output(out.weight, 'float32', p.shape);
    if (out.velocity) b.output(out.velocity, 'float32', p.shape);
  }
  return { kind, model: b.model({ docString: `${spec.preset} training graph (forward, softmax-CE, backward, SGD update)` }), params, masks, hasVelocities };
}

interface LossTerms {
  /** [N, K] float one-hot labels, log-softmax of the logits, and the top-1 / top-k hit counts (scalars). */
  onehot: string;
  logp: string;
  top1Hits: string;
  topKHits: string;
}

/** With the ops the CPU runs fastest: int64 labels against class ids, LogSoftmax, TopK's indices. */
function lossTerms(b: GraphBuilder, logits: string, labels: string, numClasses: number, k: number): LossTerms {
  const labels64 = b.op('Unsqueeze', [b.op('Cast', [labels], { to: int(7) }), b.int64s([1])]); // [N, 1] int64
  const classIds = b.constant(
    Array.from({ length: numClasses }, (_, i) => i),
    [1, numClasses],
    'class_ids',
  );
  const onehot = b.op('Cast', [b.op('Equal', [labels64, classIds])], { to: int(1) }); // [N, K] float
  const logp = b.op('LogSoftmax', [logits], { axis: int(1) });
  const [, topIdx] = b.node('TopK', [logits, b.int64s([k])], { axis: int(1) }, { outputs: 2 });
  const hits = b.op('Cast', [b.op('Equal', [topIdx, labels64])], { to: int(1) }); // [N, k]
  const top1Hits = b.op('ReduceSum', [b.op('Slice', [hits, b.int64s([0]), b.int64s([1]), b.int64s([1])])], { keepdims: int(0) });
  const topKHits = b.op('ReduceSum', [hits], { keepdims: int(0) });
  return { onehot, logp, top1Hits, topKHits };
}

/**
 * The same terms without LogSoftmax and int64 (the WebGPU provider has no LogSoftmax kernel and
 * keeps int64 off the device): labels compared as floats (exact below 2^24 classes), log-softmax
 * as (z − max) − log Σ exp(z − max), and an image is a top-k hit when fewer than k classes score
 * strictly above its label. That equals TopK's answer except where the label's logit ties
 * another at the k-th place (TopK then prefers the lower class index; this counts the label in).
 */
function portableLossTerms(b: GraphBuilder, logits: string, labels: string, numClasses: number, k: number): LossTerms {
  const labelsF = b.op('Unsqueeze', [b.op('Cast', [labels], { to: int(1) }), b.int64s([1])]); // [N, 1] float
  const classIds = b.constant(
    Float32Array.from({ length: numClasses }, (_, i) => i),
    [1, numClasses],
    'class_ids',
  );
  const onehot = b.op('Cast', [b.op('Equal', [labelsF, classIds])], { to: int(1) }); // [N, K] float
  const shifted = b.op('Sub', [logits, b.op('ReduceMax', [logits], { axes: ints([1]), keepdims: int(1) })]);
  const logp = b.op('Sub', [shifted, b.op('Log', [b.op('ReduceSum', [b.op('Exp', [shifted]), b.int64s([1])], { keepdims: int(1) })])]);
  const labelLogit = b.op('ReduceSum', [b.op('Mul', [logits, onehot]), b.int64s([1])], { keepdims: int(1) }); // [N, 1]
  const above = b.op('ReduceSum', [b.op('Cast', [b.op('Greater', [logits, labelLogit])], { to: int(1) }), b.int64s([1])], { keepdims: int(0) }); // [N]
  const hitsWithin = (rank: number) => b.op('ReduceSum', [b.op('Cast', [b.op('Less', [above, b.scalar(rank - 0.5)])], { to: int(1) })], { keepdims: int(0) });
  return { onehot, logp, top1Hits: hitsWithin(1), topKHits: hitsWithin(k) };
}
