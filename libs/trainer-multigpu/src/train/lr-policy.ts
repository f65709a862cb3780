/**
 * Learning-rate policies, as pure functions of what has happened so far, so that a resumed run
 * recomputes exactly the lr the uninterrupted one had. Two layers:
 *
 * 1. The *base* lr (`TrainState.lr`, saved in checkpoints): the seed's policies (DESIGN §7)
 *    change it after an epoch (`lrAfterEpoch`); `--resume --lr` replaces it.
 * 2. The lr of each step (`lrAtIteration`), a pure function of the base lr and the step's
 *    global iteration index: a linear warm-up (`lr_warmup_epochs`) under any policy, and under
 *    `cosine`/`poly` the decay from the base lr to `lr_min` over the run's `n_epochs`. Nothing
 *    else is remembered, so resume, `steps_per_run` groups and several workers (who share the
 *    iteration count) all give each step the same float32 lr.
 *
 * The seed's policies:
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
  lr_policy: 'step' | 'auto' | 'cosine' | 'poly';
  lr_step: number[];
  lr_adapt_threshold: number;
}

export interface LrScheduleConfig extends LrPolicyConfig {
  n_epochs: number;
  lr_warmup_epochs: number;
  lr_min: number;
  lr_power: number;
}

/** Warm-up iterations: `lr_warmup_epochs` epochs' worth, rounded, at least 1 when any is asked for. */
export function warmupIterations(config: Pick<LrScheduleConfig, 'lr_warmup_epochs'>, iterationsPerEpoch: number): number {
  if (!(config.lr_warmup_epochs > 0)) return 0;
  return Math.max(1, Math.round(config.lr_warmup_epochs * iterationsPerEpoch));
}

/** Does this schedule need to know the epoch length (warm-up in epochs, a decay over n_epochs)? */
export function scheduleNeedsEpochLength(config: Pick<LrScheduleConfig, 'lr_policy' | 'lr_warmup_epochs'>): boolean {
  return config.lr_warmup_epochs > 0 || config.lr_policy === 'cosine' || config.lr_policy === 'poly';
}

/**
 * The lr of the step with 0-based global index `iteration`, from the base lr `baseLr`:
 *
 *   warm-up (W = warmupIterations > 0, t < W):  baseLr · (t + 1) / W
 *   step, auto (after warm-up):                 baseLr
 *   cosine:  lr_min + (baseLr − lr_min) · (1 + cos(π·p)) / 2,   p = (t − W) / (T − W)
 *   poly:    lr_min + (baseLr − lr_min) · (1 − p)^lr_power
 *
 * with T = n_epochs · iterationsPerEpoch. Rounded to float32 (the graph's lr input). The
 * decay's first step is at baseLr and its last one (t = T − 1) just above lr_min.
 */
export function lrAtIteration(config: LrScheduleConfig, baseLr: number, iteration: number, iterationsPerEpoch: number): number {
  if (!scheduleNeedsEpochLength(config)) return baseLr;
  if (!(iterationsPerEpoch > 0 && Number.isFinite(iterationsPerEpoch))) {
    throw new RangeError(
      `lrAtIteration: lr_policy ${config.lr_policy} with lr_warmup_epochs ${config.lr_warmup_epochs} needs a finite epoch length, got ${iterationsPerEpoch}`,
    );
  }
  const warmup = warmupIterations(config, iterationsPerEpoch);
  if (iteration < warmup) return Math.fround((baseLr * (iteration + 1)) / warmup);
  if (config.lr_policy === 'step' || config.lr_policy === 'auto') return baseLr;
  const total = config.n_epochs * iterationsPerEpoch;
  const p = total > warmup ? Math.min(1, (iteration - warmup) / (total - warmup)) : 1;
  const factor = config.lr_policy === 'cosine' ? (1 + Math.cos(Math.PI * p)) / 2 : (1 - p) ** config.lr_power;
  return Math.fround(config.lr_min + (baseLr - config.lr_min) * factor);
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
  // cosine / poly change the lr per iteration (lrAtIteration), never the base lr.
  if (config.lr_policy === 'cosine' || config.lr_policy === 'poly') return { lr, changed: false };
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
