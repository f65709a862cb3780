/**
 * Devices → onnxruntime execution providers, in one place (DESIGN §5). Every command and library
 * that creates a session on a user's device goes through here:
 *
 * - `parseDevice('webgpu:0')`: the device names users type: `cpu`, `webgpu[:i]`, `cuda[:i]`.
 * - `deviceProblem(device)`: what this onnxruntime-node lacks for it, known without starting a
 *   GPU (`listSupportedBackends()`, the CUDA provider's library), or undefined.
 * - `createSessionOn(model, devices, options, what)`: an InferenceSession on the devices; when
 *   onnxruntime cannot start the provider, a `DeviceError` (exit code 2) whose message says in
 *   one line what is missing, e.g.
 *     `webgpu: no GPU adapter — needs libvulkan.so.1 and a Vulkan driver (…)`
 *     `cuda: this onnxruntime-node has no CUDA provider — reinstall with ONNXRUNTIME_NODE_INSTALL=cuda12, needs CUDA 12 and cuDNN 9`
 *
 * The providers (onnxruntime-node 1.30, linux-x64):
 * - `cpu`: always there.
 * - `webgpu`: bundled (experimental upstream). Dawn on Vulkan: needs `libvulkan.so.1` and a
 *   Vulkan driver; Mesa's lavapipe (software) counts, so it runs on machines without a GPU too.
 *   Which driver/GPU is the Vulkan loader's business (`VK_ICD_FILENAMES`, `VK_DRIVER_FILES`):
 *   nothing here sets them. onnxruntime-node 1.30 cannot pick an adapter by index (its WebGPU
 *   options have no device index; Dawn takes its preferred adapter, a discrete GPU first), so
 *   only `webgpu` / `webgpu:0` exist here; one GPU per worker comes from the environment the
 *   worker runs in (one GPU per host or container, each worker on `webgpu`).
 * - `cuda`: only where onnxruntime-node's install script fetched its CUDA 12 provider, which
 *   this repo's `.npmrc` skips (the download is outside the npm registry): docs/gpus.md.
 *
 * onnxruntime-node is loaded on first use, with telemetry off (DESIGN §2).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AlexnetStreamError, InvalidParameterError } from '@alexnet-stream/core';
import { loadOnnxRuntime, type Ort } from './onnxruntime';

export type DeviceKind = 'cpu' | 'webgpu' | 'cuda';

export interface Device {
  kind: DeviceKind;
  /** The device index (`cuda:1` → 1); 0 when not given. */
  index: number;
  /** As the user wrote it, for messages. */
  name: string;
}

/** A device this machine or this onnxruntime-node cannot run on; the message is one line. */
export class DeviceError extends AlexnetStreamError {
  constructor(message: string) {
    super(message, { code: 'ERR_DEVICE', exitCode: 2 });
  }
}

/** `cpu`, `webgpu`, `webgpu:0`, `cuda`, `cuda:3` → a Device; anything else is an InvalidParameterError. */
export function parseDevice(text: string): Device {
  const m = typeof text === 'string' ? /^(cpu|webgpu|cuda)(?::(\d{1,3}))?$/.exec(text.trim()) : null;
  if (!m || (m[1] === 'cpu' && m[2] !== undefined)) {
    throw new InvalidParameterError('device', 'cpu, webgpu[:<index>] or cuda[:<index>]', text);
  }
  return { kind: m[1] as DeviceKind, index: m[2] === undefined ? 0 : Number(m[2]), name: text.trim() };
}

export function parseDevices(devices: readonly string[]): Device[] {
  if (!Array.isArray(devices) || devices.length === 0) {
    throw new InvalidParameterError('devices', 'a non-empty list of devices (cpu, webgpu, cuda:0, …)', devices);
  }
  return devices.map(parseDevice);
}

/** The kind of device a session on `devices` computes on: the first that is not `cpu`, else `cpu`. */
export function primaryDeviceKind(devices: readonly string[]): DeviceKind {
  return parseDevices(devices).find((d) => d.kind !== 'cpu')?.kind ?? 'cpu';
}

/** onnxruntime execution-provider configs for `devices` (preference order; cpu is always the fallback). */
export function executionProvidersFor(devices: readonly string[]): Ort.InferenceSession.ExecutionProviderConfig[] {
  return parseDevices(devices).map((d) => {
    if (d.kind === 'cpu') return 'cpu';
    if (d.kind === 'cuda') return { name: 'cuda', deviceId: d.index };
    return 'webgpu';
  });
}

const CUDA_INSTALL_HINT = 'reinstall with ONNXRUNTIME_NODE_INSTALL=cuda12, needs CUDA 12 and cuDNN 9 (docs/gpus.md)';

/** The folder of onnxruntime-node's native binding, where its install script puts the CUDA provider. */
function bindingDir(): string | undefined {
  try {
    const pkg = path.dirname(require.resolve('onnxruntime-node/package.json'));
    return path.join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
  } catch {
    return undefined;
  }
}

/**
 * What this onnxruntime-node lacks for `device`, found without starting it (a GPU adapter is
 * only known by trying: `createSessionOn` says that one), or undefined.
 */
export function deviceProblem(device: Device): string | undefined {
  if (device.kind === 'cpu') return undefined;
  const ort = loadOnnxRuntime();
  const backends = typeof ort.listSupportedBackends === 'function' ? ort.listSupportedBackends() : [];
  const listed = backends.some((b) => b.name === device.kind);
  if (device.kind === 'webgpu') {
    if (!listed)
      return `webgpu: this onnxruntime-node (${process.platform}-${process.arch}) has no WebGPU provider — it ships one for linux-x64, win32 and darwin`;
    if (device.index !== 0) {
      return `${device.name}: onnxruntime-node 1.30 cannot choose a WebGPU adapter by index (it takes the first GPU Dawn prefers) — give each worker its own GPU from outside (one per host or container) and use --devices webgpu`;
    }
    return undefined;
  }
  const dir = bindingDir();
  if (!listed || !dir || !fs.existsSync(path.join(dir, 'libonnxruntime_providers_cuda.so'))) {
    return `cuda: this onnxruntime-node has no CUDA provider — ${CUDA_INSTALL_HINT}`;
  }
  return undefined;
}

/** Throws the DeviceError of the first device in `devices` that cannot work here. */
export function checkDevices(devices: readonly string[]): void {
  for (const d of parseDevices(devices)) {
    const problem = deviceProblem(d);
    if (problem) throw new DeviceError(problem);
  }
}

/** Whether the Vulkan loader library can be found where the dynamic linker looks (a diagnosis only). */
function vulkanLoaderFound(): boolean {
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    '/lib/x86_64-linux-gnu',
    '/usr/lib/x86_64-linux-gnu',
    '/lib64',
    '/usr/lib64',
    '/lib',
    '/usr/lib',
    '/usr/local/lib',
  ];
  return dirs.some((d) => {
    try {
      return fs.statSync(path.join(d, 'libvulkan.so.1')).size > 0;
    } catch {
      return false;
    }
  });
}

/** The one-line DeviceError for a provider that onnxruntime failed to start (`message`: its error). */
export function explainProviderFailure(kinds: readonly DeviceKind[], message: string): DeviceError | undefined {
  const first =
    message
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l.length > 0) ?? message;
  if (kinds.includes('webgpu') && /adapter|dawn|vulkan|webgpu/i.test(message)) {
    const why = vulkanLoaderFound()
      ? "libvulkan.so.1 is there, but no Vulkan driver offers an adapter: install the GPU's Vulkan driver (or Mesa's lavapipe, mesa-vulkan-drivers 25 from Debian bookworm-backports; Mesa 22 is refused), or point VK_ICD_FILENAMES at its ICD file"
      : 'libvulkan.so.1 was not found: install the Vulkan loader (Debian: libvulkan1) and a Vulkan driver';
    // onnxruntime's message starts with a source path and a C++ signature; Dawn's reason is at the end.
    const reason = /Failed to [^\n]*/.exec(message)?.[0].trim() ?? first.slice(-200);
    return new DeviceError(`webgpu: no GPU adapter — needs libvulkan.so.1 and a Vulkan driver (${why}; onnxruntime: ${reason})`);
  }
  if (kinds.includes('cuda') && /cuda|shared librar|providers_shared|cudnn|cublas/i.test(message)) {
    return new DeviceError(
      `cuda: the CUDA provider did not start — needs CUDA 12, cuDNN 9 and an NVIDIA driver on the library path (onnxruntime: ${first.slice(0, 200)})`,
    );
  }
  return undefined;
}

/**
 * An InferenceSession for `model` on `devices` (their providers replace `options.executionProviders`).
 * Devices this onnxruntime-node cannot have are refused before anything starts; a provider that
 * fails to start becomes a one-line DeviceError; any other failure is rethrown as is.
 */
export async function createSessionOn(
  model: Uint8Array,
  devices: readonly string[],
  options: Ort.InferenceSession.SessionOptions = {},
): Promise<Ort.InferenceSession> {
  checkDevices(devices);
  const ort = loadOnnxRuntime();
  const kinds = parseDevices(devices).map((d) => d.kind);
  try {
    // Errors come back as exceptions; onnxruntime's warnings (node placement notes) only clutter stderr.
    return await ort.InferenceSession.create(model, { logSeverityLevel: 3, ...options, executionProviders: executionProvidersFor(devices) });
  } catch (err) {
    throw explainProviderFailure(kinds, (err as Error).message) ?? err;
  }
}

let webgpuProbe: Promise<string | undefined> | undefined;

/**
 * Undefined when a WebGPU adapter works here (a one-op session runs on it), else the one-line
 * reason: what tests skip with, and what `alexnet-stream` prints before a long job fails late.
 * The answer is cached for the process.
 */
export function webgpuUnavailable(): Promise<string | undefined> {
  webgpuProbe ??= (async () => {
    const problem = deviceProblem(parseDevice('webgpu'));
    if (problem) return problem;
    // A one-node model (Relu on 4 floats), written out by hand so that probing needs no builder.
    const { GraphBuilder } = require('./graph-builder') as typeof import('./graph-builder');
    const { encodeModel } = require('./proto') as typeof import('./proto');
    const b = new GraphBuilder('webgpu-probe');
    b.input('x', 'float32', [4]);
    b.output(b.op('Relu', ['x']), 'float32', [4], 'y');
    try {
      const ort = loadOnnxRuntime();
      const session = await createSessionOn(encodeModel(b.model()), ['webgpu'], { logSeverityLevel: 3 });
      try {
        const out = await session.run({ x: new ort.Tensor('float32', Float32Array.of(-1, 2, -3, 4), [4]) });
        const y = out.y.data as Float32Array;
        return y[0] === 0 && y[1] === 2 ? undefined : `webgpu: a test run gave wrong values (${Array.from(y).join(', ')})`;
      } finally {
        await session.release();
      }
    } catch (err) {
      return (err as Error).message.split('\n')[0];
    }
  })();
  return webgpuProbe;
}
