/**
 * Loading tfjs with the fastest backend that is present (DESIGN §5, "tfjs (optional)"):
 * `@tensorflow/tfjs-node-gpu` (CUDA libtensorflow), else `@tensorflow/tfjs-node` (CPU
 * libtensorflow), else pure-JS `@tensorflow/tfjs` on its `cpu` backend. The two native packages
 * are optional: they do not install where Google's binary host is unreachable (DESIGN §2), so
 * they are loaded with `require` in try/catch and a missing one is not a build or run error.
 */
import type * as tfjs from '@tensorflow/tfjs';

export type Tf = typeof tfjs;

export interface LoadedTfjs {
  tf: Tf;
  /** The package that loaded, e.g. `@tensorflow/tfjs-node-gpu` or `@tensorflow/tfjs`. */
  packageName: string;
  /** `tf.getBackend()` after loading: `tensorflow` (tfjs-node, -gpu) or `cpu`. */
  backend: string;
}

export interface LoadTfjsOptions {
  /** One line on stderr naming the package and backend chosen (only on the first load). */
  verbose?: boolean;
}

const CANDIDATES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

let loaded: Promise<LoadedTfjs> | undefined;

/**
 * tfjs with the best backend present, chosen once per process (later calls return the same
 * module: tensors of two tfjs instances do not mix).
 */
export function loadTfjs(options: LoadTfjsOptions = {}): Promise<LoadedTfjs> {
  if (!loaded) {
    loaded = chooseTfjs().then((result) => {
      if (options.verbose) process.stderr.write(`tfjs: using ${result.packageName} (backend ${result.backend})\n`);
      return result;
    });
    loaded.catch(() => {
      loaded = undefined;
    }); // a failed load may be retried
  }
  return loaded;
}

async function chooseTfjs(): Promise<LoadedTfjs> {
  const failures: string[] = [];
  for (const packageName of CANDIDATES) {
    let tf: Tf;
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      tf = require(packageName) as Tf; // no types here: same API as @tensorflow/tfjs
    } catch (err) {
      failures.push(`${packageName}: ${(err as Error).message.split('\n')[0]}`);
      continue;
    }
    try {
      await tf.ready();
      return { tf, packageName, backend: tf.getBackend() };
    } catch (err) {
      failures.push(`${packageName}: backend failed to initialise: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const tf = require('@tensorflow/tfjs') as Tf;
  // In Node the webgl backend cannot initialise; ask for cpu explicitly rather than let tfjs
  // try webgl first and log a warning.
  const ok = await tf.setBackend('cpu');
  if (!ok) throw new Error(`tfjs: the cpu backend did not initialise (native backends unavailable: ${failures.join('; ')})`);
  await tf.ready();
  return { tf, packageName: '@tensorflow/tfjs', backend: tf.getBackend() };
}
