export * from './spec';
export * from './presets';
