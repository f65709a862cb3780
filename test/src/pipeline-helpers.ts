/** Shared by the end-to-end tests that run CLI stages as real shell pipelines. */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { RecordDecoder, type StreamRecord } from '@alexnet-stream/stream-io';

export interface PipelineRun {
  status: number[];
  stdout: Buffer;
  stderr: string;
}

/** Run a bash pipeline in `dir`: every stage's exit status (PIPESTATUS), stdout bytes, stderr. */
export function runPipeline(dir: string, script: string, input?: Buffer): PipelineRun {
  const r = spawnSync('bash', ['-c', `${script}; echo "\${PIPESTATUS[*]}" > "${dir}/status"`], {
    cwd: dir,
    input,
    maxBuffer: 1 << 28,
    env: { ...process.env, ALEXNET_STREAM_PROGRESS: '0' },
  });
  const status = readFileSync(join(dir, 'status'), 'utf8').trim().split(' ').map(Number);
  return { status, stdout: r.stdout, stderr: r.stderr.toString() };
}

/** Decode a record stream's bytes (header included), validating as a stage would. */
export async function decodeRecords(bytes: Buffer): Promise<StreamRecord[]> {
  const out: StreamRecord[] = [];
  for await (const r of Readable.from([bytes]).pipe(new RecordDecoder({ source: 'test' }))) out.push(r as StreamRecord);
  return out;
}
