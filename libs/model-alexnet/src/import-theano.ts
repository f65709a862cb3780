/**
 * The seed's weight files (theano_alexnet `lib/tools.py` `save_weights`), read and written.
 *
 * Layout: one `.npy` per tensor in one folder, named by the layer's index i in the seed's layer
 * list (0-4 conv1-conv5, 5-6 fc6-fc7, 7 the softmax layer = our fc8) and the epoch N:
 *
 *   W_i_N.npy, b_i_N.npy                     an ungrouped layer
 *   W0_i_N.npy, W1_i_N.npy, b0_i_N.npy, b1_i_N.npy
 *                                            a layer with group 2 (conv2, conv4, conv5): the two
 *                                            halves along both input and output channels
 *
 * Conv W is c01b `(in/group, kh, kw, out/group)`; OIHW is its transpose (3, 0, 1, 2). Theano's
 * cuDNN `dnn_conv` (the seed's default `lib_conv`) runs with `conv_mode='conv'`: a true
 * convolution, whose kernels are spatially flipped relative to the cross-correlation of ONNX,
 * Caffe and PyTorch; so by default kernels are flipped on the way in and out (`flip: false`
 * for weights from a cross-correlating backend such as cuda-convnet). Fc W is `(n_in, n_out)`
 * (`T.dot(x, W)`); ours is `[out, in]`. Both fc6 layouts flatten channel-major (C, H, W): the
 * seed flattens `conv5.dimshuffle(3, 0, 1, 2)` (b01c → bc01), so no reordering of fc6's inputs.
 *
 * The mapping is by parameter-layer index, so any spec whose conv/fc layers match the files
 * (the seed's is `theano-alexnet`) imports; groups other than 1 and 2 have no seed layout.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  check,
  decodeNpy,
  encodeNpy,
  InputError,
  makeDirectorySync,
  meanImageProblem,
  type NamedTensors,
  type NpyArray,
  readUserFileSync,
  writeFileAtomicSync,
} from '@alexnet-stream/core';
import { inferShapes, type ModelSpec, type ParamLayer } from './spec';
import { describeSpec, validateWeights } from './weights-file';

export interface TheanoLayoutOptions {
  /** Flip conv kernels spatially (true convolution <-> cross-correlation). Default true. */
  flip?: boolean;
}

/** One seed file and where its values go. */
export interface TheanoFile {
  /** e.g. `W0_1_5.npy` */
  file: string;
  /** Our parameter it fills (`conv2.weight`). */
  param: string;
  /** Group index (0 or 1) of a grouped layer, 0 otherwise. */
  groupIndex: number;
  /** The shape the seed stores it with. */
  shape: number[];
}

interface LayerInfo {
  layer: ParamLayer;
  index: number;
  inChannels: number;
}

function paramLayers(spec: ModelSpec): LayerInfo[] {
  const out: LayerInfo[] = [];
  for (const { layer, input } of inferShapes(spec)) {
    if (layer.kind !== 'conv' && layer.kind !== 'fc') continue;
    if (layer.kind === 'conv' && layer.group !== 1 && layer.group !== 2) {
      throw new InputError(`${layer.name}: group ${layer.group} has no theano_alexnet file layout (the seed knows groups 1 and 2)`, {
        code: 'ERR_THEANO_WEIGHTS',
      });
    }
    out.push({ layer, index: out.length, inChannels: input[0] });
  }
  return out;
}

/** Every file of the seed's layout for `spec` at `epoch`, in layer order. */
export function theanoFiles(spec: ModelSpec, epoch: number): TheanoFile[] {
  const files: TheanoFile[] = [];
  for (const { layer, index, inChannels } of paramLayers(spec)) {
    if (layer.kind === 'fc') {
      files.push({ file: `W_${index}_${epoch}.npy`, param: `${layer.name}.weight`, groupIndex: 0, shape: [inChannels, layer.outFeatures] });
      files.push({ file: `b_${index}_${epoch}.npy`, param: `${layer.name}.bias`, groupIndex: 0, shape: [layer.outFeatures] });
      continue;
    }
    const inPerGroup = inChannels / layer.group;
    const outPerGroup = layer.outChannels / layer.group;
    const c01b = [inPerGroup, layer.kernel, layer.kernel, outPerGroup];
    if (layer.group === 1) {
      files.push({ file: `W_${index}_${epoch}.npy`, param: `${layer.name}.weight`, groupIndex: 0, shape: c01b });
      files.push({ file: `b_${index}_${epoch}.npy`, param: `${layer.name}.bias`, groupIndex: 0, shape: [outPerGroup] });
    } else {
      for (const g of [0, 1]) files.push({ file: `W${g}_${index}_${epoch}.npy`, param: `${layer.name}.weight`, groupIndex: g, shape: c01b });
      for (const g of [0, 1]) files.push({ file: `b${g}_${index}_${epoch}.npy`, param: `${layer.name}.bias`, groupIndex: g, shape: [outPerGroup] });
    }
  }
  return files;
}

/** Epochs for which `dir` holds the first layer's weights (`W_0_N.npy` or `W0_0_N.npy`), ascending. */
export function theanoEpochs(dir: string): number[] {
  if (!existsSync(dir)) return [];
  const epochs = new Set<number>();
  for (const name of readdirSync(dir)) {
    const m = /^W0?_0_(\d+)\.npy$/.exec(name);
    if (m) epochs.add(Number(m[1]));
  }
  return [...epochs].sort((a, b) => a - b);
}

/** Room for an .npy header (a few hundred bytes in practice; the format allows more). */
const NPY_HEADER_ALLOWANCE = 1 << 20;

/** What a seed .npy of `shape` may take: float64 (the widest dtype read) plus a header. */
const npyBound = (shape: number[]): number => NPY_HEADER_ALLOWANCE + 8 * shape.reduce((a, b) => a * b, 1);
/** A mean image (`--mean`) of up to 3x8192x8192 float64, or a bias of up to ~8M classes. */
const MAX_OTHER_NPY_BYTES = npyBound([3, 8192, 8192]);

/**
 * A .npy file a user named: a regular file of at most `maxBytes` (what its expected shape takes),
 * so that a FIFO, /dev/zero or a file far larger than the layer never takes memory; its dtype
 * and exact shape are checked by the caller.
 */
function readNpy(path: string, what: string, maxBytes: number): NpyArray {
  return decodeNpy(readUserFileSync(path, what, maxBytes), path);
}

/** float32 as is, float64 rounded to float32 (Theano's floatX may have been float64). */
function asFloat32(arr: NpyArray, path: string): Float32Array {
  if (arr.data instanceof Float32Array) return arr.data;
  if (arr.data instanceof Float64Array) return Float32Array.from(arr.data);
  throw new InputError(`${path}: dtype ${arr.dtype}, expected float32 weights`, { code: 'ERR_THEANO_WEIGHTS' });
}

const shapeText = (shape: number[]) => `(${shape.join(', ')})`;

/**
 * Read `spec`'s weights from the seed's files in `dir` at `epoch`. Every file is read and
 * checked (exists, a valid .npy, float32/64, the exact shape) before anything is returned; a
 * problem is an InputError naming the file and what was expected.
 */
export function importTheanoNpy(dir: string, epoch: number, spec: ModelSpec, options: TheanoLayoutOptions = {}): NamedTensors {
  check.integer('epoch', epoch, { min: 0 });
  const flip = options.flip ?? true;
  const layers = paramLayers(spec);
  const files = theanoFiles(spec, epoch);
  const missing = files.filter((f) => !existsSync(join(dir, f.file)));
  if (missing.length) {
    const epochs = theanoEpochs(dir);
    const have = epochs.length ? `epochs found there: ${epochs.join(', ')}` : 'no W_0_N.npy / W0_0_N.npy files there at all';
    throw new InputError(
      `${join(dir, missing[0].file)}: missing${
        missing.length > 1
          ? ` (and ${missing.length - 1} more: ${missing
              .slice(1)
              .map((f) => f.file)
              .join(', ')})`
          : ''
      }; ${have}`,
      { code: 'ERR_THEANO_WEIGHTS' },
    );
  }
  const weights: NamedTensors = {};
  for (const { layer, inChannels } of layers) {
    const mine = files.filter((f) => f.param.startsWith(`${layer.name}.`));
    const parts = mine.map((f) => {
      const path = join(dir, f.file);
      const arr = readNpy(path, 'weights file', npyBound(f.shape));
      if (shapeText(arr.shape) !== shapeText(f.shape)) {
        const role = f.param.endsWith('.weight') ? (layer.kind === 'conv' ? ' (in/group, kh, kw, out/group)' : ' (n_in, n_out)') : '';
        throw new InputError(`${path}: shape ${shapeText(arr.shape)}, but ${f.param} of the ${describeSpec(spec)} model needs ${shapeText(f.shape)}${role}`, {
          code: 'ERR_THEANO_WEIGHTS',
        });
      }
      return { ...f, data: asFloat32(arr, path) };
    });
    const wParts = parts.filter((p) => p.param.endsWith('.weight'));
    const bParts = parts.filter((p) => p.param.endsWith('.bias'));
    if (layer.kind === 'fc') {
      weights[`${layer.name}.weight`] = transpose2d(wParts[0].data, inChannels, layer.outFeatures);
    } else {
      weights[`${layer.name}.weight`] = c01bGroupsToOihw(
        wParts.map((p) => p.data),
        inChannels / layer.group,
        layer.kernel,
        layer.outChannels / layer.group,
        flip,
      );
    }
    const bias = new Float32Array(bParts.reduce((n, p) => n + p.data.length, 0));
    let at = 0;
    for (const p of bParts) {
      bias.set(p.data, at);
      at += p.data.length;
    }
    weights[`${layer.name}.bias`] = bias;
  }
  validateWeights(spec, weights, dir);
  return weights;
}

/**
 * Write `weights` in the seed's layout (the inverse of `importTheanoNpy`; each file atomically).
 * Returns the file paths written.
 */
export function exportTheanoNpy(spec: ModelSpec, weights: NamedTensors, dir: string, epoch: number, options: TheanoLayoutOptions = {}): string[] {
  const flip = options.flip ?? true;
  validateWeights(spec, weights, 'weights to export');
  makeDirectorySync(dir, 'output folder'); // not Node's recursive mkdir: it loops forever under /proc
  const written: string[] = [];
  const files = theanoFiles(spec, epoch);
  for (const { layer, inChannels } of paramLayers(spec)) {
    const mine = files.filter((f) => f.param.startsWith(`${layer.name}.`));
    const w = weights[`${layer.name}.weight`];
    const b = weights[`${layer.name}.bias`];
    for (const f of mine) {
      let data: Float32Array;
      if (f.param.endsWith('.bias')) {
        data = b.slice(f.groupIndex * f.shape[0], (f.groupIndex + 1) * f.shape[0]);
      } else if (layer.kind === 'fc') {
        data = transpose2d(w, layer.outFeatures, inChannels);
      } else {
        data = oihwToC01bGroup(w, f.groupIndex, inChannels / layer.group, layer.kernel, layer.outChannels / layer.group, flip);
      }
      const path = join(dir, f.file);
      writeFileAtomicSync(path, encodeNpy(data, f.shape));
      written.push(path);
    }
  }
  return written;
}

/** `[rows, cols]` row-major → `[cols, rows]`, in cache-friendly tiles (fc6 is 9216x4096). */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  const T = 64;
  for (let r0 = 0; r0 < rows; r0 += T) {
    const r1 = Math.min(rows, r0 + T);
    for (let c0 = 0; c0 < cols; c0 += T) {
      const c1 = Math.min(cols, c0 + T);
      for (let r = r0; r < r1; r++) {
        const row = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = src[row + c];
      }
    }
  }
  return out;
}

/**
 * Groups of c01b kernels `(in, k, k, out)` → one OIHW `[groups·out, in, k, k]` (groups stacked
 * along O), flipping both spatial axes when `flip`.
 */
function c01bGroupsToOihw(groups: Float32Array[], inPerGroup: number, k: number, outPerGroup: number, flip: boolean): Float32Array {
  const out = new Float32Array(groups.length * outPerGroup * inPerGroup * k * k);
  groups.forEach((src, g) => {
    for (let o = 0; o < outPerGroup; o++) {
      const oBase = (g * outPerGroup + o) * inPerGroup * k * k;
      for (let c = 0; c < inPerGroup; c++) {
        for (let y = 0; y < k; y++) {
          const sy = flip ? k - 1 - y : y;
          for (let x = 0; x < k; x++) {
            const sx = flip ? k - 1 - x : x;
            out[oBase + (c * k + y) * k + x] = src[((c * k + sy) * k + sx) * outPerGroup + o];
          }
        }
      }
    }
  });
  return out;
}

/** The inverse: group `g` of an OIHW weight as c01b `(in, k, k, out)`. */
function oihwToC01bGroup(w: Float32Array, g: number, inPerGroup: number, k: number, outPerGroup: number, flip: boolean): Float32Array {
  const out = new Float32Array(inPerGroup * k * k * outPerGroup);
  for (let o = 0; o < outPerGroup; o++) {
    const oBase = (g * outPerGroup + o) * inPerGroup * k * k;
    for (let c = 0; c < inPerGroup; c++) {
      for (let y = 0; y < k; y++) {
        const sy = flip ? k - 1 - y : y;
        for (let x = 0; x < k; x++) {
          const sx = flip ? k - 1 - x : x;
          out[((c * k + sy) * k + sx) * outPerGroup + o] = w[oBase + (c * k + y) * k + x];
        }
      }
    }
  }
  return out;
}

/** The class count the seed's files at `epoch` were trained for: the length of the last layer's bias. */
export function theanoNumClasses(dir: string, epoch: number, lastLayerIndex = 7): number {
  const path = join(dir, `b_${lastLayerIndex}_${epoch}.npy`);
  if (!existsSync(path)) {
    const epochs = theanoEpochs(dir);
    throw new InputError(
      `${path}: missing (the softmax layer's bias); ${epochs.length ? `epochs found there: ${epochs.join(', ')}` : 'no seed weight files there at all'}`,
      { code: 'ERR_THEANO_WEIGHTS' },
    );
  }
  const arr = readNpy(path, 'weights file', MAX_OTHER_NPY_BYTES);
  if (arr.shape.length !== 1) throw new InputError(`${path}: shape ${shapeText(arr.shape)}, expected a bias vector (classes,)`, { code: 'ERR_THEANO_WEIGHTS' });
  return arr.shape[0];
}

/** The seed saves its learning rate per epoch as a 0-d array `lr_N.npy`; undefined when absent. */
export function theanoLearningRate(dir: string, epoch: number): number | undefined {
  const path = join(dir, `lr_${epoch}.npy`);
  if (!existsSync(path)) return undefined;
  const arr = readNpy(path, 'learning rate file', npyBound([1]));
  if (arr.data.length !== 1 || typeof arr.data[0] !== 'number') {
    throw new InputError(`${path}: expected one float (the learning rate), got shape ${shapeText(arr.shape)} ${arr.dtype}`, { code: 'ERR_THEANO_WEIGHTS' });
  }
  return arr.data[0];
}

export interface ImportedMeanImage {
  /** float32 CHW */
  data: Float32Array;
  shape: [number, number, number];
  /** Set when the file needed converting (HWC layout, another dtype): say so to the user. */
  notice?: string;
}

/**
 * A mean image as our `mean.npy` wants it: float32 `(3, H, W)` (the seed's `img_mean.npy`
 * layout). Also accepted, with a notice: `(H, W, 3)` (HWC, e.g. `np.mean` over images loaded
 * with PIL), transposed to CHW; float64 or uint8 data, converted to float32. A 3-row image
 * `(3, W, 3)` is ambiguous and read as CHW. Anything else is an InputError naming the file.
 */
export function importMeanImage(path: string): ImportedMeanImage {
  const arr = readNpy(path, 'mean image', MAX_OTHER_NPY_BYTES);
  const notices: string[] = [];
  let data: Float32Array;
  if (arr.data instanceof Float32Array) data = arr.data;
  else if (arr.data instanceof Float64Array || arr.data instanceof Uint8Array) {
    data = Float32Array.from(arr.data);
    notices.push(`converted ${arr.dtype} to float32`);
  } else throw new InputError(`${path}: dtype ${arr.dtype}, expected a float32 mean image`, { code: 'ERR_THEANO_WEIGHTS' });
  const s = arr.shape;
  const problem = meanImageProblem(s, data);
  if (problem) throw new InputError(`${path}: not a usable mean image: ${problem}`, { code: 'ERR_MEAN_IMAGE' });
  if (s.length === 3 && s[0] === 3) return { data, shape: [3, s[1], s[2]], notice: notices.join('; ') || undefined };
  if (s.length === 3 && s[2] === 3) {
    const [h, w] = s;
    const chw = new Float32Array(data.length);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) chw[(c * h + y) * w + x] = data[(y * w + x) * 3 + c];
    notices.push(`read (${h}, ${w}, 3) as HWC and transposed it to CHW (3, ${h}, ${w})`);
    return { data: chw, shape: [3, h, w], notice: notices.join('; ') };
  }
  throw new InputError(`${path}: shape ${shapeText(s)}, expected a mean image (3, H, W) (or (H, W, 3))`, { code: 'ERR_THEANO_WEIGHTS' });
}
