/**
 * Engines by name (DESIGN §5): `onnxruntime` (default, fast) and `tfjs` (optional; pure-JS
 * tfjs is only practical for tiny specs, tfjs-node(-gpu) where it installs). Each engine module
 * is loaded only when asked for, so training on onnxruntime never loads tfjs and vice versa.
 */
import { check, type NamedTensors } from '@alexnet-stream/core';
import type { ModelSpec } from '@alexnet-stream/model-alexnet';
import type { LossConfig, OptimizerConfig, TrainingEngine } from '../engine';

export const ENGINES = ['onnxruntime', 'tfjs'] as const;
export type EngineKind = (typeof ENGINES)[number];

export interface CreateEngineOptions {
  optimizer: OptimizerConfig;
  /** The training loss (label smoothing); default plain cross-entropy. */
  loss?: LossConfig;
  /** Images per step (the largest batch the engine will see). */
  batchSize: number;
  /** Seed of the dropout mask stream. */
  seed: number;
  /** `cpu`, `cuda:0`, … (onnxruntime). */
  devices?: string[];
  /** onnxruntime intra-op threads; undefined: all cores. */
  intraOpThreads?: number;
  /** onnxruntime: most SGD steps per run (stepGroup). */
  stepsPerRun?: number;
  verbose?: boolean;
}

export async function createEngine(name: EngineKind, spec: ModelSpec, weights: NamedTensors, options: CreateEngineOptions): Promise<TrainingEngine> {
  switch (check.oneOf('engine', name, ENGINES)) {
    case 'onnxruntime': {
      const { createOrtEngine } = require('./onnxruntime/engine') as typeof import('./onnxruntime/engine');
      return createOrtEngine(spec, weights, {
        optimizer: options.optimizer,
        loss: options.loss,
        batchSize: options.batchSize,
        seed: options.seed,
        devices: options.devices,
        intraOpThreads: options.intraOpThreads,
        stepsPerRun: options.stepsPerRun,
        verbose: options.verbose,
      });
    }
    case 'tfjs': {
      const { createTfjsEngine } = require('./tfjs/engine') as typeof import('./tfjs/engine');
      return createTfjsEngine(spec, weights, { optimizer: options.optimizer, loss: options.loss, seed: options.seed, verbose: options.verbose });
    }
  }
}
