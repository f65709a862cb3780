/**
 * `@alexnet-stream/trainer-multigpu/testing`: fixtures for tests of other packages (a small
 * learnable shard data dir, a tiny spec that trains in milliseconds). Not part of the barrel.
 */
export { tinySpec, writeFixtureDataDir, writeSpecFile, type FixtureOptions } from './train/fixtures.test-util';
