export * from './spec';
export * from './presets';
export * from './init';
export * from './safetensors';
export * from './checkpoint';
export * from './import-theano';
export * from './atomic-dir';
