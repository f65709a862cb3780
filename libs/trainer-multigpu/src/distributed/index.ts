export * from './errors';
export * from './plan';
export * from './identity';
export * from './launch-env';
export * from './checksum';
export * from './ring';
export * from './zmq-group';
