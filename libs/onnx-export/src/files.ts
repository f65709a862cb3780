/**
 * `.onnx` files: written atomically (temp file in the same directory, fsync, rename), so a
 * killed export never leaves a half model that looks whole; read with errors naming the file.
 */
import { dirname } from 'node:path';
import { AlexnetStreamError, describeReadError, formatBytes, OutputError, readRegularFileSync, setOwn, writeFileAtomicSync } from '@alexnet-stream/core';
import { decodeModel, encodeModel, type ModelProto, type onnx, OnnxFormatError } from './proto';

/** Write `bytes` to `path` atomically; a failure becomes an OutputError that says why, in words. */
function writeOutput(path: string, bytes: Uint8Array): void {
  try {
    writeFileAtomicSync(path, bytes);
  } catch (err) {
    // writeFileAtomicSync's errors already name the path and say why, in words (an OutputError
    // for ENOSPC or a missing folder, an InputError for a refused target such as a folder).
    if (err instanceof AlexnetStreamError) throw err;
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'ENOENT'
        ? `no directory ${dirname(path)}`
        : e.code === 'EACCES'
          ? 'permission denied'
          : e.code === 'EISDIR'
            ? 'it is a directory'
            : e.code === 'ENOSPC'
              ? 'disk full'
              : e.message;
    throw new OutputError(`${path}: cannot write (${why}); nothing was written`, { cause: e });
  }
}

/** Encode and write a model atomically; returns the byte count. */
export function writeOnnx(path: string, model: ModelProto): number {
  const bytes = encodeModel(model);
  writeOutput(path, bytes);
  return bytes.length;
}

/**
 * The most an .onnx file may hold: 2 GiB, protobuf's limit for one message (larger models keep
 * their tensors in external data files, which this project neither writes nor reads).
 */
export const MAX_ONNX_FILE_BYTES = 2 ** 31;

/**
 * The bytes of an .onnx file: a regular file of at most `MAX_ONNX_FILE_BYTES` (a FIFO would
 * hang, /dev/zero would fill memory); anything else is an `OnnxFormatError` naming it.
 */
export function readOnnxBytes(path: string): Buffer {
  try {
    return readRegularFileSync(path, { maxBytes: MAX_ONNX_FILE_BYTES, limitName: `the ${formatBytes(MAX_ONNX_FILE_BYTES)} an ONNX model may take` });
  } catch (err) {
    throw new OnnxFormatError(`${path}: cannot read the ONNX model (${describeReadError(err)})`, { cause: err });
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
