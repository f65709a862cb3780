/**
 * Decoded pixels → one model input row, exactly as `alexnet-stream predict` does it: the
 * pipeline's center crop and mean subtraction (`cropMirrorSubtract` with a center plan and the
 * mean image), then, for models served with --std, a division per channel; or, for models
 * exported --with-preprocessing, the pixels as HWC uint8.
 */
import type { MeanImage } from '@alexnet-stream/core';
import { type BatchRecord, centerOffset, cropMirrorSubtract, type CropPlan } from '@alexnet-stream/stream-io';
import type { Preprocessing } from './model-description';

export interface PreparedPreprocessing {
  pre: Preprocessing;
  mean?: MeanImage;
  plan?: CropPlan;
  /** Reused record wrapper around each image's pixels (cropMirrorSubtract takes a batch record). */
  record: BatchRecord;
}

export function preparePreprocessing(pre: Preprocessing): PreparedPreprocessing {
  const s = pre.imageSize;
  const record: BatchRecord = {
    type: 'batch',
    dtype: 'uint8',
    shape: [1, 3, s, s],
    layout: 'NCHW',
    data: new Uint8Array(0),
    labels: new Int32Array(1),
    keys: [''],
  };
  if (pre.layout === 'nhwc-uint8') return { pre, record };
  const offset = centerOffset(s, pre.crop);
  return {
    pre,
    record,
    mean: { channels: 3, height: s, width: s, data: pre.meanImage! },
    plan: { crop: pre.crop, offsetY: Int32Array.of(offset), offsetX: Int32Array.of(offset), mirror: new Uint8Array(1) },
  };
}

/** Pixels CHW (3 x S x S) → HWC into a new array. */
export function chwToHwc(chw: Uint8Array, size: number): Uint8Array {
  const plane = size * size;
  const out = new Uint8Array(chw.length);
  for (let i = 0, j = 0; i < plane; i++, j += 3) {
    out[j] = chw[i];
    out[j + 1] = chw[plane + i];
    out[j + 2] = chw[2 * plane + i];
  }
  return out;
}

/** One input row (its own ArrayBuffer, transferable) from CHW pixels of imageSize x imageSize. */
export function preprocessImage(chw: Uint8Array, prepared: PreparedPreprocessing): Float32Array | Uint8Array {
  const { pre } = prepared;
  if (pre.layout === 'nhwc-uint8') return chwToHwc(chw, pre.imageSize);
  prepared.record.data = chw;
  const out = cropMirrorSubtract(prepared.record, prepared.mean!, prepared.plan!, new Float32Array(3 * pre.crop * pre.crop));
  prepared.record.data = new Uint8Array(0);
  if (pre.std) {
    const plane = pre.crop * pre.crop;
    for (let c = 0; c < 3; c++) {
      const inv = pre.std[c];
      for (let i = c * plane, end = (c + 1) * plane; i < end; i++) out[i] /= inv;
    }
  }
  return out;
}
