/**
 * The KServe v2 routes: health and readiness, server and model metadata, statistics (Triton's
 * extension), the model repository (index, load), Prometheus metrics, and infer (JSON or binary
 * tensors).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { HttpError, unavailable } from './errors';
import { buildInferResponse, inferRequestSchema, type InferRequestBody, modelMetadataResponse, type OutputTensor, parseInfer, splitBinaryBody } from './kserve';
import type { Serving } from './serving';

const SERVER_NAME = 'alexnet-stream';

export function installV2Routes(app: FastifyInstance, serving: Serving): void {
  const { options, metrics, registry, traffic, nameOf } = serving.parts;
  const slotFor = serving.slotFor.bind(serving);
  const versionOf = serving.versionOf.bind(serving);
  const preparing = serving.preparing.bind(serving);
  const infer = serving.infer.bind(serving);
  const countOutcome = serving.countOutcome.bind(serving);

  app.get('/v2/health/live', { config: { endpoint: 'health' } }, async () => ({ live: true }));
  app.get('/v2/health/ready', { config: { endpoint: 'health' } }, async (_request, reply) => {
    const ready = !traffic.draining && registry.allLoaded;
    void reply.code(ready ? 200 : 503);
    return { ready };
  });
  app.get('/v2', { config: { endpoint: 'metadata' } }, async () => ({
    name: SERVER_NAME,
    version: require('../package.json').version as string,
    extensions: ['binary_tensor_data', 'classification', 'model_repository', 'statistics'],
  }));
  const modelParams = { type: 'object', properties: { model: { type: 'string' }, version: { type: 'string' } }, required: ['model'] } as const;
  const metadataHandler = async (request: FastifyRequest<{ Params: { model: string; version?: string } }>) => {
    const slot = slotFor(request, request.params.model);
    const v = versionOf(slot, request.params.version);
    return modelMetadataResponse(v.description, String(v.number));
  };
  app.get('/v2/models/:model', { schema: { params: modelParams }, config: { endpoint: 'metadata' } }, metadataHandler);
  app.get('/v2/models/:model/versions/:version', { schema: { params: modelParams }, config: { endpoint: 'metadata' } }, metadataHandler);
  const readyHandler = async (request: FastifyRequest<{ Params: { model: string; version?: string } }>, reply: FastifyReply) => {
    const slot = slotFor(request, request.params.model);
    const ready =
      !traffic.draining && slot.current !== undefined && (request.params.version === undefined || request.params.version === String(slot.current.number));
    void reply.code(ready ? 200 : 503);
    return { name: slot.name, ready };
  };
  app.get('/v2/models/:model/ready', { schema: { params: modelParams }, config: { endpoint: 'health' } }, readyHandler);
  app.get('/v2/models/:model/versions/:version/ready', { schema: { params: modelParams }, config: { endpoint: 'health' } }, readyHandler);
  app.get('/v2/models/stats', { config: { endpoint: 'stats' } }, async () => ({ model_stats: [...registry.slots.values()].map((s) => s.statsResponse()) }));
  app.get(
    '/v2/models/:model/stats',
    { schema: { params: modelParams }, config: { endpoint: 'stats' } },
    async (request: FastifyRequest<{ Params: { model: string } }>) => ({
      model_stats: [slotFor(request, request.params.model).statsResponse()],
    }),
  );
  app.post('/v2/repository/index', { config: { endpoint: 'repository' } }, async () =>
    [...registry.slots.values()].map((s) => ({
      name: s.name,
      ...(s.current ? { version: String(s.current.number) } : {}),
      state: s.loading ? 'LOADING' : s.current ? 'READY' : 'UNAVAILABLE',
      reason: s.lastError ?? '',
    })),
  );
  app.post(
    '/v2/repository/models/:model/load',
    { schema: { params: modelParams }, config: { endpoint: 'repository' } },
    async (request: FastifyRequest<{ Params: { model: string } }>, reply) => {
      const slot = slotFor(request, request.params.model);
      if (traffic.draining) throw unavailable('the server is shutting down', 'shutting_down');
      const started = performance.now();
      try {
        const v = await registry.load(slot);
        return { name: slot.name, version: String(v.number), load_ms: Math.round(performance.now() - started) };
      } catch (err) {
        void reply.code(400);
        const kept = slot.current ? `; version ${slot.current.number} keeps serving` : '';
        return { error: `failed to load model ${slot.name}: ${(err as Error).message}${kept}` };
      }
    },
  );
  app.get('/metrics', { config: { endpoint: 'metrics' } }, async (_request, reply) => {
    void reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  // infer
  const inferHandler = async (request: FastifyRequest<{ Params: { model: string; version?: string } }>, reply: FastifyReply) => {
    const slot = slotFor(request, request.params.model);
    const version = versionOf(slot, request.params.version);
    version.acquire();
    const prepared = preparing(version);
    let ok = false;
    try {
      const type = (request.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
      let header: unknown;
      let binary: Buffer | undefined;
      if (Buffer.isBuffer(request.body)) {
        if (type !== 'application/octet-stream' && type !== 'application/json')
          throw new HttpError(415, `infer takes application/json, or application/octet-stream with binary tensors; not ${type}`, 'unsupported_media_type');
        if (request.headers['inference-header-content-length'] === undefined) {
          throw new HttpError(400, "a binary infer request needs the Inference-Header-Content-Length header (the JSON header's byte length)", 'bad_request');
        }
        ({ header, binary } = splitBinaryBody(request.body, String(request.headers['inference-header-content-length'])));
      } else if (type === 'application/json') {
        header = request.body;
      } else {
        throw new HttpError(
          415,
          `infer takes application/json, or application/octet-stream with binary tensors; not ${type || 'a body without content type'}`,
          'unsupported_media_type',
        );
      }
      const validate = request.compileValidationSchema(inferRequestSchema);
      if (!validate(header)) {
        const e = validate.errors?.[0];
        throw new HttpError(400, `body${e?.instancePath ?? ''} ${e?.message ?? 'is not a valid infer request'}`, 'bad_request');
      }
      const parsed = parseInfer(header as InferRequestBody, binary, version.description, options.maxBatch, nameOf('maxBatch'));
      const wanted = [...new Set(parsed.outputs.map((o) => o.name))];
      prepared();
      const result = await infer(request, version, parsed.n, parsed.data, wanted);
      const tensors = new Map<string, OutputTensor>();
      for (const [name, data] of result.outputs) tensors.set(name, { name, data, shape: [parsed.n, data.length / parsed.n] });
      const response = buildInferResponse(version.description, String(version.number), parsed.id, parsed.outputs, tensors);
      ok = true;
      if (response.binary.length === 0) return reply.type('application/json').send(response.json);
      const json = Buffer.from(response.json, 'utf8');
      return reply
        .type('application/octet-stream')
        .header('inference-header-content-length', String(json.length))
        .send(Buffer.concat([json, ...response.binary]));
    } finally {
      // The rows are in a batch (copied) or the request failed: the body is read no more.
      if (Buffer.isBuffer(request.body)) serving.parts.bodies?.release(request.body.buffer);
      prepared();
      countOutcome(slot, request, ok);
      version.release();
    }
  };
  app.post('/v2/models/:model/infer', { schema: { params: modelParams }, config: { endpoint: 'infer', admit: true } }, inferHandler);
  app.post('/v2/models/:model/versions/:version/infer', { schema: { params: modelParams }, config: { endpoint: 'infer', admit: true } }, inferHandler);
}
