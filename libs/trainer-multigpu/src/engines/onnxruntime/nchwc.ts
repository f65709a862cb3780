/**
 * The NCHWc block size of this machine's onnxruntime CPU kernels (MLAS): 8 with AVX2, 16 with
 * AVX-512, smaller or absent elsewhere. The training graph needs it to lay out blocked weights
 * (graph/rules.ts `convolve`); onnxruntime-node has no API that tells it, so we ask the kernel:
 * ReorderInput pads a 4-channel tensor to exactly one block.
 */
import { GraphBuilder, encodeModel, loadOnnxRuntime } from '@alexnet-stream/onnx-export';
import { NCHWC_DOMAIN } from '../../graph/conv-lowering';

let probed: Promise<number> | undefined;

async function probe(): Promise<number> {
  const ort = loadOnnxRuntime();
  const b = new GraphBuilder('nchwc-probe');
  b.input('x', 'float32', [1, 4, 1, 1]);
  const [y] = b.node('ReorderInput', ['x'], {}, { domain: NCHWC_DOMAIN });
  b.output(y, 'float32', [1, 'C', 1, 1]);
  try {
    const session = await ort.InferenceSession.create(encodeModel(b.model()), { logSeverityLevel: 3 });
    try {
      const out = (await session.run({ x: new ort.Tensor('float32', new Float32Array(4), [1, 4, 1, 1]) }))[y];
      return out.dims[1];
    } finally {
      await session.release();
    }
  } catch {
    return 0; // a build without the contrib ops: plain ONNX convolutions
  }
}

/** The block size (cached per process), or 0 when these kernels are not there; below 8 is not worth blocking. */
export async function nchwcBlockSize(): Promise<number> {
  probed ??= probe();
  const block = await probed;
  return block >= 8 ? block : 0;
}
