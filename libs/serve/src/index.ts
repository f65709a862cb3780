export * from './errors';
export * from './options';
export type { ModelDescription, Preprocessing, TensorSignature, V2Datatype } from './model-description';
export { startServer, runServer } from './server';
export type { ServerHandle, ReloadResult } from './server';
