/**
 * An inference worker thread: one onnxruntime InferenceSession per loaded model version, runs
 * batches on this thread. onnxruntime-node's `run()` blocks the thread it is called on (a
 * synchronous native call wrapped in a promise: upstream issues #19611, #26968), which is why
 * it runs here and never on the HTTP thread.
 *
 * Sessions use `intra-op threads = threads` (the pool splits the cores: workers x threads =
 * cores) and do not spin after a run (allow_spinning 0): the cores go to the image decoders
 * between runs instead of to idle spinning threads (measured for `predict`, docs/onnx.md "predict").
 */
import { parentPort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { sessionOptions } from '@alexnet-stream/onnx-export';
import { describeModel, parseModel, readModelBytes } from './model-description';
import type { InferenceReply, InferenceRequest } from './inference-protocol';
import type { TensorSignature } from './model-description';
import { ModelLoadError } from './errors';
import { loadOnnxRuntime, type Ort } from '@alexnet-stream/onnx-export';

const ort = loadOnnxRuntime();

interface Loaded {
  session: Ort.InferenceSession;
  input: TensorSignature;
  dims: number[];
  rowLength: number;
}

const sessions = new Map<number, Loaded>();

function post(reply: InferenceReply, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(reply, transfer);
}

async function load(message: Extract<InferenceRequest, { type: 'load' }>): Promise<void> {
  const started = performance.now();
  const { config } = message;
  let session: Ort.InferenceSession | undefined;
  try {
    const bytes = await readModelBytes(config.path);
    const model = parseModel(bytes, config.path);
    try {
      session = await ort.InferenceSession.create(bytes, sessionOptions({ intraOpNumThreads: message.threads, allowSpinning: false }));
    } catch (err) {
      throw new ModelLoadError(`${config.path}: onnxruntime cannot load the model (${(err as Error).message.split('\n')[0]})`);
    }
    const description = await describeModel(config, model, bytes.length, session);
    const dims = description.input.shape.slice(1);
    sessions.set(message.version, { session, input: description.input, dims, rowLength: description.inputLength });
    post({ type: 'loaded', version: message.version, description, ms: performance.now() - started });
  } catch (err) {
    if (session) await session.release().catch(() => undefined);
    const text = err instanceof ModelLoadError ? err.message : `${config.path}: ${(err as Error).message}`;
    post({ type: 'load-failed', version: message.version, message: text });
  }
}

async function run(message: Extract<InferenceRequest, { type: 'run' }>): Promise<void> {
  const loaded = sessions.get(message.version);
  if (!loaded) {
    post({ type: 'run-failed', id: message.id, message: `model version ${message.version} is not loaded`, input: message.input }, [message.input]);
    return;
  }
  try {
    const length = message.n * loaded.rowLength;
    const shape = [message.n, ...loaded.dims];
    // A view of the transferred buffer: no copy on the way in.
    const tensor =
      loaded.input.datatype === 'FP32'
        ? new ort.Tensor('float32', new Float32Array(message.input, 0, length), shape)
        : new ort.Tensor('uint8', new Uint8Array(message.input, 0, length), shape);
    const started = performance.now();
    const result = await loaded.session.run({ [loaded.input.name]: tensor }, message.outputs);
    const ms = performance.now() - started;
    // Copies of n x classes floats (small): the session's own arrays cannot be transferred.
    const outputs = message.outputs.map((name) => ({ name, data: (result[name].data as Float32Array).slice() }));
    post({ type: 'result', id: message.id, outputs, input: message.input, ms }, [message.input, ...outputs.map((o) => o.data.buffer as ArrayBuffer)]);
  } catch (err) {
    post({ type: 'run-failed', id: message.id, message: (err as Error).message.split('\n')[0], input: message.input }, [message.input]);
  }
}

parentPort!.on('message', (message: InferenceRequest) => {
  switch (message.type) {
    case 'load':
      void load(message);
      break;
    case 'unload': {
      const loaded = sessions.get(message.version);
      sessions.delete(message.version);
      if (loaded) void loaded.session.release().catch(() => undefined);
      break;
    }
    case 'run':
      void run(message);
      break;
  }
});
