/** A tiny model and distinguishable checkpoint versions for the checkpoint hostile tests. */
import { type Checkpoint, initParameters, type ModelSpec } from '@alexnet-stream/model-alexnet';

/** conv 3->4 3x3 on 8x8, then fc 144->3: a checkpoint of a few kB, written in milliseconds. */
export const TINY_SPEC: ModelSpec = {
  specVersion: 1,
  preset: 'theano-alexnet',
  inputChannels: 3,
  inputSize: 8,
  numClasses: 3,
  layers: [
    {
      kind: 'conv',
      name: 'conv1',
      outChannels: 4,
      kernel: 3,
      stride: 1,
      pad: 0,
      group: 1,
      weightInit: { dist: 'normal', std: 0.01 },
      biasInit: { dist: 'constant', value: 0.1 },
    },
    { kind: 'relu', name: 'relu1' },
    { kind: 'flatten', name: 'flatten' },
    { kind: 'fc', name: 'fc8', outFeatures: 3, weightInit: { dist: 'normal', std: 0.01 }, biasInit: { dist: 'constant', value: 0 } },
  ],
};

/** Version v of a checkpoint: weights and momentum seeded by v, `state.version` = v. */
export function checkpointVersion(version: number): Checkpoint {
  const weights = initParameters(TINY_SPEC, version);
  const momentum = initParameters(TINY_SPEC, version + 1000);
  return { spec: TINY_SPEC, weights, momentum, state: { version, epoch: 2 } };
}
