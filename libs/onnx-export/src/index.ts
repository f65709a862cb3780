export * from './proto';
export * from './graph-builder';
export * from './lower';
export * from './files';
export * from './inference';
export * from './import-onnx';
export * from './onnxruntime';
export * from './devices';
