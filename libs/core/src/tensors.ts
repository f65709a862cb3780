/**
 * The one tensor-map type: parameter name (`conv1.weight`, …) → float32 data, flat, in the
 * layouts of the model spec (OIHW, [out, in]). Weights, velocities and averaged replicas are
 * all this; the shape of each tensor is the spec's (`parameterList(spec)`).
 */
export type NamedTensors = Record<string, Float32Array>;

/** A mean image (`mean.npy`, the seed's `img_mean.npy`): float32, channels x height x width. */
export interface MeanImage {
  channels: number;
  height: number;
  width: number;
  data: Float32Array;
}
