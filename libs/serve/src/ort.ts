/**
 * The one place this library loads onnxruntime-node, so that switching to a shared loader
 * (one module that loads it with telemetry disabled) is a one-line change here.
 *
 * onnxruntime-node 1.30 writes `/tmp/mat-debug-<pid>.log` and queues telemetry events under
 * `~/.cache` unless telemetry is disabled (DESIGN §2): nothing may be written outside the paths
 * a user gave. The variable is read by the native library from the *process* environment, which
 * only the main thread can change (a worker thread's `process.env` is a copy), so the server's
 * main thread calls `disableOrtTelemetry()` before it starts any worker.
 */
import type * as OrtModule from 'onnxruntime-node';

export type Ort = typeof OrtModule;

export function disableOrtTelemetry(): void {
  process.env.ORT_DISABLE_TELEMETRY = '1';
}

// Also on import: server.ts and kserve.ts import this module before onnx-export, whose barrel
// loads onnxruntime-node (for topK) in the main thread.
disableOrtTelemetry();

let ort: Ort | undefined;

export function loadOrt(): Ort {
  if (!ort) {
    disableOrtTelemetry();
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    ort = require('onnxruntime-node') as Ort;
  }
  return ort;
}
