export * from './rules';
export * from './update';
export * from './training-graph';
export * from './step-loop';
export { NCHWC_DOMAIN } from './conv-lowering';
