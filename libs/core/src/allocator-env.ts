/**
 * glibc malloc settings for processes that train (docs/speed.md "What a run costs besides its
 * steps"). onnxruntime-node copies every output of a run into a new buffer; above glibc's mmap
 * threshold each one is a fresh mmap whose pages are faulted in one by one, and on these VMs the
 * first touch of a page costs ~13 µs (244 MB: ~0.8 s; refilling the same memory: 20 ms).
 *
 * - `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35; ignored by older ones): malloc
 *   madvises its memory for transparent huge pages, 2 MB per fault instead of 4 kB.
 * - `MALLOC_MMAP_MAX_=0` and `MALLOC_TRIM_THRESHOLD_=4294967295`: big buffers come from the heap
 *   and what is freed is kept for the next run's copies instead of being returned and faulted
 *   in again. The process keeps its peak memory (fine for a training run, whose size is steady).
 *
 * Measured with bench:ab (113x113, batch 64, 8 steps per run, each side its own process): the
 * malloc pair alone 1.12x img per CPU-second; huge pages alone 1.07x wall (1.11x per-round
 * median); both, 1.04x per CPU-second over huge pages alone.
 *
 * glibc reads them only when a process starts, so they are given to the processes we start
 * (multi-worker `train --workers`, `npm run demo`, `nx run trainer:train`, the benches); a
 * `train` run from a shell gets them from the user's environment (docs/speed.md says how).
 */
export const TRAINING_ALLOCATOR_ENV: Readonly<Record<string, string>> = {
  GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1',
  MALLOC_MMAP_MAX_: '0',
  MALLOC_TRIM_THRESHOLD_: '4294967295',
};

/**
 * `env` with TRAINING_ALLOCATOR_ENV added: a variable already in `env` is kept as it is (set one
 * to an empty string to leave glibc's default for it).
 */
export function withTrainingAllocator(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...TRAINING_ALLOCATOR_ENV, ...env };
}

/** `NAME=value ...` of the allocator variables as they are in `env`, for logs and benchmarks. */
export function describeAllocatorEnv(env: NodeJS.ProcessEnv): string {
  return Object.keys(TRAINING_ALLOCATOR_ENV)
    .map((name) => `${name}=${env[name] ?? '(unset)'}`)
    .join(' ');
}
