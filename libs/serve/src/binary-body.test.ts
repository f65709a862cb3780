/**
 * Raw request bodies (binary-body.ts): read into one buffer whatever the chunking, the tensor
 * part aligned, fastify's limits and errors kept (413 before reading a Content-Length over the
 * limit, 413 for a chunked body that grows over it, 400 for a Content-Length that lies), pooled
 * buffers reused and bounded; and the same through real HTTP with the server's body parsers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import Fastify from 'fastify';
import { alignmentPad, BodyBufferPool, readBody } from './binary-body';
import { installBodyParsers } from './request-hooks';
import { resolveServeOptions } from './options';

const bytes = (n: number, seed = 1) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255));

/** Feed `body` to readBody in chunks of the given sizes (cycled); resolves with the error or the body. */
function read(body: Buffer, sizes: number[], contentLength: string | undefined, limit: number, pad = 0, pool?: BodyBufferPool) {
  return new Promise<{ err: (Error & { statusCode?: number; code?: string }) | null; body?: Buffer }>((resolve) => {
    const stream = new PassThrough();
    readBody(stream, contentLength, limit, pad, (err, out) => resolve({ err: err as never, body: out }), pool);
    let at = 0;
    let k = 0;
    while (at < body.length) {
      const size = sizes[k++ % sizes.length];
      stream.write(body.subarray(at, at + size));
      at += size;
    }
    stream.end();
  });
}

test('any chunking gives the same bytes; the part after the JSON header starts 4-byte aligned', async () => {
  const body = bytes(10_007);
  for (const sizes of [[1], [3, 7, 1], [4096], [10_007], [9999, 8]]) {
    for (const headerLength of ['0', '1', '2', '3', '157']) {
      const pad = alignmentPad(headerLength);
      for (const contentLength of [String(body.length), undefined]) {
        const { err, body: out } = await read(body, sizes, contentLength, 1 << 20, pad);
        assert.equal(err, null);
        assert.ok(out!.equals(body), `chunks ${sizes}, content-length ${contentLength}`);
        assert.equal((out!.byteOffset + Number(headerLength)) % 4, 0, `header ${headerLength}: the tensor part is aligned`);
      }
    }
  }
  assert.equal(alignmentPad(undefined), 0);
  assert.equal(alignmentPad('12x'), 0);
  assert.equal(alignmentPad('5'), 3);
});

test('without a pad, a body of known length owns its whole ArrayBuffer (so it can be transferred to a decoder)', async () => {
  const body = bytes(5000);
  const { body: out } = await read(body, [333], String(body.length), 1 << 20);
  assert.equal(out!.byteOffset, 0);
  assert.equal(out!.buffer.byteLength, body.length);
});

test('a Content-Length over the limit is refused with 413 before any byte is read', async () => {
  const stream = new PassThrough();
  const result = await new Promise<Error & { statusCode?: number; code?: string }>((resolve) =>
    readBody(stream, '2048', 1024, 0, (err) => resolve(err as never)),
  );
  assert.equal(result.code, 'FST_ERR_CTP_BODY_TOO_LARGE');
  assert.equal(result.statusCode, 413);
  assert.equal(stream.listenerCount('data'), 0, 'nothing read');
});

test('a chunked body that grows over the limit gets 413 (and is not buffered further)', async () => {
  const { err } = await read(bytes(3000), [700], undefined, 2048);
  assert.equal(err?.code, 'FST_ERR_CTP_BODY_TOO_LARGE');
  assert.equal(err?.statusCode, 413);
});

test('a Content-Length that lies (fewer or more bytes than it says) gets 400 as in fastify', async () => {
  for (const [sent, said] of [
    [100, 101],
    [101, 100],
    [0, 5],
  ]) {
    const { err } = await read(bytes(sent), [7], String(said), 1 << 20);
    assert.equal(err?.code, 'FST_ERR_CTP_INVALID_CONTENT_LENGTH', `${sent} bytes, Content-Length ${said}`);
    assert.equal(err?.statusCode, 400);
  }
});

test('a stream error is answered with 400 unless it carries its own status', async () => {
  for (const [status, expected] of [
    [undefined, 400],
    [408, 408],
  ]) {
    const stream = new PassThrough();
    const done = new Promise<Error & { statusCode?: number }>((resolve) => readBody(stream, '100', 1000, 0, (err) => resolve(err as never)));
    stream.write(bytes(10));
    stream.destroy(Object.assign(new Error('aborted'), status === undefined ? {} : { statusCode: status }));
    assert.equal((await done).statusCode, expected);
  }
});

test('pooled bodies: buffers are reused after release, refused bodies go back, retention is bounded', async () => {
  const pool = new BodyBufferPool(3 * 65536);
  const first = await read(bytes(70_000), [4096], '70000', 1 << 20, 2, pool);
  assert.equal(first.body!.buffer.byteLength, 2 * 65536, 'capacity rounded up to 64 KiB');
  pool.release(first.body!.buffer);
  pool.release(first.body!.buffer); // twice: kept once
  assert.equal(pool.retained, 2 * 65536);
  const second = await read(bytes(70_001, 9), [1000], '70001', 1 << 20, 3, pool);
  assert.equal(second.body!.buffer, first.body!.buffer, 'the same buffer, reused');
  assert.ok(second.body!.equals(bytes(70_001, 9)));
  assert.equal(pool.retained, 0);
  // A body that fails (lying length) gives its buffer back at once.
  const failed = await read(bytes(10), [10], '20', 1 << 20, 0, pool);
  assert.ok(failed.err);
  assert.equal(pool.retained, 65536);
  // Over the bound: released buffers are left to the GC.
  const big = [await read(bytes(200_000), [65536], '200000', 1 << 20, 0, pool), await read(bytes(200_000), [65536], '200000', 1 << 20, 0, pool)];
  for (const b of big) pool.release(b.body!.buffer);
  assert.ok(pool.retained <= 3 * 65536, `retained ${pool.retained}`);
  pool.release(new ArrayBuffer(65536)); // not the pool's: ignored
  assert.ok(pool.retained <= 3 * 65536);
});

/** One raw HTTP/1.1 request written in the given chunks; resolves with the status line and body. */
async function rawRequest(port: number, head: string, body: Buffer, sizes: number[]): Promise<{ status: number; text: string }> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  socket.setNoDelay(true);
  const data: Buffer[] = [];
  socket.on('data', (d) => data.push(d));
  socket.write(head);
  let at = 0;
  let k = 0;
  while (at < body.length) {
    const size = sizes[k++ % sizes.length];
    socket.write(body.subarray(at, at + size));
    at += size;
    if (k % 50 === 0) await new Promise((r) => setImmediate(r));
  }
  await Promise.race([once(socket, 'end'), once(socket, 'close'), new Promise((r) => setTimeout(r, 2000))]);
  socket.destroy();
  const text = Buffer.concat(data).toString('latin1');
  return { status: Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0), text: text.slice(text.indexOf('\r\n\r\n') + 4) };
}

test("through HTTP with the server's parsers: odd chunkings, the tensor aligned, 413 over the limit, JSON still JSON", async () => {
  const options = resolveServeOptions({ models: [{ name: 'm', path: __filename }], bodyLimitBytes: 64 * 1024 });
  const app = Fastify({ bodyLimit: options.bodyLimitBytes });
  const pool = new BodyBufferPool(1 << 20);
  await installBodyParsers(app, options, pool);
  app.post('/echo', async (request) => {
    const body = request.body as Buffer;
    const headerLength = Number(request.headers['inference-header-content-length'] ?? 0);
    return { length: body.length, sum: body.reduce((a, b) => (a * 31 + b) >>> 0, 7), aligned: (body.byteOffset + headerLength) % 4 === 0 };
  });
  app.post('/json', async (request) => request.body);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as net.AddressInfo).port;
  try {
    const body = bytes(50_001, 5);
    const sum = body.reduce((a, b) => (a * 31 + b) >>> 0, 7);
    for (const [type, sizes, chunked] of [
      ['application/octet-stream', [1, 2, 3, 5, 8, 13], false],
      ['application/json', [4099], false],
      ['application/octet-stream', [777], true],
    ] as const) {
      let head = `POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: ${type}\r\nInference-Header-Content-Length: 123\r\n`;
      let payload = body;
      if (chunked) {
        head += 'Transfer-Encoding: chunked\r\n\r\n';
        const parts: Buffer[] = [];
        for (let at = 0; at < body.length; at += 1000) {
          const part = body.subarray(at, at + 1000);
          parts.push(Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n'));
        }
        payload = Buffer.concat([...parts, Buffer.from('0\r\n\r\n')]);
      } else {
        head += `Content-Length: ${body.length}\r\n\r\n`;
      }
      const res = await rawRequest(port, head, payload, [...sizes]);
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(JSON.parse(res.text), { length: body.length, sum, aligned: true }, `${type} in chunks of ${sizes}${chunked ? ', chunked' : ''}`);
    }
    const big = await rawRequest(
      port,
      `POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: ${65 * 1024}\r\n\r\n`,
      Buffer.alloc(0),
      [1],
    );
    assert.equal(big.status, 413);
    assert.equal(JSON.parse(big.text).code, 'FST_ERR_CTP_BODY_TOO_LARGE');
    const bigChunked = Buffer.concat([Buffer.from(`${(70 * 1024).toString(16)}\r\n`), Buffer.alloc(70 * 1024), Buffer.from('\r\n0\r\n\r\n')]);
    const tooBig = await rawRequest(
      port,
      'POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n',
      bigChunked,
      [8192],
    );
    assert.equal(tooBig.status, 413);
    // JSON without the binary header is still parsed as JSON.
    const json = Buffer.from('{"a":[1,2,3]}');
    const parsed = await rawRequest(
      port,
      `POST /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${json.length}\r\n\r\n`,
      json,
      [2],
    );
    assert.deepEqual(JSON.parse(parsed.text), { a: [1, 2, 3] });
  } finally {
    await app.close();
  }
});
