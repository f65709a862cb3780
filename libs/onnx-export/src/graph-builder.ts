/**
 * A small typed builder for ONNX graphs: named values, initializers, typed attributes,
 * value_info with shapes. Used for inference graphs here and for training graphs by the
 * trainer. Values are referred to by name (strings), as in ONNX itself.
 */
import { AttributeType, DEFAULT_OPSET, IR_VERSION, type ModelProto, type NodeProto, type onnx, type TensorProto, TensorType } from './proto';

export type ElemType = 'float32' | 'int64' | 'int32' | 'uint8' | 'bool' | 'float16';
export type Dim = number | string; // string = symbolic (dim_param), e.g. 'N'

const ELEM: Record<ElemType, number> = {
  float32: TensorType.FLOAT,
  int64: TensorType.INT64,
  int32: TensorType.INT32,
  uint8: TensorType.UINT8,
  bool: TensorType.BOOL,
  float16: TensorType.FLOAT16,
};

/** Typed attribute values: plain numbers are ambiguous (is 2 an int or a float?), so say which. */
export type AttrValue =
  | { int: number }
  | { float: number }
  | { ints: number[] }
  | { floats: number[] }
  | { string: string }
  | { tensor: TensorProto }
  /** A subgraph (control flow: Loop's body, If's branches). */
  | { graph: onnx.IGraphProto };

export const int = (v: number): AttrValue => ({ int: v });
export const float = (v: number): AttrValue => ({ float: v });
export const ints = (v: number[]): AttrValue => ({ ints: v });
export const floats = (v: number[]): AttrValue => ({ floats: v });
export const str = (v: string): AttrValue => ({ string: v });

function toAttribute(name: string, value: AttrValue): onnx.IAttributeProto {
  if ('int' in value) return { name, type: AttributeType.INT, i: value.int };
  if ('float' in value) return { name, type: AttributeType.FLOAT, f: value.float };
  if ('ints' in value) return { name, type: AttributeType.INTS, ints: value.ints };
  if ('floats' in value) return { name, type: AttributeType.FLOATS, floats: value.floats };
  if ('string' in value) return { name, type: AttributeType.STRING, s: Buffer.from(value.string, 'utf8') };
  if ('graph' in value) return { name, type: AttributeType.GRAPH, g: value.graph };
  return { name, type: AttributeType.TENSOR, t: value.tensor };
}

export function valueInfo(name: string, elem: ElemType, dims: Dim[]): onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType: ELEM[elem], shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}

export type InitData = Float32Array | Int32Array | Uint8Array | BigInt64Array | number[];

/** A TensorProto from data; number[] means int64 (shapes, axes, indices). */
export function makeTensor(name: string, data: InitData, dims: number[]): TensorProto {
  if (data instanceof Float32Array) return { name, dataType: TensorType.FLOAT, dims, rawData: bytesOf(data) };
  if (data instanceof Int32Array) return { name, dataType: TensorType.INT32, dims, rawData: bytesOf(data) };
  if (data instanceof Uint8Array) return { name, dataType: TensorType.UINT8, dims, rawData: bytesOf(data) };
  const big = data instanceof BigInt64Array ? data : BigInt64Array.from(data.map((x) => BigInt(x)));
  return { name, dataType: TensorType.INT64, dims, rawData: bytesOf(big) };
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export interface NodeOptions {
  /** Output names, or a count of fresh names. Default: one fresh output. */
  outputs?: string[] | number;
  name?: string;
  domain?: string;
}

export class GraphBuilder {
  private readonly nodes: NodeProto[] = [];
  private readonly inputs: onnx.IValueInfoProto[] = [];
  private readonly outputs: onnx.IValueInfoProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly valueInfos: onnx.IValueInfoProto[] = [];
  private readonly used = new Set<string>();
  private readonly constCache = new Map<string, string>();
  /** Operator domains other than ONNX's own that nodes use (each needs an opset import). */
  private readonly domains = new Set<string>();
  private counter = 0;

  constructor(readonly name: string) {}

  /** A fresh value name starting with `prefix`. */
  fresh(prefix: string): string {
    let candidate = prefix;
    while (this.used.has(candidate)) candidate = `${prefix}_${++this.counter}`;
    this.used.add(candidate);
    return candidate;
  }

  private claim(name: string): string {
    if (this.used.has(name)) throw new Error(`graph ${this.name}: value name ${JSON.stringify(name)} is already defined`);
    this.used.add(name);
    return name;
  }

  input(name: string, elem: ElemType, dims: Dim[]): string {
    this.inputs.push(valueInfo(this.claim(name), elem, dims));
    return name;
  }

  /** Declare a graph input typed as `like` (a value of another graph), with `leadingDims` prepended to its shape. */
  inputLike(name: string, like: onnx.IValueInfoProto, leadingDims: Dim[] = []): string {
    const t = like.type?.tensorType;
    if (!t) throw new Error(`inputLike: ${like.name} is not a tensor value`);
    const dims = leadingDims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }));
    this.inputs.push({ name: this.claim(name), type: { tensorType: { elemType: t.elemType, shape: { dim: [...dims, ...(t.shape?.dim ?? [])] } } } });
    return name;
  }

  /** Declare an existing value as a graph output (optionally renaming it through Identity). */
  output(value: string, elem: ElemType, dims: Dim[], as?: string): string {
    let name = value;
    if (as !== undefined && as !== value) name = this.node('Identity', [value], {}, { outputs: [as] })[0];
    this.outputs.push(valueInfo(name, elem, dims));
    return name;
  }

  initializer(name: string, data: InitData, dims: number[]): string {
    this.initializers.push(makeTensor(this.claim(name), data, dims));
    return name;
  }

  /** A constant initializer, shared between identical requests (int64 lists, scalars). */
  constant(data: InitData, dims: number[], prefix = 'const'): string {
    const key = `${data.constructor.name}:${dims.join('x')}:${Array.from(data as ArrayLike<number | bigint>).join(',')}`;
    const cached = key.length < 512 ? this.constCache.get(key) : undefined;
    if (cached) return cached;
    const name = this.fresh(prefix);
    this.initializers.push(makeTensor(name, data, dims));
    if (key.length < 512) this.constCache.set(key, name);
    return name;
  }

  /** int64 1-D constant (shapes, axes, starts/ends). */
  int64s(values: number[]): string {
    return this.constant(values, [values.length], 'i64');
  }

  /** float32 scalar constant. */
  scalar(value: number): string {
    return this.constant(new Float32Array([value]), [], 'f32');
  }

  valueInfo(name: string, elem: ElemType, dims: Dim[]): void {
    this.valueInfos.push(valueInfo(name, elem, dims));
  }

  /** Add a node; returns its output names. Empty-string inputs are ONNX's "omitted optional". */
  node(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, options: NodeOptions = {}): string[] {
    const outputs = Array.isArray(options.outputs)
      ? options.outputs.map((o) => (o === '' ? '' : this.claim(o)))
      : Array.from({ length: options.outputs ?? 1 }, () => this.fresh(opType.toLowerCase()));
    if (options.domain) this.domains.add(options.domain);
    this.nodes.push({
      opType,
      domain: options.domain ?? '',
      name: options.name ?? this.fresh(`${opType}_node`),
      input: inputs,
      output: outputs,
      attribute: Object.entries(attrs).map(([k, v]) => toAttribute(k, v)),
    });
    return outputs;
  }

  /** Single-output node. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, name?: string): string {
    return this.node(opType, inputs, attrs, name ? { outputs: [name] } : {})[0];
  }

  get nodeCount(): number {
    return this.nodes.length;
  }

  graph(): onnx.IGraphProto {
    return {
      name: this.name,
      node: this.nodes,
      input: this.inputs,
      output: this.outputs,
      initializer: this.initializers,
      valueInfo: this.valueInfos,
    };
  }

  model(options: { opset?: number; producer?: string; metadata?: Record<string, string>; docString?: string } = {}): ModelProto {
    return {
      irVersion: IR_VERSION,
      // Every other domain used (onnxruntime's contrib domains) is at version 1, the only one they have.
      opsetImport: [{ domain: '', version: options.opset ?? DEFAULT_OPSET }, ...[...this.domains].map((domain) => ({ domain, version: 1 }))],
      producerName: options.producer ?? 'alexnet-stream',
      producerVersion: '0.1.0',
      docString: options.docString,
      graph: this.graph(),
      metadataProps: Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value })),
    };
  }
}
