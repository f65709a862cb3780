export * from './errors';
export * from './records';
export * from './framing';
