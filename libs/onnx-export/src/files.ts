/**
 * `.onnx` files: written atomically (temp file in the same directory, fsync, rename), so a
 * killed export never leaves a half model that looks whole; read with errors naming the file.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { decodeModel, encodeModel, ModelProto, onnx, OnnxFormatError } from './proto';

/** An output that cannot be written (missing directory, no permission, disk full): exit code 2. */
export class OutputError extends Error {
  readonly exitCode = 2;
}

/** Write `bytes` to `path` through a temp file + rename; the temp file is removed on failure. */
export function writeFileAtomicSync(path: string, bytes: Uint8Array): void {
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  try {
    const fd = openSync(temp, 'w');
    try {
      let offset = 0;
      while (offset < bytes.length) offset += writeSync(fd, bytes, offset, bytes.length - offset);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
  } catch (err) {
    rmSync(temp, { force: true });
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? `no directory ${dirname(path)}` : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'it is a directory' : e.code === 'ENOSPC' ? 'disk full' : e.message;
    throw new OutputError(`${path}: cannot write (${why}); nothing was written`);
  }
}

/** Encode and write a model atomically; returns the byte count. */
export function writeOnnx(path: string, model: ModelProto): number {
  const bytes = encodeModel(model);
  writeFileAtomicSync(path, bytes);
  return bytes.length;
}

/** The bytes of an .onnx file; a missing/unreadable file is an `OnnxFormatError` naming it. */
export function readOnnxBytes(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new OnnxFormatError(`${path}: cannot read the ONNX model (${e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'a directory, not a file' : e.message})`);
  }
}

/** Read and parse an .onnx file; a truncated or foreign file is refused naming the file. */
export function readOnnx(path: string): onnx.ModelProto {
  return decodeModel(readOnnxBytes(path), path);
}

/** metadata_props as a plain object. */
export function modelMetadata(model: onnx.IModelProto): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of model.metadataProps ?? []) if (p.key) out[p.key] = p.value ?? '';
  return out;
}
