/**
 * The seed's optimizer step (DESIGN §7) in plain loops: the reference that the tfjs engine's
 * update and the ONNX training graph's update are both tested against.
 *
 * Per parameter tensor, with g its gradient of the mean loss and lr the step's learning rate:
 *   weights: g' = g + λ·W,  lr' = lr                       (λ = weightDecay)
 *   biases:  g' = g,        lr' = biasLrMultiplier · lr    (no decay)
 * then, exactly as theano_alexnet's train_funcs.py:
 *   momentum (useMomentum, !nesterov):  v ← μ·v − lr'·g';            W ← W + v
 *   Nesterov (useMomentum, nesterov):   v ← μ²·v − (1 + μ)·lr'·g';   W ← W + v
 *   plain SGD (!useMomentum):           W ← W − lr'·g';              v unchanged
 * In both momentum forms the stored velocity v is the step just applied. The Nesterov line is
 * the Sutskever/Lasagne update (v ← μv − lr'g', W ← W + μv − lr'g') with its two lines merged,
 * μ·(μv − lr'g') − lr'g' = μ²v − (1+μ)lr'g', and with the *applied step* stored as the velocity
 * (the seed's `vel_i_next = mu ** 2 * vel_i - (1 + mu) * real_lr * real_grad`). From zero
 * velocity the first step equals Lasagne's; later steps differ from it, and we follow the seed.
 */
import type { NamedTensors } from '@alexnet-stream/core';
import type { ParamInfo } from '@alexnet-stream/model-alexnet';
import type { OptimizerConfig } from '../../engine';

/** `weight` (decayed, lr) or `bias` (no decay, biasLrMultiplier·lr), as `parameterList` says. */
type ParamRole = ParamInfo['role'];

export interface SgdUpdate {
  weights: NamedTensors;
  velocities: NamedTensors;
}

/**
 * One update step. Inputs are not modified; arithmetic is float64, each result rounded once to
 * float32. Every name in `paramRoles` must be in weights, grads and velocities.
 */
export function sgdUpdateReference(
  weights: NamedTensors,
  grads: NamedTensors,
  velocities: NamedTensors,
  lr: number,
  optimizer: OptimizerConfig,
  paramRoles: Record<string, ParamRole>,
): SgdUpdate {
  const out: SgdUpdate = { weights: {}, velocities: {} };
  const mu = optimizer.momentum;
  for (const [name, role] of Object.entries(paramRoles)) {
    const w = weights[name],
      g = grads[name],
      v = velocities[name];
    if (!w || !g || !v) throw new Error(`sgdUpdateReference: ${name} missing from ${!w ? 'weights' : !g ? 'grads' : 'velocities'}`);
    if (g.length !== w.length || v.length !== w.length)
      throw new Error(`sgdUpdateReference: ${name}: sizes differ (weights ${w.length}, grads ${g.length}, velocities ${v.length})`);
    const decay = role === 'weight' ? optimizer.weightDecay : 0;
    const lrHere = role === 'weight' ? lr : optimizer.biasLrMultiplier * lr;
    const newW = new Float32Array(w.length);
    const newV = new Float32Array(w.length);
    for (let i = 0; i < w.length; i++) {
      const gEff = g[i] + decay * w[i];
      if (!optimizer.useMomentum) {
        newW[i] = w[i] - lrHere * gEff;
        newV[i] = v[i];
      } else {
        const step = optimizer.nesterov ? mu * mu * v[i] - (1 + mu) * lrHere * gEff : mu * v[i] - lrHere * gEff;
        newV[i] = step;
        newW[i] = w[i] + step;
      }
    }
    out.weights[name] = newW;
    out.velocities[name] = newV;
  }
  return out;
}
