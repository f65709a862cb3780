// Reading onnxruntime's profiler output (a Chrome-trace JSON), shared by bench:train and bench:ab.
import { readFileSync } from 'node:fs';

/**
 * Kernel time per op type over the last `model_run` of an onnxruntime profile: the run's wall
 * time, the summed kernel time and each op type's share of it, largest first. The steps' ONNX
 * `Loop` node is left out: its time is its body's ops, which are counted one by one.
 */
export function summarizeProfile(path) {
  const events = JSON.parse(readFileSync(path, 'utf8'));
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  const last = runs[runs.length - 1];
  const byOp = new Map();
  let total = 0;
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || e.ts < last.ts || e.ts > last.ts + last.dur) continue;
    if (e.args.op_name === 'Loop') continue;
    byOp.set(e.args.op_name, (byOp.get(e.args.op_name) ?? 0) + e.dur);
    total += e.dur;
  }
  return {
    runMs: last.dur / 1000,
    kernelMs: total / 1000,
    ops: [...byOp].sort((a, b) => b[1] - a[1]).map(([op, us]) => ({ op, ms: us / 1000, share: us / total })),
  };
}
