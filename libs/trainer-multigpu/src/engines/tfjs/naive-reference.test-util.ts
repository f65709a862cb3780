/**
 * Test-only: the model spec evaluated by plain nested loops in float64, NCHW throughout, each
 * op written straight from its ONNX definition. It shares no code with the tfjs lowering, so
 * agreement between the two is evidence, and in float64 it is precise enough to take central
 * finite differences of the loss.
 */
import { Rng } from '@alexnet-stream/core';
import { type ModelSpec, parameterList, type InitRule } from '@alexnet-stream/model-alexnet';

export type Arr = Float64Array | Float32Array;
export interface Act {
  data: Float64Array;
  shape: number[];
} // NCHW or [N, F]

export function conv2dNaive(x: Act, w: Arr, b: Arr, outChannels: number, kernel: number, stride: number, pad: number, group: number): Act {
  const [n, c, h, wd] = x.shape;
  const oh = Math.floor((h + 2 * pad - kernel) / stride) + 1;
  const ow = Math.floor((wd + 2 * pad - kernel) / stride) + 1;
  const cinG = c / group,
    coutG = outChannels / group;
  const out = new Float64Array(n * outChannels * oh * ow);
  for (let ni = 0; ni < n; ni++)
    for (let o = 0; o < outChannels; o++) {
      const g = Math.floor(o / coutG);
      for (let y = 0; y < oh; y++)
        for (let xo = 0; xo < ow; xo++) {
          let s = b[o];
          for (let ci = 0; ci < cinG; ci++) {
            const cIn = g * cinG + ci;
            for (let ky = 0; ky < kernel; ky++) {
              const iy = y * stride - pad + ky;
              if (iy < 0 || iy >= h) continue; // zero padding
              for (let kx = 0; kx < kernel; kx++) {
                const ix = xo * stride - pad + kx;
                if (ix < 0 || ix >= wd) continue;
                s += x.data[((ni * c + cIn) * h + iy) * wd + ix] * w[((o * cinG + ci) * kernel + ky) * kernel + kx];
              }
            }
          }
          out[((ni * outChannels + o) * oh + y) * ow + xo] = s;
        }
    }
  return { data: out, shape: [n, outChannels, oh, ow] };
}

export function maxPoolNaive(x: Act, kernel: number, stride: number, pad: number): Act {
  const [n, c, h, wd] = x.shape;
  const oh = Math.floor((h + 2 * pad - kernel) / stride) + 1;
  const ow = Math.floor((wd + 2 * pad - kernel) / stride) + 1;
  const out = new Float64Array(n * c * oh * ow);
  for (let p = 0; p < n * c; p++)
    for (let y = 0; y < oh; y++)
      for (let xo = 0; xo < ow; xo++) {
        let m = -Infinity;
        for (let ky = 0; ky < kernel; ky++)
          for (let kx = 0; kx < kernel; kx++) {
            const iy = y * stride - pad + ky,
              ix = xo * stride - pad + kx;
            if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue; // padding never wins
            m = Math.max(m, x.data[(p * h + iy) * wd + ix]);
          }
        out[(p * oh + y) * ow + xo] = m;
      }
  return { data: out, shape: [n, c, oh, ow] };
}

/** ONNX LRN: x / (bias + alpha/size · Σ_{c' ∈ [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉]} x²)^beta. */
export function lrnNaive(x: Act, size: number, alpha: number, beta: number, bias: number): Act {
  const [n, c, h, wd] = x.shape;
  const hw = h * wd;
  const out = new Float64Array(x.data.length);
  const lo = Math.floor((size - 1) / 2),
    hi = Math.ceil((size - 1) / 2);
  for (let ni = 0; ni < n; ni++)
    for (let ci = 0; ci < c; ci++)
      for (let p = 0; p < hw; p++) {
        let sq = 0;
        for (let cj = Math.max(0, ci - lo); cj <= Math.min(c - 1, ci + hi); cj++) sq += x.data[(ni * c + cj) * hw + p] ** 2;
        const i = (ni * c + ci) * hw + p;
        out[i] = x.data[i] / (bias + (alpha / size) * sq) ** beta;
      }
  return { data: out, shape: x.shape };
}

export function fcNaive(x: Act, w: Arr, b: Arr, outFeatures: number): Act {
  const [n, f] = x.shape;
  const out = new Float64Array(n * outFeatures);
  for (let ni = 0; ni < n; ni++)
    for (let o = 0; o < outFeatures; o++) {
      let s = b[o];
      for (let i = 0; i < f; i++) s += x.data[ni * f + i] * w[o * f + i];
      out[ni * outFeatures + o] = s;
    }
  return { data: out, shape: [n, outFeatures] };
}

/** Forward of the whole spec; `masks` (keep masks, NCHW / [N, F]) turn dropout on. */
export function naiveForward(spec: ModelSpec, weights: Record<string, Arr>, input: Arr, n: number, masks?: Record<string, Arr>): Act {
  let x: Act = { data: Float64Array.from(input), shape: [n, spec.inputChannels, spec.inputSize, spec.inputSize] };
  for (const l of spec.layers) {
    switch (l.kind) {
      case 'conv':
        x = conv2dNaive(x, weights[`${l.name}.weight`], weights[`${l.name}.bias`], l.outChannels, l.kernel, l.stride, l.pad, l.group);
        break;
      case 'relu':
        x = { data: x.data.map((v) => Math.max(v, 0)), shape: x.shape };
        break;
      case 'maxpool':
        x = maxPoolNaive(x, l.kernel, l.stride, l.pad);
        break;
      case 'lrn':
        x = lrnNaive(x, l.size, l.alpha, l.beta, l.bias);
        break;
      case 'flatten':
        x = { data: x.data, shape: [x.shape[0], x.data.length / x.shape[0]] };
        break; // NCHW memory order
      case 'fc':
        x = fcNaive(x, weights[`${l.name}.weight`], weights[`${l.name}.bias`], l.outFeatures);
        break;
      case 'dropout': {
        const m = masks?.[l.name];
        if (m) x = { data: x.data.map((v, i) => (v * m[i]) / (1 - l.rate)), shape: x.shape };
        break;
      }
    }
  }
  return x;
}

/** Mean softmax cross-entropy (log-sum-exp, float64). */
export function softmaxCrossEntropyNaive(logits: Act, labels: ArrayLike<number>): number {
  const [n, k] = logits.shape;
  let total = 0;
  for (let i = 0; i < n; i++) {
    let m = -Infinity;
    for (let j = 0; j < k; j++) m = Math.max(m, logits.data[i * k + j]);
    let s = 0;
    for (let j = 0; j < k; j++) s += Math.exp(logits.data[i * k + j] - m);
    total += m + Math.log(s) - logits.data[i * k + labels[i]];
  }
  return total / n;
}

/**
 * A deterministic local init for tests: the spec's rules with `normal` drawn as a uniform of the
 * same mean and std (one 32-bit draw per value: full-width fc7 has 16.7M values), std × scale.
 */
export function initWeightsForTest(spec: ModelSpec, seed: number, scale = 1): Record<string, Float32Array> {
  const rng = new Rng(seed);
  const out: Record<string, Float32Array> = {};
  let fanIn = 1; // of the layer's weight (PyTorch uses it for the bias too)
  for (const p of parameterList(spec)) {
    const size = p.shape.reduce((a, b) => a * b, 1);
    if (p.role === 'weight') fanIn = size / p.shape[0];
    const a = new Float32Array(size);
    const rule: InitRule = p.init;
    for (let i = 0; i < size; i++) {
      if (rule.dist === 'normal') a[i] = (rule.mean ?? 0) + rule.std * scale * Math.sqrt(3) * (2 * (rng.nextUint32() / 4294967296) - 1);
      else if (rule.dist === 'constant') a[i] = rule.value;
      else a[i] = (2 * rng.nextFloat() - 1) / Math.sqrt(fanIn);
    }
    out[p.name] = a;
  }
  return out;
}

export function randomArray(rng: Rng, size: number, scale = 1): Float32Array {
  const a = new Float32Array(size);
  for (let i = 0; i < size; i++) a[i] = scale * (2 * rng.nextFloat() - 1);
  return a;
}

/** max |a − b| / max(max |b|, floor): one relative measure for a whole tensor. */
export function maxRelativeError(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-12): number {
  let maxDiff = 0,
    maxRef = floor;
  for (let i = 0; i < b.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    maxRef = Math.max(maxRef, Math.abs(b[i]));
  }
  return maxDiff / maxRef;
}
