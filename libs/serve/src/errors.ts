import { InputError } from '@alexnet-stream/core';

/**
 * An error that becomes an HTTP answer: a status code, a message for the client (never a stack
 * trace), a stable `code` for metrics and logs, and optional headers (`Retry-After`).
 */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly code: string = `http_${statusCode}`,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export const badRequest = (message: string, code = 'bad_request') => new HttpError(400, message, code);
export const notFound = (message: string) => new HttpError(404, message, 'not_found');
export const unavailable = (message: string, code = 'unavailable') => new HttpError(503, message, code);

/** A model file that cannot be served (unreadable, not ONNX, not an image classifier): exit 2 at start. */
export class ModelLoadError extends InputError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, { code: 'ERR_MODEL_LOAD', ...options });
  }
}
