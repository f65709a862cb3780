/**
 * The one tensor-map type: parameter name (`conv1.weight`, …) → float32 data, flat, in the
 * layouts of the model spec (OIHW, [out, in]). Weights, velocities and averaged replicas are
 * all this; the shape of each tensor is the spec's (`parameterList(spec)`).
 */
export type NamedTensors = Record<string, Float32Array>;
