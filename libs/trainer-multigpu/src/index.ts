export * from './engine';
export * from './engines/tfjs/backend';
export * from './engines/tfjs/forward';
export * from './engines/tfjs/loss';
export * from './engines/tfjs/sgd-reference';
export * from './engines/tfjs/engine';
export * from './engines';
export * from './train';
