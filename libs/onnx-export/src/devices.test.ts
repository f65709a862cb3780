/**
 * Provider selection (devices.ts): device names, the one-line errors for a device that cannot
 * work here (exit code 2), and, where a WebGPU adapter exists (a GPU, or Mesa's lavapipe on the
 * CPU machines: `.ci/run` installs it), inference of an exported model on webgpu equal to CPU.
 *
 * Tolerance of webgpu against cpu: 1e-4 of the largest logit. Both compute in float32 with
 * different summation orders and kernels (measured on lavapipe: ~2e-7 relative); an
 * op that went wrong (layout, padding, groups) is off by O(1).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { initParameters, narrowSpec, alexnetSpec } from '@alexnet-stream/model-alexnet';
import {
  checkDevices,
  createSessionOn,
  DeviceError,
  deviceProblem,
  executionProvidersFor,
  explainProviderFailure,
  parseDevice,
  primaryDeviceKind,
  webgpuUnavailable,
} from './devices';
import { InferenceModel } from './inference';
import { lowerInference } from './lower';
import { loadOnnxRuntime } from './onnxruntime';
import { encodeModel } from './proto';

test('device names: cpu, webgpu[:i], cuda[:i]; anything else is a usage error naming it', () => {
  assert.deepEqual(parseDevice('cuda:3'), { kind: 'cuda', index: 3, name: 'cuda:3' });
  assert.deepEqual(parseDevice('webgpu'), { kind: 'webgpu', index: 0, name: 'webgpu' });
  assert.deepEqual(executionProvidersFor(['webgpu:0', 'cuda:1', 'cpu']), ['webgpu', { name: 'cuda', deviceId: 1 }, 'cpu']);
  assert.equal(primaryDeviceKind(['cpu', 'webgpu']), 'webgpu');
  assert.equal(primaryDeviceKind(['cpu']), 'cpu');
  for (const bad of ['gpu', 'cpu:0', 'cuda:x', 'webgpu:', '']) {
    assert.throws(
      () => parseDevice(bad),
      (err: Error & { exitCode?: number }) =>
        err.exitCode === 2 && err.message === `Expected cpu, webgpu[:<index>] or cuda[:<index>] for device but received ${JSON.stringify(bad)}`,
    );
  }
  assert.throws(() => executionProvidersFor([]), /non-empty list of devices/);
});

test('a device this onnxruntime-node cannot have is refused before anything starts, in one line', () => {
  assert.equal(deviceProblem(parseDevice('cpu')), undefined);
  // onnxruntime-node 1.30 has no adapter index for WebGPU: webgpu:1 would silently be GPU 0.
  assert.match(deviceProblem(parseDevice('webgpu:1'))!, /^webgpu:1: onnxruntime-node 1\.30 cannot choose a WebGPU adapter by index .* use --devices webgpu$/);
  // The npm package has no CUDA provider unless its install script fetched it (.npmrc skips that).
  const cuda = deviceProblem(parseDevice('cuda:0'));
  if (cuda !== undefined) {
    assert.equal(
      cuda,
      'cuda: this onnxruntime-node has no CUDA provider — reinstall with ONNXRUNTIME_NODE_INSTALL=cuda12, needs CUDA 12 and cuDNN 9 (docs/gpus.md)',
    );
    assert.throws(
      () => checkDevices(['cpu', 'cuda:0']),
      (err: unknown) => err instanceof DeviceError && err.exitCode === 2 && err.message === cuda,
    );
  }
});

test("onnxruntime's provider failures become one line that says what is missing", () => {
  const dawn =
    '/onnxruntime_src/onnxruntime/core/providers/webgpu/webgpu_context.cc:136 onnxruntime::webgpu::WebGpuContext::Initialize(...) adapter_result.status == wgpu::RequestAdapterStatus::Success was false. Failed to get a WebGPU adapter: No supported adapters\n';
  const webgpu = explainProviderFailure(['webgpu'], dawn)!;
  assert.ok(webgpu instanceof DeviceError && webgpu.exitCode === 2);
  assert.match(webgpu.message, /^webgpu: no GPU adapter — needs libvulkan\.so\.1 and a Vulkan driver \(.*No supported adapters\)$/);
  assert.doesNotMatch(webgpu.message, /\n/);
  const cuda = explainProviderFailure(['cuda'], 'OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library')!;
  assert.match(cuda.message, /^cuda: the CUDA provider did not start — needs CUDA 12, cuDNN 9 and an NVIDIA driver/);
  // A failure that is not the provider's (a bad model) is not dressed up as one.
  assert.equal(explainProviderFailure(['webgpu'], 'Load model from memory failed: Protobuf parsing failed.'), undefined);
});

test('webgpu without any Vulkan driver: createSessionOn fails with the one-line DeviceError (child process, no driver)', () => {
  // VK_ICD_FILENAMES naming no file leaves the Vulkan loader without drivers, GPU or not.
  const script = `
    const { createSessionOn, GraphBuilder, encodeModel } = require(${JSON.stringify(__dirname)});
    const b = new GraphBuilder('t'); b.input('x', 'float32', [2]); b.output(b.op('Relu', ['x']), 'float32', [2], 'y');
    createSessionOn(encodeModel(b.model()), ['webgpu'], { logSeverityLevel: 3 })
      .then(() => { console.log('UNEXPECTED: a session was created'); process.exit(0); })
      .catch((e) => { console.log(JSON.stringify({ name: e.constructor.name, exitCode: e.exitCode, message: e.message })); });`;
  const r = spawnSync(process.execPath, ['-e', script], {
    env: { ...process.env, VK_ICD_FILENAMES: '/nonexistent/icd.json', VK_DRIVER_FILES: '/nonexistent/icd.json' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  const line = r.stdout.trim().split('\n').pop()!;
  const e = JSON.parse(line);
  assert.equal(e.name, 'DeviceError');
  assert.equal(e.exitCode, 2);
  assert.match(
    e.message,
    /^webgpu: no GPU adapter — needs libvulkan\.so\.1 and a Vulkan driver \(libvulkan\.so\.1 is there, but no Vulkan driver offers an adapter/,
  );
});

test('an exported model on webgpu equals the CPU provider (narrow at batch 1 and 3, the full AlexNet at batch 1)', async (t) => {
  const reason = await webgpuUnavailable();
  if (reason) return t.skip(`no WebGPU adapter here: ${reason}`);
  // lavapipe is slow: the full-width network (~40 s of a loaded 2-core machine) at batch 1 only.
  for (const [spec, batches] of [
    [narrowSpec(alexnetSpec('theano-alexnet', { inputSize: 99, numClasses: 7 }), 8, 64), [1, 3]],
    [alexnetSpec('theano-alexnet', { numClasses: 10 }), [1]],
  ] as const) {
    const weights = initParameters(spec, 11);
    const bytes = encodeModel(lowerInference(spec, weights));
    const cpu = await InferenceModel.fromBytes(bytes, 'model.onnx', { intraOpNumThreads: 1 });
    const gpu = await InferenceModel.fromBytes(bytes, 'model.onnx', { devices: ['webgpu'] });
    for (const n of batches) {
      const batch = Float32Array.from({ length: n * gpu.inputLength }, (_, i) => 40 * Math.sin(i * 0.37));
      const want = Float32Array.from((await cpu.run(batch, n)).logits);
      const got = (await gpu.run(batch, n)).logits;
      const scale = Math.max(...want.map(Math.abs));
      const diff = Math.max(...want.map((v, i) => Math.abs(v - got[i])));
      assert.ok(diff <= 1e-4 * scale, `${spec.inputSize}px batch ${n}: max difference ${diff} for logits up to ${scale}`);
    }
    await cpu.close();
    await gpu.close();
  }
});

test('createSessionOn on webgpu runs the model on the GPU provider where an adapter exists', async (t) => {
  const reason = await webgpuUnavailable();
  if (reason) return t.skip(`no WebGPU adapter here: ${reason}`);
  const spec = narrowSpec(alexnetSpec('theano-alexnet', { inputSize: 67, numClasses: 5 }), 8, 64);
  const session = await createSessionOn(encodeModel(lowerInference(spec, initParameters(spec, 1))), ['webgpu'], {
    logSeverityLevel: 3,
    preferredOutputLocation: 'gpu-buffer',
  });
  // Only a session on the WebGPU provider can leave an output in a GPU buffer.
  const { Tensor } = loadOnnxRuntime();
  const out = await session.run({ data: new Tensor('float32', new Float32Array(3 * 67 * 67), [1, 3, 67, 67]) });
  assert.equal(out.logits.location, 'gpu-buffer');
  out.logits.dispose();
  out.prob.dispose();
  await session.release();
});
