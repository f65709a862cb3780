/**
 * The one door to onnxruntime-node: every library, the CLI, worker threads, tests and benches
 * get the module from `loadOnnxRuntime()`, never from `require('onnxruntime-node')` directly.
 *
 * Why: onnxruntime-node 1.30 (linux) has telemetry on. The first session a process creates
 * writes `$TMPDIR/mat-debug-<pid>.log` (the telemetry SDK's debug log), `$TMPDIR/.ses`, and a
 * device id plus an event queue under `~/.cache/Microsoft/DeveloperTools/.onnxruntime/`, to be
 * sent wherever a network exists (measured with `strace -f -e trace=file`; DESIGN §2). The
 * native library reads one switch, the environment variable `ORT_DISABLE_TELEMETRY=1`, when it
 * creates its environment (the first session); onnxruntime-node exposes no API for it (the C
 * API's `DisableTelemetryEvents` is not bound). With it set, a process writes none of those.
 *
 * Threads: on the main thread `process.env` is the real environment, so setting it here is
 * enough. A worker thread has a private copy of the environment (unless started with
 * `env: SHARE_ENV`), and what it sets there is invisible to native code: the main thread must
 * set the switch before such a worker loads onnxruntime. `loadOnnxRuntime()` on the main thread
 * does that, and so does `disableOnnxRuntimeTelemetry()` (which loads nothing, for a main
 * thread that only starts workers); in a worker whose inherited environment lacks the switch,
 * `loadOnnxRuntime()` throws instead of writing telemetry.
 *
 * Use:
 *   import { loadOnnxRuntime, type Ort } from '@alexnet-stream/onnx-export';
 *   const ort = loadOnnxRuntime();            // lazy: the native module loads on the first call
 *   const session: Ort.InferenceSession = await ort.InferenceSession.create(bytes, options);
 * In plain JS (benches): `require('@alexnet-stream/onnx-export/onnxruntime').loadOnnxRuntime()`
 * (the subpath loads neither protobufjs nor the rest of the package).
 */
import { isMainThread } from 'node:worker_threads';
import type * as OnnxRuntimeNode from 'onnxruntime-node';
import { AlexnetStreamError } from '@alexnet-stream/core';

/** The onnxruntime-node module's type: use `Ort.Tensor`, `Ort.InferenceSession` in type positions. */
export type OnnxRuntime = typeof OnnxRuntimeNode;
export type * as Ort from 'onnxruntime-node';

/** The variable onnxruntime's native library reads when it creates its environment. */
export const ORT_TELEMETRY_SWITCH = 'ORT_DISABLE_TELEMETRY';

let loaded: OnnxRuntime | undefined;

/**
 * Turn onnxruntime's telemetry off for this whole process, before anything loads it. On the
 * main thread it sets the real environment; in a worker thread it can only check that the
 * main thread did (a worker's `process.env` is its own copy), and throws otherwise.
 */
export function disableOnnxRuntimeTelemetry(): void {
  if (process.env[ORT_TELEMETRY_SWITCH] === '1') return;
  if (!isMainThread) {
    throw new AlexnetStreamError(
      `onnxruntime was loaded in a worker thread, but its telemetry switch (${ORT_TELEMETRY_SWITCH}=1) is not in the process environment, ` +
        'and a worker thread cannot set it (its process.env is a copy): call disableOnnxRuntimeTelemetry() or loadOnnxRuntime() from ' +
        '@alexnet-stream/onnx-export on the main thread before starting the worker',
      { code: 'ERR_ONNXRUNTIME_TELEMETRY' },
    );
  }
  process.env[ORT_TELEMETRY_SWITCH] = '1';
}

/** onnxruntime-node, loaded on the first call with telemetry off (see above); the same module after. */
export function loadOnnxRuntime(): OnnxRuntime {
  if (loaded) return loaded;
  disableOnnxRuntimeTelemetry();
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  loaded = require('onnxruntime-node') as OnnxRuntime;
  return loaded;
}
