/**
 * Prometheus metrics (prom-client), one registry per server so that two servers in one process
 * (tests) do not share counters. Names follow Prometheus conventions (base units: seconds).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'model' | 'endpoint' | 'code'>;
  readonly requestDuration: Histogram<'model' | 'endpoint'>;
  readonly queueDuration: Histogram<'model'>;
  readonly inferenceDuration: Histogram<'model'>;
  readonly decodeDuration: Histogram<'model'>;
  readonly batchSize: Histogram<'model'>;
  readonly queueDepth: Gauge<'model'>;
  readonly inflightRequests: Gauge;
  readonly imagesDecoded: Counter<'model'>;
  readonly imagesRejected: Counter<'model' | 'reason'>;
  readonly inferenceImages: Counter<'model'>;
  readonly modelLoads: Counter<'model' | 'result'>;
  readonly modelVersion: Gauge<'model'>;
  readonly ready: Gauge;

  constructor(maxBatch: number) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'alexnet_serve_' });
    this.requests = new Counter({
      name: 'alexnet_serve_requests_total',
      help: 'HTTP requests answered, by model, endpoint and status code',
      labelNames: ['model', 'endpoint', 'code'],
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'alexnet_serve_request_duration_seconds',
      help: "Time from a request's arrival to its answer",
      labelNames: ['model', 'endpoint'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.queueDuration = new Histogram({
      name: 'alexnet_serve_queue_duration_seconds',
      help: 'Time a request waited in the batch queue',
      labelNames: ['model'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.inferenceDuration = new Histogram({
      name: 'alexnet_serve_inference_duration_seconds',
      help: 'onnxruntime run time per batch',
      labelNames: ['model'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.decodeDuration = new Histogram({
      name: 'alexnet_serve_decode_duration_seconds',
      help: 'Image decode + preprocessing time per image, on a decode worker',
      labelNames: ['model'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    const batchBuckets: number[] = [];
    for (let b = 1; b < maxBatch; b *= 2) batchBuckets.push(b);
    batchBuckets.push(maxBatch);
    this.batchSize = new Histogram({
      name: 'alexnet_serve_batch_size',
      help: 'Images per onnxruntime run',
      labelNames: ['model'],
      buckets: batchBuckets,
      registers,
    });
    this.queueDepth = new Gauge({ name: 'alexnet_serve_queue_depth', help: 'Images waiting in the batch queue', labelNames: ['model'], registers });
    this.inflightRequests = new Gauge({
      name: 'alexnet_serve_inflight_requests',
      help: 'Requests accepted and not yet answered (bounded by --max-queue)',
      registers,
    });
    this.imagesDecoded = new Counter({ name: 'alexnet_serve_images_decoded_total', help: 'Images decoded for :classify', labelNames: ['model'], registers });
    this.imagesRejected = new Counter({
      name: 'alexnet_serve_images_rejected_total',
      help: 'Images refused, by reason',
      labelNames: ['model', 'reason'],
      registers,
    });
    this.inferenceImages = new Counter({
      name: 'alexnet_serve_inference_images_total',
      help: 'Images (rows) run through a model',
      labelNames: ['model'],
      registers,
    });
    this.modelLoads = new Counter({
      name: 'alexnet_serve_model_loads_total',
      help: 'Model loads and reloads, by result',
      labelNames: ['model', 'result'],
      registers,
    });
    this.modelVersion = new Gauge({
      name: 'alexnet_serve_model_version',
      help: 'The version number being served (increases with every successful reload)',
      labelNames: ['model'],
      registers,
    });
    this.ready = new Gauge({ name: 'alexnet_serve_ready', help: '1 when every model is loaded and the server is not draining', registers });
  }
}
