export * from './engine';
export * from './engines/tfjs/backend';
export * from './engines/tfjs/forward';
