/**
 * ONNX protobuf IO. The schema is onnx-proto's (ONNX 1.10's onnx.proto compiled for
 * protobufjs); IR version 8 structures are unchanged since, and operator versions are just
 * numbers in `opset_import`, so it writes opset-17 models that onnxruntime 1.30 loads.
 */
import { readFileSync } from 'node:fs';
import { onnx } from 'onnx-proto';
import { InputError } from '@alexnet-stream/core';

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
  if (!model.graph || !model.graph.node) throw new OnnxFormatError(`${name}: ONNX model has no graph`);
  return model;
}

export function readModelFile(path: string): onnx.ModelProto {
  return decodeModel(readFileSync(path), path);
}

/** Float32 data of an initializer, whether stored as raw bytes or as float_data. */
export function tensorToFloat32(tensor: TensorProto): Float32Array {
  if (tensor.dataType !== TensorType.FLOAT) throw new OnnxFormatError(`initializer ${tensor.name}: data type ${tensor.dataType} is not float32`);
  if (tensor.rawData && tensor.rawData.length > 0) {
    const raw = tensor.rawData;
    const copy = new Uint8Array(raw.length);
    copy.set(raw);
    return new Float32Array(copy.buffer);
  }
  return Float32Array.from(tensor.floatData ?? []);
}

export function tensorDims(tensor: TensorProto): number[] {
  return (tensor.dims ?? []).map((d) => Number(d));
}
