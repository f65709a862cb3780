/**
 * Test-only helpers for the graph tests: a one-layer graph straight from the rule table, running
 * graphs in onnxruntime, float64 reference ops for finite differences, error measures.
 */
import type { Rng } from '@alexnet-stream/core';
import { alexnetSpec, inferShapes, type LayerSpec, type ModelSpec, type PresetName, type Shape } from '@alexnet-stream/model-alexnet';
import { GraphBuilder, encodeModel, loadOnnxRuntime, type ModelProto, type Ort } from '@alexnet-stream/onnx-export';
import { gemmGradient } from './update';
import { DEFAULT_LOWERING, type LoweringOptions, RULES, type Rule, type RuleContext } from './rules';

const ort = loadOnnxRuntime();

export const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

// Multiples of 16 per group, so that the NCHWc lowering (blocks of 8 or 16 channels) takes
// every convolution it can on any x86 CPU, as on the full AlexNet.
const REDUCED_WIDTHS: Record<string, number> = { conv1: 16, conv2: 32, conv3: 32, conv4: 32, conv5: 32, fc6: 48, fc7: 40 };

/** A preset with every layer narrowed (the spec is data), so that tfjs' pure-JS backward is quick. */
export function reducedSpec(preset: PresetName, inputSize = 67, numClasses = 10): ModelSpec {
  const spec = alexnetSpec(preset, { inputSize, numClasses });
  const layers = spec.layers.map((l): LayerSpec => {
    if (l.kind === 'conv' && REDUCED_WIDTHS[l.name]) return { ...l, outChannels: REDUCED_WIDTHS[l.name] };
    if (l.kind === 'fc' && REDUCED_WIDTHS[l.name]) return { ...l, outFeatures: REDUCED_WIDTHS[l.name] };
    return l;
  });
  const out = { ...spec, layers };
  inferShapes(out);
  return out;
}

export function randomArray(rng: Rng, size: number, scale = 1): Float32Array {
  const a = new Float32Array(size);
  for (let i = 0; i < size; i++) a[i] = scale * (2 * rng.nextFloat() - 1);
  return a;
}

/** max |a − b| / max |b|: one relative measure for a whole tensor. */
export function maxRelativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let maxDiff = 0,
    maxRef = 1e-30;
  for (let i = 0; i < b.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    maxRef = Math.max(maxRef, Math.abs(b[i]));
  }
  return maxDiff / maxRef;
}

export async function runModel(model: ModelProto, feeds: Record<string, Ort.Tensor>): Promise<Record<string, Float32Array>> {
  const session = await ort.InferenceSession.create(encodeModel(model), { graphOptimizationLevel: 'all', intraOpNumThreads: 1, logSeverityLevel: 3 });
  try {
    const out = await session.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await session.release();
  }
}

export interface OneLayer {
  model: ModelProto;
  /** Graph inputs: x, dy, and (by layer kind) weight, bias, mask. */
  inputs: Record<string, number[]>;
}

/**
 * A graph of one layer's rule: inputs `x` [N, …inShape], `dy` [N, …outShape] (and `weight`,
 * `bias`, `mask` as the layer needs); outputs `y` and the rule's `dx`, `dWeight`, `dBias`.
 */
export function oneLayerGraph(
  layer: LayerSpec,
  n: number,
  inShape: Shape,
  outShape: Shape,
  paramShapes?: { weight: number[]; bias: number[] },
  lowering: LoweringOptions = DEFAULT_LOWERING,
): OneLayer {
  const b = new GraphBuilder(`rule-${layer.kind}`);
  const inputs: Record<string, number[]> = { x: [n, ...inShape], dy: [n, ...outShape] };
  const ctx: RuleContext = { b, mode: 'train', lowering, inShape, outShape };
  b.input('x', 'float32', inputs.x);
  b.input('dy', 'float32', inputs.dy);
  if (paramShapes) {
    ctx.weight = b.input('weight', 'float32', (inputs.weight = paramShapes.weight));
    ctx.bias = b.input('bias', 'float32', (inputs.bias = paramShapes.bias));
  }
  if (layer.kind === 'dropout') ctx.mask = b.input('mask', 'float32', (inputs.mask = [n, ...outShape]));
  const rule = RULES[layer.kind] as Rule<typeof layer>;
  const f = rule.forward(ctx, layer, 'x');
  const r = rule.backward(ctx, layer, 'dy', f.saved, true);
  b.output(f.y, 'float32', inputs.dy, 'y');
  b.output(r.dx!, 'float32', inputs.x, 'dx');
  if (r.dWeight) b.output(r.dWeight, 'float32', inputs.weight, 'dWeight');
  if (r.dWeightGemm) b.output(gemmGradient(b, r.dWeightGemm), 'float32', inputs.weight, 'dWeight');
  if (r.dBias) b.output(r.dBias, 'float32', inputs.bias, 'dBias');
  return { model: b.model(), inputs };
}

// ---- float64 reference ops (NCHW, straight from the ONNX definitions) for finite differences ----

export function convF64(
  x: ArrayLike<number>,
  xShape: number[],
  w: ArrayLike<number>,
  b: ArrayLike<number>,
  out: number,
  k: number,
  s: number,
  p: number,
  g: number,
): Float64Array {
  const [n, c, h, wd] = xShape;
  const oh = Math.floor((h + 2 * p - k) / s) + 1,
    ow = Math.floor((wd + 2 * p - k) / s) + 1;
  const cg = c / g,
    og = out / g;
  const y = new Float64Array(n * out * oh * ow);
  for (let ni = 0; ni < n; ni++)
    for (let o = 0; o < out; o++)
      for (let yy = 0; yy < oh; yy++)
        for (let xx = 0; xx < ow; xx++) {
          let acc = b[o];
          for (let ci = 0; ci < cg; ci++) {
            const cin = Math.floor(o / og) * cg + ci;
            for (let ky = 0; ky < k; ky++) {
              const iy = yy * s - p + ky;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < k; kx++) {
                const ix = xx * s - p + kx;
                if (ix < 0 || ix >= wd) continue;
                acc += x[((ni * c + cin) * h + iy) * wd + ix] * w[((o * cg + ci) * k + ky) * k + kx];
              }
            }
          }
          y[((ni * out + o) * oh + yy) * ow + xx] = acc;
        }
  return y;
}

export function lrnF64(x: ArrayLike<number>, shape: number[], size: number, alpha: number, beta: number, bias: number): Float64Array {
  const [n, c, h, w] = shape;
  const hw = h * w,
    lo = Math.floor((size - 1) / 2),
    hi = Math.ceil((size - 1) / 2);
  const y = new Float64Array(n * c * hw);
  for (let ni = 0; ni < n; ni++)
    for (let ci = 0; ci < c; ci++)
      for (let q = 0; q < hw; q++) {
        let sq = 0;
        for (let cj = Math.max(0, ci - lo); cj <= Math.min(c - 1, ci + hi); cj++) sq += x[(ni * c + cj) * hw + q] ** 2;
        const i = (ni * c + ci) * hw + q;
        y[i] = x[i] / (bias + (alpha / size) * sq) ** beta;
      }
  return y;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * Central difference of f along a random direction v: (f(θ + h v) − f(θ − h v)) / 2h, which
 * equals ⟨∇f, v⟩ up to O(h²); compared with ⟨grad, v⟩ it checks the whole gradient at once.
 */
export function directionalDerivative(f: (theta: Float64Array) => number, theta: ArrayLike<number>, v: ArrayLike<number>, h = 1e-4): number {
  const plus = Float64Array.from(theta, (t, i) => t + h * v[i]);
  const minus = Float64Array.from(theta, (t, i) => t - h * v[i]);
  return (f(plus) - f(minus)) / (2 * h);
}
