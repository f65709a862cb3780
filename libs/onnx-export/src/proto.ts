/**
 * ONNX protobuf IO. The schema is onnx-proto's (ONNX 1.10's onnx.proto compiled for
 * protobufjs); IR version 8 structures are unchanged since, and operator versions are just
 * numbers in `opset_import`, so it writes opset-17 models that onnxruntime 1.30 loads.
 */
import { onnx } from 'onnx-proto';
import { firstNonFinite, InputError } from '@alexnet-stream/core';

export { onnx };
export type ModelProto = onnx.IModelProto;
export type GraphProto = onnx.IGraphProto;
export type NodeProto = onnx.INodeProto;
export type TensorProto = onnx.ITensorProto;

/** IR version 8 = ONNX 1.10..1.12 files; every onnxruntime since 1.10 reads it. */
export const IR_VERSION = 8;
export const DEFAULT_OPSET = 17;

export const TensorType = onnx.TensorProto.DataType;
export const AttributeType = onnx.AttributeProto.AttributeType;

export function encodeModel(model: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
}

/** A file that is not a readable ONNX model, or not one of ours where that matters: exit 2. */
export class OnnxFormatError extends InputError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, { code: 'ERR_ONNX_FORMAT', ...options });
  }
}

/** Parse an .onnx file's bytes; `name` (a path) names the file in errors. */
export function decodeModel(bytes: Uint8Array, name = 'model'): onnx.ModelProto {
  let model: onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new OnnxFormatError(`${name}: not a readable ONNX model (${(err as Error).message}); is the file truncated?`, { cause: err });
  }
  if (!model.graph?.node) throw new OnnxFormatError(`${name}: ONNX model has no graph`);
  const external = externalTensor(model.graph, 0, name);
  if (external) {
    // onnxruntime would resolve the location against the working directory (a model given as
    // bytes has no folder of its own), or refuse it with a native error text.
    const location = external.externalData?.find((e) => e.key === 'location')?.value;
    throw new OnnxFormatError(
      `${name}: tensor ${JSON.stringify(external.name ?? '')} keeps its data in an external file${location !== undefined && location !== null ? ` (${JSON.stringify(location)})` : ''}; ` +
        'only self-contained models are read (save it with onnx.save_model(model, path, save_as_external_data=False))',
    );
  }
  const nonFinite = nonFiniteInitializer(model.graph);
  if (nonFinite)
    throw new OnnxFormatError(
      `${name}: initializer ${JSON.stringify(nonFinite.name)} holds ${nonFinite.value} at index ${nonFinite.index}: the model's weights are damaged (a model holds finite numbers only)`,
    );
  return model;
}

/**
 * The first NaN or infinite value in the graph's float32/float64 initializers: such a model
 * answers NaN for every image ("NaN%"), which must be refused on load, not printed as a result.
 */
function nonFiniteInitializer(graph: onnx.IGraphProto): { name: string; index: number; value: number } | undefined {
  for (const t of graph.initializer ?? []) {
    let values: Float32Array | Float64Array | undefined;
    if (t.dataType === TensorType.FLOAT || t.dataType === TensorType.DOUBLE) {
      const raw = t.rawData;
      const width = t.dataType === TensorType.FLOAT ? 4 : 8;
      if (raw && raw.length > 0) {
        const count = Math.floor(raw.length / width);
        // A view when the bytes are aligned (no copy of a 200 MB model), else an aligned copy.
        const bytes = raw.byteOffset % width === 0 ? raw : new Uint8Array(raw.subarray(0, count * width));
        values = width === 4 ? new Float32Array(bytes.buffer, bytes.byteOffset, count) : new Float64Array(bytes.buffer, bytes.byteOffset, count);
      } else {
        values = t.dataType === TensorType.FLOAT ? Float32Array.from(t.floatData ?? []) : Float64Array.from(t.doubleData ?? []);
      }
    }
    if (!values) continue;
    const index = firstNonFinite(values);
    if (index >= 0) return { name: t.name ?? '', index, value: values[index] };
  }
  return undefined;
}

/** Subgraphs (If/Loop/Scan bodies) nested deeper than this are refused rather than walked. */
const MAX_SUBGRAPH_DEPTH = 32;

const isExternal = (t: onnx.ITensorProto | null | undefined): boolean =>
  !!t && (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL || (t.externalData?.length ?? 0) > 0);

/** The first tensor of `graph` (initializers, sparse ones, node attributes, subgraphs) whose data is in an external file. */
function externalTensor(graph: onnx.IGraphProto, depth: number, name: string): onnx.ITensorProto | undefined {
  if (depth > MAX_SUBGRAPH_DEPTH) throw new OnnxFormatError(`${name}: subgraphs nested more than ${MAX_SUBGRAPH_DEPTH} deep`);
  const sparse = (s: onnx.ISparseTensorProto | null | undefined) => [s?.values, s?.indices];
  const tensors = [...(graph.initializer ?? []), ...(graph.sparseInitializer ?? []).flatMap(sparse)];
  const found = tensors.find(isExternal);
  if (found) return found;
  for (const node of graph.node ?? []) {
    for (const a of node.attribute ?? []) {
      const inAttribute = [a.t, ...(a.tensors ?? []), ...sparse(a.sparseTensor), ...(a.sparseTensors ?? []).flatMap(sparse)].find(isExternal);
      if (inAttribute) return inAttribute;
      for (const g of [a.g, ...(a.graphs ?? [])]) {
        const inSubgraph = g ? externalTensor(g, depth + 1, name) : undefined;
        if (inSubgraph) return inSubgraph;
      }
    }
  }
  return undefined;
}

/** Float32 data of an initializer, whether stored as raw bytes or as float_data. */
export function tensorToFloat32(tensor: TensorProto): Float32Array {
  if (tensor.dataType !== TensorType.FLOAT) throw new OnnxFormatError(`initializer ${tensor.name}: data type ${tensor.dataType} is not float32`);
  if (tensor.rawData && tensor.rawData.length > 0) {
    // A copy: the weights must not keep the whole file's buffer alive, nor share its bytes.
    const raw = tensor.rawData;
    return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
  }
  return Float32Array.from(tensor.floatData ?? []);
}

export function tensorDims(tensor: TensorProto): number[] {
  return (tensor.dims ?? []).map((d) => Number(d));
}
