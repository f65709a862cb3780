/**
 * The seed's SGD update (DESIGN §7) as ONNX nodes, for one parameter:
 *
 *   g̃ = g + λ·W              (λ on weights only; biases have no decay)
 *   momentum:  V' = μ·V − lr_p·g̃,             W' = W + V'
 *   nesterov:  V' = μ²·V − (1 + μ)·lr_p·g̃,    W' = W + V'
 *   plain SGD: W' = W − lr_p·g̃                (no velocity)
 *
 * with lr_p = lr for weights and biasLrMultiplier·lr for biases: exactly `sgdUpdateReference`
 * (engines/tfjs/sgd-reference.ts), whose comment explains the seed's Nesterov form. Results
 * are written straight into the graph outputs named in `out` (no Identity copies of 244 MB).
 */
import type { ParamInfo } from '@alexnet-stream/model-alexnet';
import type { GraphBuilder } from '@alexnet-stream/onnx-export';
import type { OptimizerConfig } from '../engine';

export interface UpdateValues {
  weight: string;
  grad: string;
  velocity?: string;
  /** Scalar learning-rate input. */
  lr: string;
}

export interface UpdateOutputs {
  weight: string;
  velocity?: string;
}

export function lowerUpdate(b: GraphBuilder, opt: OptimizerConfig, p: ParamInfo, v: UpdateValues, out: UpdateOutputs): void {
  const isWeight = p.role === 'weight';
  const lrP = isWeight || opt.biasLrMultiplier === 1 ? v.lr : b.op('Mul', [v.lr, b.scalar(opt.biasLrMultiplier)]);
  const decayed = isWeight && opt.weightDecay !== 0 ? b.op('Add', [v.grad, b.op('Mul', [v.weight, b.scalar(opt.weightDecay)])]) : v.grad;
  const step = b.op('Mul', [decayed, lrP]); // lr_p·g̃
  if (!opt.useMomentum) {
    b.op('Sub', [v.weight, step], {}, out.weight);
    return;
  }
  const mu = opt.nesterov ? opt.momentum * opt.momentum : opt.momentum;
  const scaledStep = opt.nesterov ? b.op('Mul', [step, b.scalar(1 + opt.momentum)]) : step;
  const vNew = b.op('Sub', [b.op('Mul', [v.velocity!, b.scalar(mu)]), scaledStep], {}, out.velocity);
  b.op('Add', [v.weight, vNew], {}, out.weight);
}
