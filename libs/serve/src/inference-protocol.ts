/** Messages between the server's main thread and its inference worker threads (inference-worker.ts). */
import type { ModelDescription } from './model-description';
import type { ModelConfig } from './options';

export type InferenceRequest =
  /** Load `config.path` as `version` beside whatever is loaded (a reload swaps only when every worker has it). */
  | { type: 'load'; version: number; config: ModelConfig; threads: number }
  | { type: 'unload'; version: number }
  /**
   * Run the first n rows of `input` (float32 or uint8 per the model's input) and answer the
   * named outputs. `input` is transferred, and transferred back with the result for reuse.
   */
  | { type: 'run'; id: number; version: number; input: ArrayBuffer; n: number; outputs: string[] };

export type InferenceReply =
  | { type: 'loaded'; version: number; description: ModelDescription; ms: number }
  | { type: 'load-failed'; version: number; message: string }
  | { type: 'result'; id: number; outputs: { name: string; data: Float32Array }[]; input: ArrayBuffer; ms: number }
  | { type: 'run-failed'; id: number; message: string; input: ArrayBuffer };
