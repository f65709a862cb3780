/**
 * Several SGD steps in one onnxruntime run: the train graph (training-graph.ts) becomes the body
 * of an ONNX Loop whose carried state is the parameters and velocities.
 *
 * Why: onnxruntime-node 1.30 copies every fetched output into a new ArrayBuffer after a run, even
 * one it already wrote in place into a pre-allocated buffer. For AlexNet that is 488 MB of
 * weights and velocities per step: measured 0.36 s of a ~2 s step on the 2-core machine
 * (bench/train.mjs shows what the loop buys). Inside a Loop the state stays in onnxruntime
 * between steps, so that copy (and Loop's own copy of its final state) happens once per run.
 *
 * The stepped graph, for a train graph with per-step inputs `data`, `labels`, `lr`, `mask.*` and
 * state `<p>`, `<p>.velocity`:
 *   inputs   `steps` (int64 [], the number of steps K to run), `steps.<input>` ([K, …] each
 *            per-step input stacked: step k reads slice k), `<state>.initial`;
 *   outputs  `<state>.final` (after K steps), `steps.loss`, `steps.top1_errors`,
 *            `steps.top5_errors` ([K]: each step's metrics).
 * The body gathers slice `iter` of each `steps.<input>` under the train graph's own input name, so
 * the train graph's nodes run unchanged: K = 1 is exactly one step of the train graph, and K
 * steps are bit-identical to K runs of it (tested).
 */
import { GraphBuilder, valueInfo } from '@alexnet-stream/onnx-export';
import type { onnx } from '@alexnet-stream/onnx-export';
import { type BuiltGraph, newName, velocityName } from './training-graph';

export const STEP_COUNT = 'steps';
export const stepInputName = (input: string) => `steps.${input}`;
export const initialName = (state: string) => `${state}.initial`;
export const finalName = (state: string) => `${state}.final`;
export const STEP_METRICS = ['loss', 'top1_errors', 'top5_errors'] as const;
export const stepMetricName = (metric: (typeof STEP_METRICS)[number]) => `steps.${metric}`;

/** The train graph's parameters, masks and velocity flag still describe the stepped graph. */
export function steppedTrainGraph(train: BuiltGraph): BuiltGraph {
  if (train.kind !== 'train') throw new Error(`steppedTrainGraph: expected a train graph, got ${train.kind}`);
  const graph = train.model.graph!;
  const state = [...train.params.map((p) => p.name), ...(train.hasVelocities ? train.params.map((p) => velocityName(p.name)) : [])];
  const inputs = new Map((graph.input ?? []).map((v) => [v.name!, v]));
  const outputs = new Map((graph.output ?? []).map((v) => [v.name!, v]));
  const stateSet = new Set(state);
  const perStepInputs = [...inputs.keys()].filter((name) => !stateSet.has(name));
  for (const name of [...state.map(newName), ...STEP_METRICS])
    if (!outputs.has(name)) throw new Error(`steppedTrainGraph: the train graph has no output ${name}`);

  // The body: (iter, cond, state...) → (cond, new state..., metrics...), Loop's signature.
  const gathers: onnx.INodeProto[] = perStepInputs.map((name) => ({
    opType: 'Gather',
    domain: '',
    name: `step_slice.${name}`,
    input: [stepInputName(name), 'iter'],
    output: [name],
    attribute: [{ name: 'axis', type: 2 /* INT */, i: 0 }],
  }));
  const body: onnx.IGraphProto = {
    name: `${graph.name}-step`,
    node: [...gathers, ...(graph.node ?? []), { opType: 'Identity', domain: '', name: 'step_cond', input: ['cond'], output: ['cond.next'] }],
    input: [valueInfo('iter', 'int64', []), valueInfo('cond', 'bool', []), ...state.map((name) => inputs.get(name)!)],
    output: [valueInfo('cond.next', 'bool', []), ...state.map((name) => outputs.get(newName(name))!), ...STEP_METRICS.map((m) => outputs.get(m)!)],
    initializer: graph.initializer,
    valueInfo: graph.valueInfo,
  };

  const b = new GraphBuilder(`${graph.name}-steps`);
  b.input(STEP_COUNT, 'int64', []);
  for (const name of perStepInputs) b.inputLike(stepInputName(name), inputs.get(name)!, ['K']);
  for (const name of state) b.inputLike(initialName(name), inputs.get(name)!);
  b.node(
    'Loop',
    [STEP_COUNT, '', ...state.map(initialName)],
    { body: { graph: body } },
    { outputs: [...state.map(finalName), ...STEP_METRICS.map(stepMetricName)], name: 'steps' },
  );
  for (const name of state) b.output(finalName(name), 'float32', shapeOf(inputs.get(name)!));
  for (const m of STEP_METRICS) b.output(stepMetricName(m), 'float32', ['K']);
  const model = b.model({ docString: `${train.model.docString ?? 'training graph'}, run for \`steps\` steps in a Loop` });
  // The body may use onnxruntime's contrib domains (NCHWc): the model must import them.
  model.opsetImport = train.model.opsetImport;
  return { ...train, model };
}

function shapeOf(v: onnx.IValueInfoProto): number[] {
  return (v.type!.tensorType!.shape!.dim ?? []).map((d) => Number(d.dimValue));
}
