import { checkOptional, InvalidParameterError, type ParameterNamer, UsageError } from '@alexnet-stream/core';
/**
 * Where rank, world size and the coordinator address come from: explicit flags first, then a
 * launcher's environment (OpenMPI's mpirun, Slurm's srun, torchrun-style RANK/WORLD_SIZE),
 * then ALEXNET_STREAM_COORDINATOR or MASTER_ADDR + MASTER_PORT. Pure: takes `env` as data.
 */

export interface LaunchFlags {
  rank?: number;
  worldSize?: number;
  coordinator?: string;
}

export interface Launch {
  rank: number;
  worldSize: number;
  coordinator: string;
  /** Ranks sharing this host (to split the cores between them), when a launcher says so. */
  localWorldSize?: number;
  /** Where each value came from, for messages: the parameter (`rank`), or an environment variable (`OMPI_COMM_WORLD_RANK`), … */
  source: { rank: string; worldSize: string; coordinator: string };
}

const RANK_VARS = ['OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'SLURM_PROCID', 'RANK'];
const SIZE_VARS = ['OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'SLURM_NTASKS', 'WORLD_SIZE'];
const LOCAL_SIZE_VARS = ['OMPI_COMM_WORLD_LOCAL_SIZE', 'SLURM_NTASKS_PER_NODE', 'LOCAL_WORLD_SIZE'];

function fromEnv(env: NodeJS.ProcessEnv, names: string[], min: number): { value: number; name: string } | undefined {
  for (const name of names) {
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    const n = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || n < min) throw new InvalidParameterError(`environment variable ${name}`, `an integer >= ${min}`, raw);
    return { value: n, name };
  }
  return undefined;
}

/** The name of a value's source in a message: a parameter as the caller names it, or an environment variable. */
const sourceName = (source: string, name: ParameterNamer): string => (/^[A-Z_]+$/.test(source) || source.includes('/') ? source : name(source));

export function resolveLaunch(flags: LaunchFlags, env: NodeJS.ProcessEnv = process.env): Launch {
  checkOptional.integer('rank', flags.rank, { min: 0 });
  checkOptional.integer('worldSize', flags.worldSize, { min: 1 });
  const rank = flags.rank !== undefined ? { value: flags.rank, name: 'rank' } : fromEnv(env, RANK_VARS, 0);
  const size = flags.worldSize !== undefined ? { value: flags.worldSize, name: 'worldSize' } : fromEnv(env, SIZE_VARS, 1);
  if (!rank) throw new UsageError((name) => `No rank: pass ${name('rank')} or start under a launcher that sets one of ${RANK_VARS.join(', ')}`);
  if (!size) throw new UsageError((name) => `No world size: pass ${name('worldSize')} or start under a launcher that sets one of ${SIZE_VARS.join(', ')}`);
  if (rank.value >= size.value) {
    throw new UsageError(
      (name) => `Rank ${rank.value} (from ${sourceName(rank.name, name)}) must be below the world size ${size.value} (from ${sourceName(size.name, name)})`,
    );
  }
  let coordinator: { value: string; name: string } | undefined;
  if (flags.coordinator) coordinator = { value: flags.coordinator, name: 'coordinator' };
  else if (env.ALEXNET_STREAM_COORDINATOR) coordinator = { value: env.ALEXNET_STREAM_COORDINATOR, name: 'ALEXNET_STREAM_COORDINATOR' };
  else if (env.MASTER_ADDR && env.MASTER_PORT) {
    coordinator = { value: `tcp://${env.MASTER_ADDR}:${env.MASTER_PORT}`, name: 'MASTER_ADDR/MASTER_PORT' };
  }
  if (!coordinator) {
    throw new UsageError(
      (name) =>
        `No coordinator: pass ${name('coordinator')} tcp://HOST:PORT (rank 0 binds it, the others connect) or set ALEXNET_STREAM_COORDINATOR or MASTER_ADDR and MASTER_PORT`,
    );
  }
  parseEndpoint(coordinator.value, coordinator.name);
  const local = fromEnv(env, LOCAL_SIZE_VARS, 1);
  return {
    rank: rank.value,
    worldSize: size.value,
    coordinator: coordinator.value,
    localWorldSize: local?.value,
    source: { rank: rank.name, worldSize: size.name, coordinator: coordinator.name },
  };
}

export type Endpoint = { transport: 'tcp'; host: string; port: number } | { transport: 'ipc'; path: string };

/** `tcp://host:port` (port 1-65535) or `ipc:///path`; anything else is an InvalidParameterError naming `source`. */
export function parseEndpoint(value: string, source = 'coordinator'): Endpoint {
  const tcp = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)$/.exec(value);
  if (tcp) {
    const port = Number(tcp[2]);
    if (port >= 1 && port <= 65535) return { transport: 'tcp', host: tcp[1], port };
  }
  const ipc = /^ipc:\/\/(.+)$/.exec(value);
  if (ipc) return { transport: 'ipc', path: ipc[1] };
  throw new InvalidParameterError(source, 'tcp://HOST:PORT (port 1-65535) or ipc:///path', value);
}

/** Threads per worker when `localWorkers` share this host's `cores`: at least 1. */
export function threadsPerWorker(cores: number, localWorkers: number): number {
  return Math.max(1, Math.floor(cores / Math.max(1, localWorkers)));
}
