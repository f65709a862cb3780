/**
 * `POST /v1/models/{model}:classify`: images in (a raw body or multipart), decoded on the decode
 * workers, each queued as one row, the top-k classes out.
 */
import { performance } from 'node:perf_hooks';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { topK } from '@alexnet-stream/onnx-export';
import { ImageRejected } from './decode-pool';
import { HttpError, notFound } from './errors';
import type { ModelDescription } from './model-description';
import { IMAGE_TYPES } from './request-hooks';
import type { Serving } from './serving';

interface Upload {
  bytes: Buffer;
  filename?: string;
}

function softmaxRow(values: Float32Array): Float32Array {
  let max = -Infinity;
  for (const v of values) if (v > max) max = v;
  const out = new Float32Array(values.length);
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += out[i] = Math.exp(values[i] - max);
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

export function installClassifyRoute(app: FastifyInstance, serving: Serving): void {
  const { options, metrics, decoders, nameOf } = serving.parts;
  const slotFor = serving.slotFor.bind(serving);
  const versionOf = serving.versionOf.bind(serving);
  const preparing = serving.preparing.bind(serving);
  const infer = serving.infer.bind(serving);
  const countOutcome = serving.countOutcome.bind(serving);

  async function uploads(request: FastifyRequest): Promise<Upload[]> {
    const type = (request.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (request.isMultipart()) {
      const files: Upload[] = [];
      let total = 0;
      try {
        for await (const part of request.parts()) {
          if (part.type !== 'file') continue;
          const bytes = await part.toBuffer();
          total += bytes.length;
          if (total > options.bodyLimitBytes) {
            throw new HttpError(413, `the images add up to more than ${nameOf('bodyLimitBytes')} (${options.bodyLimitBytes} bytes)`, 'body_too_large');
          }
          files.push({ bytes, filename: part.filename || part.fieldname });
        }
      } catch (err) {
        // The parser's own errors (no boundary, a part cut short) are the client's body, not a
        // server fault (they were answered 500); its limits already carry a 4xx status.
        const status = (err as { statusCode?: unknown }).statusCode;
        if (err instanceof HttpError || (typeof status === 'number' && status >= 400 && status < 500)) throw err;
        throw new HttpError(400, `the multipart/form-data body is malformed: ${(err as Error).message}`, 'bad_multipart');
      }
      return files;
    }
    if (!Buffer.isBuffer(request.body) || !(IMAGE_TYPES.includes(type) || type === 'application/octet-stream')) {
      throw new HttpError(
        415,
        `:classify takes an image body (${IMAGE_TYPES.slice(0, 3).join(', ')}, ...) or multipart/form-data; not ${type || 'a body without content type'}`,
        'unsupported_media_type',
      );
    }
    return [{ bytes: request.body }];
  }

  app.post(
    '/v1/models/:spec',
    {
      schema: {
        params: { type: 'object', properties: { spec: { type: 'string' } }, required: ['spec'] },
        querystring: { type: 'object', properties: { topk: { type: 'string', pattern: '^[0-9]{1,5}$' } } },
      },
      config: { endpoint: 'classify', admit: true },
    },
    async (request: FastifyRequest<{ Params: { spec: string }; Querystring: { topk?: string } }>) => {
      const colon = request.params.spec.lastIndexOf(':');
      const verb = colon > 0 ? request.params.spec.slice(colon + 1) : '';
      if (verb !== 'classify') throw notFound(`no route POST ${request.url.split('?')[0]} (this server has /v1/models/{model}:classify)`);
      const slot = slotFor(request, request.params.spec.slice(0, colon));
      const version = versionOf(slot);
      const description: ModelDescription = version.description;
      version.acquire();
      const prepared = preparing(version);
      let ok = false;
      try {
        if (!description.preprocessing) throw new HttpError(400, `:classify cannot run: ${description.noClassifyReason}`, 'no_preprocessing');
        const k = Math.min(Number(request.query.topk ?? 5), description.numClasses);
        if (!(k >= 1)) throw new HttpError(400, 'querystring/topk must be an integer >= 1', 'bad_request');
        const images = await uploads(request);
        if (images.length === 0)
          throw new HttpError(400, 'the request has no image (send an image body, or multipart/form-data with image files)', 'bad_request');
        const decoded = await Promise.allSettled(images.map((img) => decoders.decode(version.id, img.bytes, options.maxPixels, nameOf('maxPixels'))));
        let rejected: { i: number; err: Error } | undefined;
        decoded.forEach((d, i) => {
          if (d.status === 'fulfilled') metrics.imagesDecoded.inc({ model: slot.name });
          else {
            const reason = d.reason instanceof ImageRejected ? d.reason.reason : 'undecodable';
            metrics.imagesRejected.inc({ model: slot.name, reason });
            rejected ??= { i, err: d.reason as Error };
          }
          if (d.status === 'fulfilled') metrics.decodeDuration.observe({ model: slot.name }, d.value.decodeMs / 1000);
        });
        if (rejected) {
          const { i, err } = rejected;
          if (!(err instanceof ImageRejected)) throw err;
          const which = images.length > 1 ? `image ${i + 1}${images[i].filename ? ` (${images[i].filename})` : ''}: ` : '';
          throw new HttpError(422, `${which}${err.message}`, `image_${err.reason}`);
        }
        const rows = decoded.map(
          (d) => (d as PromiseFulfilledResult<{ row: Float32Array | Uint8Array; width: number; height: number; decodeMs: number }>).value,
        );
        prepared();
        const results = await Promise.all(
          rows.map((r) => infer(request, version, 1, new Uint8Array(r.row.buffer, r.row.byteOffset, r.row.byteLength), [description.classifyOutput])),
        );
        const predictions = results.map((res, i) => {
          const raw = res.outputs.get(description.classifyOutput)!;
          const prob = description.classifyOutputIsProb ? raw : softmaxRow(raw);
          // A model whose weights overflow on this image answers NaN: an error, never "prob": null.
          const bad = prob.find((v) => !Number.isFinite(v));
          if (bad !== undefined) {
            throw new HttpError(
              500,
              `${images.length > 1 ? `image ${i + 1}: ` : ''}the model's output is ${bad} for this image (its weights overflow)`,
              'output_not_finite',
            );
          }
          return {
            image: i,
            ...(images[i].filename ? { filename: images[i].filename } : {}),
            width: rows[i].width,
            height: rows[i].height,
            top: topK(prob, 0, description.numClasses, k).map((j) => ({
              index: j,
              ...(description.classNames ? { label: description.classNames[j] } : {}),
              prob: prob[j],
            })),
            timings_ms: {
              decode: +rows[i].decodeMs.toFixed(3),
              queue: +res.queueMs.toFixed(3),
              inference: +res.inferenceMs.toFixed(3),
              batch_size: res.batchSize,
            },
          };
        });
        ok = true;
        return {
          model_name: slot.name,
          model_version: String(version.number),
          predictions,
          timings_ms: { total: +(performance.now() - request.state.arrivedAt).toFixed(3) },
        };
      } finally {
        prepared();
        countOutcome(slot, request, ok);
        version.release();
      }
    },
  );
}
