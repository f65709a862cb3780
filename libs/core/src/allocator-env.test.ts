import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeAllocatorEnv, TRAINING_ALLOCATOR_ENV, withTrainingAllocator } from './allocator-env';

test('withTrainingAllocator adds the allocator variables, keeps what the environment already sets, and leaves the input alone', () => {
  const env = { PATH: '/bin', MALLOC_MMAP_MAX_: '65536', GLIBC_TUNABLES: '' };
  const out = withTrainingAllocator(env);
  assert.deepEqual(out, { PATH: '/bin', GLIBC_TUNABLES: '', MALLOC_MMAP_MAX_: '65536', MALLOC_TRIM_THRESHOLD_: '4294967295' });
  assert.deepEqual(env, { PATH: '/bin', MALLOC_MMAP_MAX_: '65536', GLIBC_TUNABLES: '' });
  assert.deepEqual(withTrainingAllocator({}), { ...TRAINING_ALLOCATOR_ENV });
  assert.equal(describeAllocatorEnv({ MALLOC_MMAP_MAX_: '0' }), 'GLIBC_TUNABLES=(unset) MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=(unset)');
});
