/**
 * The seed's learning-rate policies (DESIGN §7), as pure functions of what has happened so far,
 * so that a resumed run recomputes exactly the lr the uninterrupted one had.
 *
 * - `step`: after epoch e completes, when e is in `lr_step`, lr ← lr / 10.
 * - `auto`: after epoch e completes, lr ← lr / 10 when the top-1 validation error fell by less
 *   than `lr_adapt_threshold` over the last two epochs (the seed compares `val_record[-3]` with
 *   `val_record[-1]`). Two epochs must have passed at the current lr before it is judged again,
 *   so one plateau does not divide it twice in a row.
 *
 * The seed keeps lr in a float32 shared variable, so every division is rounded to float32
 * (`Math.fround`): 0.01/10/10 is then the same number here and in the seed.
 */
export interface LrPolicyConfig {
  lr_policy: 'step' | 'auto';
  lr_step: number[];
  lr_adapt_threshold: number;
}

export interface LrDecision {
  lr: number;
  changed: boolean;
  reason?: string;
}

/**
 * The lr for the epoch after `epochCompleted` (1-based). `top1History` holds the top-1
 * validation errors of epochs 1..epochCompleted; `lastChangeEpoch` is the epoch after which lr
 * last changed (0: never).
 */
export function lrAfterEpoch(config: LrPolicyConfig, lr: number, epochCompleted: number, top1History: number[], lastChangeEpoch: number): LrDecision {
  if (config.lr_policy === 'step') {
    if (config.lr_step.includes(epochCompleted)) {
      return { lr: Math.fround(lr / 10), changed: true, reason: `epoch ${epochCompleted} is in lr_step` };
    }
    return { lr, changed: false };
  }
  const n = top1History.length;
  if (n < 3 || epochCompleted - lastChangeEpoch < 2) return { lr, changed: false };
  const improvement = top1History[n - 3] - top1History[n - 1];
  if (improvement < config.lr_adapt_threshold) {
    return {
      lr: Math.fround(lr / 10),
      changed: true,
      reason: `top-1 error fell by ${improvement.toFixed(4)} over two epochs (< lr_adapt_threshold ${config.lr_adapt_threshold})`,
    };
  }
  return { lr, changed: false };
}
