/** Messages between the server's main thread and its image decoding worker threads (decode-worker.ts). */
import type { Preprocessing } from './model-description';

export type DecodeRequest =
  /** Preprocessing `id` (a model version's) is used by later decode tasks; sent before them. */
  | { type: 'configure'; id: number; pre: Preprocessing }
  | { type: 'release'; id: number }
  | { type: 'decode'; task: number; pre: number; bytes: Uint8Array; maxPixels: number; maxPixelsName: string };

/** Why an image was refused; also the `reason` label of the rejected-images metric. */
export type RejectReason = 'empty' | 'not_an_image' | 'too_many_pixels' | 'undecodable';

export type DecodeReply =
  | { task: number; ok: true; row: Float32Array | Uint8Array; width: number; height: number; decodeMs: number }
  | { task: number; ok: false; reason: RejectReason; message: string };
