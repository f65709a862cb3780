export * from './errors';
export * from './records';
export * from './framing';
export * from './rng';
export * from './npy';
