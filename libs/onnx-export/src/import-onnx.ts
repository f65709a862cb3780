/**
 * Importing the weights of an ONNX AlexNet: ours, the ONNX Model Zoo's `bvlcalexnet`
 * (initializers `conv1_w_0`, `conv1_b_0`, …), a torchvision export (`features.0.weight`,
 * `classifier.1.weight`, …), or any other exporter's naming. Names are not trusted: the graph
 * is walked from its data input along the main chain, each node is recognised as a layer
 * (Conv/Relu/LRN/MaxPool/Flatten-or-Reshape/Gemm-or-MatMul+Add, Dropout/Identity skipped),
 * and the layer sequence with its attributes is matched against the presets. The weights are
 * then taken in layer order, checked against the preset's shapes, and renamed `conv1.weight`….
 * A graph that is not an AlexNet the presets describe is refused with what differs.
 */
import { getOwn, InputError, type NamedTensors } from '@alexnet-stream/core';
import { alexnetSpec, type LayerSpec, type ModelSpec, parameterList, PRESETS, specProblem } from '@alexnet-stream/model-alexnet';
import { modelMetadata, readOnnx } from './files';
import { META } from './lower';
import { type onnx, OnnxFormatError, tensorDims, tensorToFloat32 } from './proto';

/** An ONNX file that is not an AlexNet this project can import: exit 2. */
export class ImportError extends InputError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, { code: 'ERR_ONNX_IMPORT', ...options });
  }
}

export interface ImportedWeights {
  spec: ModelSpec;
  weights: NamedTensors;
  classNames?: string[];
  /** Things the importer accepted but that a user may want to know (e.g. ceil-mode pooling). */
  notes: string[];
}

/**
 * An initializer found in the graph: its dims at once, its values only when asked. The graph is
 * matched against the presets on dims and attributes alone, so a refused model costs no copy of
 * its weights, and an accepted one is copied (or transposed) once.
 */
interface Tensor {
  dims: number[];
  read: () => Float32Array;
}

/** A layer recognised in the graph, with the tensors it owns. */
type Found =
  | { kind: 'conv'; node: string; outChannels: number; kernel: number; stride: number; pad: number; group: number; weight: Tensor; bias: Tensor }
  | { kind: 'relu'; node: string }
  | { kind: 'maxpool'; node: string; kernel: number; stride: number; pad: number; ceilLike: boolean }
  | { kind: 'lrn'; node: string; size: number; alpha: number; beta: number; bias: number }
  | { kind: 'flatten'; node: string }
  | { kind: 'fc'; node: string; outFeatures: number; weight: Tensor; bias: Tensor };

function attr(node: onnx.INodeProto, name: string): onnx.IAttributeProto | undefined {
  return (node.attribute ?? []).find((a) => a.name === name);
}
function attrInt(node: onnx.INodeProto, name: string, fallback: number): number {
  const a = attr(node, name);
  return a ? Number(a.i) : fallback;
}
function attrFloat(node: onnx.INodeProto, name: string, fallback: number): number {
  const a = attr(node, name);
  return a ? Number(a.f) : fallback;
}
function attrInts(node: onnx.INodeProto, name: string): number[] | undefined {
  const a = attr(node, name);
  return a ? (a.ints ?? []).map(Number) : undefined;
}

/** Exporters name nodes inconsistently (often not at all); the output value always has a name. */
const nodeLabel = (node: onnx.INodeProto): string => `${node.opType} node ${JSON.stringify(node.output?.[0] || node.name || '?')}`;
/** float32 attributes shown as the decimal they were written as. */
const num = (v: number): number => Number(v.toPrecision(6));

/** Side branches of the main chain: shape computations of a dynamic Reshape. */
const SHAPE_OPS = new Set(['Shape', 'Gather', 'Unsqueeze', 'Concat', 'Constant', 'Cast', 'Slice', 'Squeeze', 'ConstantOfShape']);

function square(values: number[] | undefined, what: string, node: onnx.INodeProto, name: string): number {
  if (!values || values.length === 0) return NaN;
  if (values.some((v) => v !== values[0]))
    throw new ImportError(`${name}: ${nodeLabel(node)} has a non-square ${what} [${values.join(', ')}]; AlexNet's are square`);
  return values[0];
}

/** Walk the graph's main chain and recognise its layers. */
function walk(model: onnx.ModelProto, name: string): Found[] {
  const graph = model.graph!;
  const tensors = new Map<string, onnx.ITensorProto>();
  for (const t of graph.initializer ?? []) if (t.name) tensors.set(t.name, t);
  for (const node of graph.node ?? []) {
    const value = node.opType === 'Constant' ? attr(node, 'value') : undefined;
    if (value?.t && node.output?.[0]) tensors.set(node.output[0], value.t);
  }
  const tensor = (value: string | undefined, what: string, node: onnx.INodeProto): Tensor => {
    const t = value ? tensors.get(value) : undefined;
    if (!t) throw new ImportError(`${name}: the ${what} of ${nodeLabel(node)} is not a constant tensor in the file`);
    const read = (): Float32Array => {
      try {
        return tensorToFloat32(t);
      } catch (err) {
        throw new ImportError(`${name}: ${(err as Error).message}`, { cause: err });
      }
    };
    return { dims: tensorDims(t), read };
  };
  const inputs = (graph.input ?? []).filter((i) => i.name && !tensors.has(i.name));
  if (inputs.length !== 1) {
    throw new ImportError(`${name}: expected one image input, the graph has ${inputs.length} (${inputs.map((i) => i.name).join(', ') || 'none'})`);
  }
  const consumers = new Map<string, onnx.INodeProto[]>();
  for (const node of graph.node ?? []) {
    for (const input of node.input ?? []) {
      if (!consumers.has(input)) consumers.set(input, []);
      consumers.get(input)!.push(node);
    }
  }
  const found: Found[] = [];
  let x = inputs[0].name!;
  for (let steps = 0; steps < 10000; steps++) {
    const next = (consumers.get(x) ?? []).filter((n) => !SHAPE_OPS.has(n.opType ?? '') && n.input?.[0] === x);
    if (next.length === 0) break;
    if (next.length > 1) {
      throw new ImportError(
        `${name}: the value ${JSON.stringify(x)} feeds ${next.length} nodes (${next.map(nodeLabel).join(', ')}); an AlexNet is a single chain`,
      );
    }
    const node = next[0];
    const label = node.output?.[0] || node.name || '?';
    switch (node.opType) {
      case 'Conv': {
        const autoPad = attr(node, 'auto_pad');
        if (autoPad?.s && Buffer.from(autoPad.s).toString() !== 'NOTSET')
          throw new ImportError(`${name}: ${nodeLabel(node)} uses auto_pad; only explicit pads are supported`);
        const weight = tensor(node.input?.[1], 'weight', node);
        if (!node.input?.[2]) throw new ImportError(`${name}: ${nodeLabel(node)} has no bias; AlexNet's convolutions have biases`);
        const bias = tensor(node.input[2], 'bias', node);
        const dil = attrInts(node, 'dilations');
        if (dil?.some((d) => d !== 1)) throw new ImportError(`${name}: ${nodeLabel(node)} is dilated [${dil.join(', ')}]; AlexNet's convolutions are not`);
        const kernel = square(attrInts(node, 'kernel_shape') ?? weight.dims.slice(2), 'kernel', node, name);
        const stride = square(attrInts(node, 'strides') ?? [1, 1], 'stride', node, name);
        const pad = square(attrInts(node, 'pads') ?? [0, 0, 0, 0], 'padding', node, name);
        found.push({ kind: 'conv', node: label, outChannels: weight.dims[0], kernel, stride, pad, group: attrInt(node, 'group', 1), weight, bias });
        break;
      }
      case 'Relu':
        found.push({ kind: 'relu', node: label });
        break;
      case 'MaxPool': {
        const kernel = square(attrInts(node, 'kernel_shape'), 'kernel', node, name);
        const stride = square(attrInts(node, 'strides') ?? [1, 1], 'stride', node, name);
        const pads = attrInts(node, 'pads') ?? [0, 0, 0, 0];
        // Caffe pools in ceil mode; converters emulate it with ceil_mode=1 or extra padding at
        // the end. At AlexNet's sizes (55→27→13→6) ceil and floor agree, so it is the same layer.
        const begin = square(pads.slice(0, pads.length / 2), 'padding', node, name);
        const end = pads.slice(pads.length / 2);
        const ceilLike = attrInt(node, 'ceil_mode', 0) === 1 || end.some((e) => e !== begin);
        if (end.some((e) => e < begin || e > begin + stride - 1))
          throw new ImportError(`${name}: ${nodeLabel(node)} has padding [${pads.join(', ')}] that no AlexNet pooling has`);
        found.push({ kind: 'maxpool', node: label, kernel, stride, pad: begin, ceilLike });
        break;
      }
      case 'LRN':
        found.push({
          kind: 'lrn',
          node: label,
          size: attrInt(node, 'size', NaN),
          alpha: attrFloat(node, 'alpha', 1e-4),
          beta: attrFloat(node, 'beta', 0.75),
          bias: attrFloat(node, 'bias', 1),
        });
        break;
      case 'Flatten':
        if (attrInt(node, 'axis', 1) !== 1) throw new ImportError(`${name}: ${nodeLabel(node)} flattens from axis ${attrInt(node, 'axis', 1)}, expected 1`);
        found.push({ kind: 'flatten', node: label });
        break;
      case 'Reshape':
        // To [N, -1] (or [1, 9216] in fixed-batch exports): the fc weight shape check below
        // catches a reshape that does not flatten.
        found.push({ kind: 'flatten', node: label });
        break;
      case 'AveragePool': {
        // torchvision's AdaptiveAvgPool2d((6, 6)) on a 6x6 map exports as a 1x1/1 AveragePool.
        const k = attrInts(node, 'kernel_shape') ?? [];
        const s = attrInts(node, 'strides') ?? [1, 1];
        if (k.some((v) => v !== 1) || s.some((v) => v !== 1))
          throw new ImportError(`${name}: ${nodeLabel(node)} is an average pooling [${k.join('x')}]; AlexNet has none`);
        break;
      }
      case 'Gemm': {
        if (attrFloat(node, 'alpha', 1) !== 1 || attrFloat(node, 'beta', 1) !== 1 || attrInt(node, 'transA', 0) !== 0) {
          throw new ImportError(`${name}: ${nodeLabel(node)} has alpha/beta/transA other than 1/1/0`);
        }
        const w = tensor(node.input?.[1], 'weight', node);
        if (!node.input?.[2]) throw new ImportError(`${name}: ${nodeLabel(node)} has no bias`);
        const bias = tensor(node.input[2], 'bias', node);
        const weight = attrInt(node, 'transB', 0) === 1 ? w : transpose2d(w);
        found.push({ kind: 'fc', node: label, outFeatures: weight.dims[0], weight, bias });
        break;
      }
      case 'MatMul': {
        const w = tensor(node.input?.[1], 'weight', node);
        const add = (consumers.get(node.output![0]) ?? []).filter((n) => n.opType === 'Add');
        if (add.length !== 1) throw new ImportError(`${name}: ${nodeLabel(node)} is not followed by a bias Add`);
        const addNode = add[0];
        const biasName = addNode.input?.[0] === node.output![0] ? addNode.input?.[1] : addNode.input?.[0];
        const weight = transpose2d(w); // MatMul(x, W): W is [in, out]
        found.push({ kind: 'fc', node: label, outFeatures: weight.dims[0], weight, bias: tensor(biasName, 'bias', addNode) });
        x = addNode.output![0];
        continue;
      }
      case 'Dropout':
      case 'Identity':
        break;
      case 'Softmax':
      case 'LogSoftmax':
        return found; // the head: logits end here
      default:
        throw new ImportError(
          `${name}: ${nodeLabel(node)} after ${found.length} recognised layers is not an AlexNet layer (Conv, Relu, LRN, MaxPool, Flatten/Reshape, Gemm/MatMul, Dropout)`,
        );
    }
    x = node.output![0];
  }
  return found;
}

function transpose2d(t: Tensor): Tensor {
  if (t.dims.length !== 2) return t; // shape check reports it
  const [rows, cols] = t.dims;
  return {
    dims: [cols, rows],
    read: () => {
      const data = t.read();
      return data.length === rows * cols ? transposeMatrix(data, rows, cols) : data; // the length check refuses it
    },
  };
}

/** Square tiles of this side fit the L1 cache (2 x 32 x 32 float32 = 8 KiB). */
const TILE = 32;

/**
 * `data` ([rows, cols], row-major) transposed to [cols, rows]. Tiled: a plain double loop reads
 * or writes with a stride of a whole row (16 KiB for fc7), a cache miss per value; by tiles, fc6's
 * 37.7M values transpose in ~0.1 s instead of ~1 s.
 */
function transposeMatrix(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r0 = 0; r0 < rows; r0 += TILE) {
    const r1 = Math.min(r0 + TILE, rows);
    for (let c0 = 0; c0 < cols; c0 += TILE) {
      const c1 = Math.min(c0 + TILE, cols);
      for (let r = r0; r < r1; r++) {
        const from = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = data[from + c];
      }
    }
  }
  return out;
}

/** float32 attributes round-trip through float32: compare at float32 precision. */
const close = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-6 * Math.max(Math.abs(a), Math.abs(b));

function describe(l: LayerSpec | Found): string {
  switch (l.kind) {
    case 'conv':
      return `Conv ${l.outChannels} ${l.kernel}x${l.kernel}/${l.stride} pad ${l.pad} group ${l.group}`;
    case 'maxpool':
      return `MaxPool ${l.kernel}x${l.kernel}/${l.stride} pad ${l.pad}`;
    case 'lrn':
      return `LRN size ${l.size} alpha ${num(l.alpha)} beta ${num(l.beta)} bias ${num(l.bias)}`;
    case 'fc':
      return `fc ${l.outFeatures}`;
    default:
      return l.kind;
  }
}

/** The first difference between the found layers and a spec, or undefined when they match. */
function difference(found: Found[], spec: ModelSpec): { score: number; message: string } | undefined {
  const layers = spec.layers.filter((l) => l.kind !== 'dropout');
  for (let i = 0; i < Math.max(found.length, layers.length); i++) {
    const f = found[i];
    const l = layers[i];
    const where = `layer ${i + 1}`;
    if (!f) return { score: 2 * i, message: `the model ends after ${found.length} layers, ${spec.preset} continues with ${l.name} (${describe(l)})` };
    if (!l) return { score: 2 * i, message: `the model has more layers than ${spec.preset}: ${where} is ${describe(f)} (${f.node})` };
    const mismatch = `${where} (${f.node}) is ${describe(f)}, ${spec.preset} has ${l.name}: ${describe(l)}`;
    // Closeness: layers matched, plus one when the differing layer is at least of the same kind.
    if (f.kind !== l.kind) return { score: 2 * i, message: mismatch };
    const sameKind = { score: 2 * i + 1, message: mismatch };
    if (
      f.kind === 'conv' &&
      l.kind === 'conv' &&
      (f.outChannels !== l.outChannels || f.kernel !== l.kernel || f.stride !== l.stride || f.pad !== l.pad || f.group !== l.group)
    )
      return sameKind;
    if (f.kind === 'maxpool' && l.kind === 'maxpool' && (f.kernel !== l.kernel || f.stride !== l.stride || f.pad !== l.pad)) return sameKind;
    if (f.kind === 'lrn' && l.kind === 'lrn' && !(f.size === l.size && close(f.alpha, l.alpha) && close(f.beta, l.beta) && close(f.bias, l.bias)))
      return sameKind;
    if (f.kind === 'fc' && l.kind === 'fc' && f.outFeatures !== l.outFeatures) return sameKind;
  }
  return undefined;
}

/** Match recognised layers to a spec (our metadata's first, then the presets) and take the weights. */
export function weightsFromModel(model: onnx.ModelProto, name: string): ImportedWeights {
  const found = walk(model, name);
  const fcs = found.filter((f) => f.kind === 'fc');
  if (fcs.length === 0) throw new ImportError(`${name}: no fully connected layer found; not an AlexNet`);
  const numClasses = fcs[fcs.length - 1].outFeatures;
  const metadata = modelMetadata(model);
  const candidates: ModelSpec[] = [];
  const notes: string[] = [];
  // Our metadata's spec is a candidate only when it is a usable spec (metadata is input: the
  // structure found in the graph decides, and a damaged spec falls back to the presets).
  const specText = getOwn(metadata, META.spec);
  if (specText !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(specText);
    } catch {
      parsed = undefined;
    }
    const problem = parsed === undefined ? 'not JSON' : specProblem(parsed);
    if (problem) notes.push(`metadata ${META.spec} ignored (${problem}): the model is matched against the presets`);
    else candidates.push(parsed as ModelSpec);
  }
  for (const preset of PRESETS) {
    try {
      candidates.push(alexnetSpec(preset, { numClasses }));
    } catch {
      // numClasses < 2: reported below as a mismatch against every preset
    }
  }
  let best: { score: number; message: string } | undefined;
  for (const spec of candidates) {
    const diff = difference(found, spec);
    if (!diff) {
      const imported = takeWeights(found, spec, name, metadata);
      return { ...imported, notes: [...notes, ...imported.notes] };
    }
    if (!best || diff.score > best.score) best = diff;
  }
  throw new ImportError(`${name}: not an AlexNet of the presets (${PRESETS.join(', ')}); closest: ${best?.message ?? `${numClasses} classes`}`);
}

function takeWeights(found: Found[], spec: ModelSpec, name: string, metadata: Record<string, string>): ImportedWeights {
  const weights: NamedTensors = {};
  const params = parameterList(spec);
  const owners = found.filter((f): f is Extract<Found, { kind: 'conv' | 'fc' }> => f.kind === 'conv' || f.kind === 'fc');
  const notes: string[] = [];
  if (found.some((f) => f.kind === 'maxpool' && f.ceilLike)) notes.push("pooling in ceil mode (Caffe): the same as floor mode at AlexNet's sizes");
  const paramLayers = spec.layers.filter((l) => l.kind === 'conv' || l.kind === 'fc');
  owners.forEach((f, i) => {
    for (const [role, t] of [
      ['weight', f.weight],
      ['bias', f.bias],
    ] as const) {
      const p = params.find((q) => q.name === `${paramLayers[i].name}.${role}`)!;
      const count = p.shape.reduce((a, b) => a * b, 1);
      const dimsOk = t.dims.length === p.shape.length && t.dims.every((d, j) => d === p.shape[j]);
      if (!dimsOk) {
        throw new ImportError(
          `${name}: the ${role} of node ${f.node} has shape [${t.dims.join(', ')}], ${spec.preset}'s ${p.name} needs [${p.shape.join(', ')}]`,
        );
      }
      const data = t.read();
      if (data.length !== count) {
        throw new ImportError(`${name}: the ${role} of node ${f.node} holds ${data.length} values, its shape [${t.dims.join(', ')}] needs ${count}`);
      }
      weights[p.name] = data;
    }
  });
  let classNames: string[] | undefined;
  const namesText = getOwn(metadata, META.classNames);
  if (namesText !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(namesText);
    } catch {
      parsed = undefined;
    }
    // Optional: names that are not one string per class are left out, and the user told so.
    if (Array.isArray(parsed) && parsed.length === spec.numClasses && parsed.every((n) => typeof n === 'string')) classNames = parsed as string[];
    else notes.push(`metadata ${META.classNames} ignored: not a list of ${spec.numClasses} strings`);
  }
  return { spec, weights, classNames, notes };
}

/** Read an .onnx file and import its weights (see the module comment). */
export function importOnnxWeights(path: string): ImportedWeights {
  let model: onnx.ModelProto;
  try {
    model = readOnnx(path);
  } catch (err) {
    if (err instanceof OnnxFormatError) throw new ImportError(err.message, { cause: err });
    throw err;
  }
  return weightsFromModel(model, path);
}
