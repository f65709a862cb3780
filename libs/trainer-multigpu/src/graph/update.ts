/**
 * The seed's SGD update (DESIGN §7) as ONNX nodes, for one parameter, exactly
 * `sgdUpdateReference` (engines/tfjs/sgd-reference.ts, whose comment explains the seed's
 * Nesterov form):
 *
 *   g̃ = g + λ·W              (λ on weights only; biases have no decay)
 *   momentum:  V' = μ·V − lr_p·g̃,             W' = W + V'
 *   nesterov:  V' = μ²·V − (1 + μ)·lr_p·g̃,    W' = W + V'
 *   plain SGD: W' = W − lr_p·g̃                (no velocity)
 *
 * with lr_p = lr for weights and biasLrMultiplier·lr for biases.
 *
 * Few passes over big tensors: the training graph seeds the backward pass with lr·dLoss, so
 * gradients arrive already scaled by lr (the backward is linear in its seed); for fc weights the
 * gradient Gemm (dW = dYᵀ·X) also takes the velocity as its C input (alpha = −(1 + μ or 1),
 * beta = μ² or μ), so fc6's 38M-element update is that Gemm plus Mul, Sub (decay) and Add.
 * Results are written straight into the graph outputs named in `out` (no Identity copies).
 */
import type { ParamInfo } from '@alexnet-stream/model-alexnet';
import { type GraphBuilder, float, int } from '@alexnet-stream/onnx-export';
import type { OptimizerConfig } from '../engine';

export interface UpdateValues {
  weight: string;
  /** lr·g: a value, or the fc form lr·g = dYᵀ·X with dY seeded by lr. */
  lrGrad: string | { dy: string; x: string };
  velocity?: string;
  /** Scalar learning-rate input. */
  lr: string;
}

export interface UpdateOutputs {
  weight: string;
  velocity?: string;
}

/** dW = dYᵀ·X as a value (gradient graphs, tests). */
export function gemmGradient(b: GraphBuilder, factors: { dy: string; x: string }): string {
  return b.op('Gemm', [factors.dy, factors.x], { transA: int(1) });
}

export function lowerUpdate(b: GraphBuilder, opt: OptimizerConfig, p: ParamInfo, v: UpdateValues, out: UpdateOutputs): void {
  const isWeight = p.role === 'weight';
  const lrMultiplier = isWeight ? 1 : opt.biasLrMultiplier;
  const decay = isWeight ? opt.weightDecay : 0;
  // target = keep·base − gradScale·(lr·g) − gradScale·lr·λ·W, base = V (momentum) or W (SGD)
  const momentum = opt.useMomentum;
  const keep = !momentum ? 1 : opt.nesterov ? opt.momentum * opt.momentum : opt.momentum;
  const gradScale = (momentum && opt.nesterov ? 1 + opt.momentum : 1) * lrMultiplier;
  const base = momentum ? v.velocity! : v.weight;
  const target = momentum ? out.velocity! : out.weight;
  const decayTerm = () => b.op('Mul', [v.weight, b.op('Mul', [v.lr, b.scalar((momentum && opt.nesterov ? 1 + opt.momentum : 1) * decay)])]);
  let t: string;
  if (typeof v.lrGrad === 'object') {
    t = b.op('Gemm', [v.lrGrad.dy, v.lrGrad.x, base], { transA: int(1), alpha: float(-gradScale), beta: float(keep) }, decay === 0 ? target : undefined);
  } else {
    const keptBase = keep === 1 ? base : b.op('Mul', [base, b.scalar(keep)]);
    const step = gradScale === 1 ? v.lrGrad : b.op('Mul', [v.lrGrad, b.scalar(gradScale)]);
    t = b.op('Sub', [keptBase, step], {}, decay === 0 ? target : undefined);
  }
  if (decay !== 0) b.op('Sub', [t, decayTerm()], {}, target);
  if (momentum) b.op('Add', [v.weight, out.velocity!], {}, out.weight);
}
