/**
 * KServe Open Inference Protocol v2 (REST), the request and response bodies: pure functions,
 * wrapped by the routes in server.ts.
 *
 * Requests carry tensors as JSON (`data`: flat or nested, row-major) or, with Triton's binary
 * tensor data extension, as raw little-endian bytes after a JSON header whose length is in the
 * `Inference-Header-Content-Length` header (`parameters.binary_data_size` per input): those
 * bytes are copied straight into the batch, never parsed as numbers. Responses give outputs as
 * JSON, or as raw bytes for outputs asked with `binary_data_output` (per output or for all).
 * Triton's classification extension (`parameters.classification: k` on an output) answers the
 * top k as "score:index[:label]" strings.
 *
 * Every bad request is a 400 whose message names the field (`inputs[0].shape`, ...).
 */
import { firstNonFinite, float32View } from '@alexnet-stream/core';
import { topK } from '@alexnet-stream/onnx-export';
import { badRequest, HttpError } from './errors';
import type { ModelDescription, TensorSignature } from './model-description';

const tensorParameters = {
  type: 'object',
  properties: {
    binary_data_size: { type: 'integer', minimum: 0 },
    binary_data_output: { type: 'boolean' },
    classification: { type: 'integer', minimum: 1 },
  },
};

/** The JSON part of an infer request (validated by fastify's ajv before parseInfer). */
export const inferRequestSchema = {
  $id: 'kserve-v2-infer-request',
  type: 'object',
  required: ['inputs'],
  properties: {
    id: { type: 'string', maxLength: 256 },
    parameters: { type: 'object', properties: { binary_data_output: { type: 'boolean' } } },
    inputs: {
      type: 'array',
      minItems: 1,
      maxItems: 64,
      items: {
        type: 'object',
        required: ['name', 'shape', 'datatype'],
        properties: {
          name: { type: 'string', maxLength: 256 },
          shape: { type: 'array', maxItems: 8, items: { type: 'integer', minimum: 0 } },
          datatype: { type: 'string', maxLength: 16 },
          parameters: tensorParameters,
          data: {},
        },
      },
    },
    outputs: {
      type: 'array',
      maxItems: 64,
      items: { type: 'object', required: ['name'], properties: { name: { type: 'string', maxLength: 256 }, parameters: tensorParameters } },
    },
  },
} as const;

interface TensorParameters {
  binary_data_size?: number;
  binary_data_output?: boolean;
  classification?: number;
}

export interface InferRequestBody {
  id?: string;
  parameters?: { binary_data_output?: boolean };
  inputs: { name: string; shape: number[]; datatype: string; parameters?: TensorParameters; data?: unknown }[];
  outputs?: { name: string; parameters?: TensorParameters }[];
}

export interface RequestedOutput {
  name: string;
  binary: boolean;
  /** Triton's classification extension: answer the top k as strings. */
  classification?: number;
}

export interface ParsedInfer {
  id?: string;
  /** Batch size of the request (its first dimension). */
  n: number;
  /** n rows of the model's input, as bytes (float32 little-endian or uint8). */
  data: Uint8Array;
  outputs: RequestedOutput[];
}

const BYTES_PER: Record<string, number> = { FP32: 4, UINT8: 1 };

/**
 * Count and fill numbers from nested arrays into `out`, checking their kind. `levels` is how
 * deep the data may nest (the shape's rank): deeper is refused before it costs the stack
 * (100000 nested brackets overflowed it: a 500). An FP32 value must be finite as float32:
 * 1e39 or 1e400 (JSON has no NaN) became Infinity, and every output `null`.
 */
function fill(value: unknown, out: Float32Array | Uint8Array, state: { k: number }, field: string, datatype: string, levels: number): void {
  if (!Array.isArray(value)) throw badRequest(`${field} must be an array of numbers (flat or nested)`);
  if (levels < 1) throw badRequest(`${field} is nested deeper than its shape has dimensions`);
  for (let i = 0; i < value.length; i++) {
    const v = value[i];
    if (typeof v === 'number') {
      if (state.k >= out.length) throw badRequest(`${field} holds more values than its shape needs (${out.length})`);
      if (datatype === 'UINT8' && !(Number.isInteger(v) && v >= 0 && v <= 255))
        throw badRequest(`${field}: value ${v} at element ${state.k} is not a UINT8 (an integer 0..255)`);
      out[state.k] = v;
      if (!Number.isFinite(out[state.k])) throw badRequest(`${field}: value ${v} at element ${state.k} is not a finite ${datatype} number`);
      state.k++;
    } else if (Array.isArray(v)) {
      fill(v, out, state, field, datatype, levels - 1);
    } else {
      throw badRequest(`${field}: element ${state.k} is ${v === null ? 'null' : typeof v}, not a number`);
    }
  }
}

function checkShape(shape: number[], expected: TensorSignature, field: string, maxBatch: number, maxBatchName: string): number {
  const want = expected.shape;
  if (shape.length !== want.length) throw badRequest(`${field}.shape is [${shape}]; model input ${expected.name} has shape [${want}] (-1: any batch size)`);
  for (let d = 1; d < want.length; d++) {
    if (shape[d] !== want[d]) throw badRequest(`${field}.shape is [${shape}]; model input ${expected.name} has shape [${want}] (-1: any batch size)`);
  }
  const n = shape[0];
  if (n < 1) throw badRequest(`${field}.shape: the batch size is 0`);
  if (n > maxBatch) throw badRequest(`${field}.shape: batch size ${n} is more than the server's ${maxBatchName} ${maxBatch}; split the request`);
  return n;
}

function requestedOutputs(body: InferRequestBody, model: ModelDescription): RequestedOutput[] {
  const allBinary = body.parameters?.binary_data_output === true;
  if (!body.outputs || body.outputs.length === 0) return model.outputs.map((o) => ({ name: o.name, binary: allBinary }));
  return body.outputs.map((o, i) => {
    if (!model.outputs.some((m) => m.name === o.name)) {
      throw badRequest(`outputs[${i}].name: model ${model.name} has no output "${o.name}" (it has ${model.outputs.map((m) => m.name).join(', ')})`);
    }
    const classification = o.parameters?.classification;
    return { name: o.name, binary: o.parameters?.binary_data_output ?? allBinary, ...(classification ? { classification } : {}) };
  });
}

/**
 * Check an infer request against the model and gather its input bytes. `binary` is the body
 * after the JSON header (binary extension), undefined for a JSON-only request.
 */
export function parseInfer(
  body: InferRequestBody,
  binary: Buffer | undefined,
  model: ModelDescription,
  maxBatch: number,
  maxBatchName = 'maxBatch',
): ParsedInfer {
  const expected = model.input;
  if (body.inputs.length !== 1) throw badRequest(`inputs holds ${body.inputs.length} tensors; model ${model.name} has one input, ${expected.name}`);
  const input = body.inputs[0];
  const field = 'inputs[0]';
  if (input.name !== expected.name) throw badRequest(`${field}.name: model ${model.name} has no input "${input.name}" (its input is "${expected.name}")`);
  if (input.datatype !== expected.datatype) throw badRequest(`${field}.datatype is ${input.datatype}; model input ${expected.name} is ${expected.datatype}`);
  const n = checkShape(input.shape, expected, field, maxBatch, maxBatchName);
  const count = n * model.inputLength;
  const byteLength = count * BYTES_PER[expected.datatype];
  const outputs = requestedOutputs(body, model);
  const size = input.parameters?.binary_data_size;
  let data: Uint8Array;
  if (size !== undefined) {
    if (input.data !== undefined) throw badRequest(`${field} has both data and parameters.binary_data_size; give one`);
    if (!binary)
      throw badRequest(
        `${field}.parameters.binary_data_size is set but the request has no binary part (send it as application/octet-stream with an Inference-Header-Content-Length header)`,
      );
    if (size !== byteLength)
      throw badRequest(`${field}.parameters.binary_data_size is ${size}; shape [${input.shape}] of ${expected.datatype} is ${byteLength} bytes`);
    if (binary.length !== size) throw badRequest(`the binary part is ${binary.length} bytes; inputs declare ${size} (parameters.binary_data_size)`);
    if (expected.datatype === 'FP32') {
      const at = firstNonFinite(float32View(binary));
      if (at >= 0) throw badRequest(`${field}: the binary value at element ${at} is not a finite FP32 number`);
    }
    data = binary;
  } else {
    if (binary && binary.length > 0)
      throw badRequest(`the request has ${binary.length} bytes of binary data but no input declares parameters.binary_data_size`);
    if (input.data === undefined) throw badRequest(`${field} has no data (nor parameters.binary_data_size)`);
    const values = expected.datatype === 'FP32' ? new Float32Array(count) : new Uint8Array(count);
    const state = { k: 0 };
    fill(input.data, values, state, `${field}.data`, expected.datatype, input.shape.length);
    if (state.k !== count) throw badRequest(`${field}.data holds ${state.k} values; shape [${input.shape}] needs ${count}`);
    data = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  }
  return { id: body.id, n, data, outputs };
}

/** Split a binary-extension body: the JSON header (parsed) and the bytes after it. */
export function splitBinaryBody(body: Buffer, headerLengthText: string | undefined): { header: unknown; binary: Buffer } {
  const headerLength = Number(headerLengthText);
  if (!/^\d+$/.test(String(headerLengthText ?? '')) || headerLength > body.length) {
    throw badRequest(
      `Inference-Header-Content-Length is ${JSON.stringify(headerLengthText ?? null)}; expected the byte length of the JSON header (at most the body's ${body.length} bytes)`,
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(body.subarray(0, headerLength).toString('utf8'));
  } catch (err) {
    throw badRequest(`the JSON header (the first ${headerLength} bytes, Inference-Header-Content-Length) is not valid JSON: ${(err as Error).message}`);
  }
  return { header, binary: body.subarray(headerLength) };
}

export interface OutputTensor {
  name: string;
  data: Float32Array;
  /** [n, width] */
  shape: number[];
}

export interface InferResponse {
  /** The JSON part. */
  json: string;
  /** Binary outputs in order (empty: a plain JSON answer). */
  binary: Buffer[];
}

function classificationStrings(t: OutputTensor, k: number, classNames?: string[]): string[] {
  const [n, width] = t.shape;
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    for (const j of topK(t.data, i, width, Math.min(k, width))) {
      out.push(`${t.data[i * width + j]}:${j}${classNames ? `:${classNames[j]}` : ''}`);
    }
  }
  return out;
}

export function buildInferResponse(
  model: ModelDescription,
  version: string,
  id: string | undefined,
  requested: RequestedOutput[],
  tensors: Map<string, OutputTensor>,
): InferResponse {
  const binary: Buffer[] = [];
  const outputs = requested.map((r) => {
    const t = tensors.get(r.name)!;
    // JSON has no NaN (it would be written null) and a score string "NaN:3" is no answer: a model
    // whose weights overflow on these inputs fails the request, saying so. Raw bytes carry NaN as it is.
    if (!r.binary || r.classification) {
      const at = firstNonFinite(float32View(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)));
      if (at >= 0)
        throw new HttpError(
          500,
          `output ${r.name}: the model's value at element ${at} is ${t.data[at]} (its weights overflow on these inputs)`,
          'output_not_finite',
        );
    }
    if (r.classification) {
      const k = Math.min(r.classification, t.shape[1]);
      return { name: r.name, datatype: 'BYTES', shape: [t.shape[0], k], data: classificationStrings(t, k, model.classNames) };
    }
    if (r.binary) {
      const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      binary.push(bytes);
      return { name: r.name, datatype: 'FP32', shape: t.shape, parameters: { binary_data_size: bytes.length } };
    }
    return { name: r.name, datatype: 'FP32', shape: t.shape, data: Array.from(t.data) };
  });
  const json = JSON.stringify({ model_name: model.name, model_version: version, ...(id !== undefined ? { id } : {}), outputs });
  return { json, binary };
}

/** `GET /v2/models/{m}`: name, versions, platform, inputs and outputs with -1 for the batch. */
export function modelMetadataResponse(model: ModelDescription, version: string) {
  return {
    name: model.name,
    versions: [version],
    platform: 'onnxruntime_onnx',
    inputs: [{ name: model.input.name, datatype: model.input.datatype, shape: model.input.shape }],
    outputs: model.outputs.map((o) => ({ name: o.name, datatype: o.datatype, shape: o.shape })),
    parameters: {
      origin: model.origin,
      classes: model.numClasses,
      ...(model.classNames ? { labels: true } : {}),
      classify: !!model.preprocessing,
      ...(model.preprocessing ? { image_size: model.preprocessing.imageSize, crop: model.preprocessing.crop, resize: model.preprocessing.resize } : {}),
    },
  };
}
