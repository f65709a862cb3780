/**
 * The loader thread (see loader.ts): runs passes one after another, each producing its batches
 * into a fixed pool of `queueDepth` buffers that travel to the training thread and back.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { AlexnetStreamError, describeError } from '@alexnet-stream/core';
import { readMeanNpy } from '@alexnet-stream/stream-io';
import { BatchProducer, type LoaderSetup, makeProducer, type PassRequest, planPass } from './loader-core';

const setup = workerData as LoaderSetup;
const port = parentPort!;
const length = BatchProducer.outputLength(setup.batchSize, setup.crop);
const meanPromise = readMeanNpy(setup.meanFile);
meanPromise.catch(() => undefined); // reported by the first pass

const free: ArrayBuffer[] = Array.from({ length: setup.queueDepth }, () => new ArrayBuffer(length * 4));
let bufferWaiter: (() => void) | undefined;
const cancelled = new Set<number>();
let chain: Promise<void> = Promise.resolve();

async function takeBuffer(): Promise<ArrayBuffer> {
  // Every buffer is with the training thread: the queue is full, this thread waits (backpressure).
  if (free.length === 0) port.postMessage({ type: 'waiting' });
  while (free.length === 0) await new Promise<void>((resolve) => (bufferWaiter = resolve));
  return free.pop()!;
}

function errorMessage(passId: number | null, err: unknown) {
  const exitCode = err instanceof AlexnetStreamError ? err.exitCode : 1;
  const code = err instanceof AlexnetStreamError ? err.code : undefined;
  return { type: 'error', passId, message: describeError(err), exitCode, code };
}

async function runPass(passId: number, request: PassRequest): Promise<void> {
  try {
    const plan = planPass(setup, request);
    const producer = makeProducer(setup, await meanPromise, request, plan);
    for (let j = request.startIteration; j < plan.iterations; j++) {
      if (cancelled.has(passId)) break;
      const buffer = await takeBuffer();
      if (cancelled.has(passId)) {
        free.push(buffer);
        break;
      }
      const produced = await producer.produce(j, new Float32Array(buffer));
      const data = new Float32Array(buffer, 0, produced.size * 3 * setup.crop * setup.crop);
      port.postMessage({ type: 'batch', passId, index: produced.index, size: produced.size, data, labels: produced.labels }, [
        buffer,
        produced.labels.buffer as ArrayBuffer,
      ]);
    }
    port.postMessage({ type: 'end', passId });
  } catch (err) {
    port.postMessage(errorMessage(passId, err));
  } finally {
    cancelled.delete(passId);
  }
}

port.on('message', (message: { type: string; passId?: number; request?: PassRequest; buffer?: ArrayBuffer }) => {
  if (message.type === 'recycle' && message.buffer) {
    free.push(message.buffer);
    const w = bufferWaiter;
    bufferWaiter = undefined;
    w?.();
  } else if (message.type === 'cancel' && message.passId !== undefined) {
    cancelled.add(message.passId);
  } else if (message.type === 'pass' && message.passId !== undefined && message.request) {
    const { passId, request } = message;
    chain = chain.then(() => runPass(passId, request));
  }
});
