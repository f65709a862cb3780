/**
 * `.onnx` files: written atomically (temp file in the same directory, fsync, rename), so a
 * killed export never leaves a half model that looks whole; read with errors naming the file.
 */
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { OutputError, setOwn, writeFileAtomicSync } from '@alexnet-stream/core';
import { decodeModel, encodeModel, ModelProto, onnx, OnnxFormatError } from './proto';

/** Write `bytes` to `path` atomically; a failure becomes an OutputError that says why, in words. */
function writeOutput(path: string, bytes: Uint8Array): void {
  try {
    writeFileAtomicSync(path, bytes);
  } catch (err) {
    // writeFileAtomicSync's OutputError says why (ENOSPC, a missing folder, …); a refused
    // target (a folder, this process's stdout) is its InputError.
    const cause = (err as { cause?: NodeJS.ErrnoException }).cause ?? (err as NodeJS.ErrnoException);
    if (!(err instanceof OutputError) || !cause.code) throw err;
    const e = cause;
    const why = e.code === 'ENOENT' ? `no directory ${dirname(path)}` : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'it is a directory' : e.code === 'ENOSPC' ? 'disk full' : e.message;
    throw new OutputError(`${path}: cannot write (${why}); nothing was written`, { cause: e });
  }
}

/** Encode and write a model atomically; returns the byte count. */
export function writeOnnx(path: string, model: ModelProto): number {
  const bytes = encodeModel(model);
  writeOutput(path, bytes);
  return bytes.length;
}

/** The bytes of an .onnx file; a missing/unreadable file is an `OnnxFormatError` naming it. */
export function readOnnxBytes(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new OnnxFormatError(
      `${path}: cannot read the ONNX model (${e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'a directory, not a file' : e.message})`,
      { cause: err },
    );
  }
}

/** Read and parse an .onnx file; a truncated or foreign file is refused naming the file. */
export function readOnnx(path: string): onnx.ModelProto {
  return decodeModel(readOnnxBytes(path), path);
}

/** metadata_props as a plain object. */
export function modelMetadata(model: onnx.IModelProto): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of model.metadataProps ?? []) if (p.key) setOwn(out, p.key, p.value ?? '');
  return out;
}
