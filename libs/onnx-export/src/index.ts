export * from './proto';
export * from './graph-builder';
