import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeDispatchers } from '../../src/transfer/dispatch.js';
import { upload } from '../../src/transfer/upload.js';
import { TransferError, type UploadRequest } from '../../src/transfer/types.js';
import { bodyFor, sha256, startServer, type TestServer } from '../helpers/server.js';

let dir: string;
let servers: TestServer[] = [];
beforeEach(() => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-up-')));
});
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  fs.rmSync(dir, { recursive: true, force: true });
});
afterAll(() => closeDispatchers());

async function server(): Promise<TestServer> {
  const s = await startServer();
  servers.push(s);
  return s;
}

function source(size: number, seed = 'up'): { file: string; data: Buffer } {
  const file = path.join(dir, `src-${size}-${seed}.bin`);
  const data = bodyFor(size, seed);
  fs.writeFileSync(file, data);
  return { file, data };
}

function send(url: string, file: string, over: Partial<UploadRequest> = {}) {
  const progress: number[] = [];
  const result = upload(
    { file, expectedSize: fs.existsSync(file) ? fs.statSync(file).size : 0, url, method: 'PUT', headers: [], allowDowngrade: false, stallTimeoutMs: 5000, insecure: false, caFile: null, ...over },
    { signal: new AbortController().signal, onProgress: (n) => progress.push(n) },
  );
  return { result, progress };
}

async function failure(p: Promise<unknown>): Promise<TransferError> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(TransferError);
  return err as TransferError;
}

describe('upload', () => {
  it.each(['PUT', 'POST'] as const)('%s sends the file byte for byte', async (method) => {
    const s = await server();
    s.route('/up', { upload: true });
    const { file, data } = source(3 * 1024 * 1024 + 7);
    const { result, progress } = send(s.url('/up'), file, { method });
    const r = await result;
    const got = s.requests[0]!;
    expect(got.method).toBe(method);
    expect(got.bodyLength).toBe(data.length);
    expect(got.bodySha256).toBe(sha256(data));
    expect(got.headers['content-length']).toBe(String(data.length));
    expect(got.headers['content-type']).toBe('application/octet-stream');
    expect(r).toEqual({
      finalUrl: s.url('/up'), httpStatus: 201, bytesSent: data.length, methodChangedTo: null, protocol: 'HTTP/1.1',
      responseBody: JSON.stringify({ received: data.length, sha256: sha256(data) }),
    });
    expect(progress.at(-1)).toBe(data.length);
  });

  it('uploads an empty file', async () => {
    const s = await server();
    s.route('/up', { upload: { status: 200, body: 'ok' } });
    const file = path.join(dir, 'empty');
    fs.writeFileSync(file, '');
    const r = await send(s.url('/up'), file).result;
    expect(r).toMatchObject({ httpStatus: 200, bytesSent: 0, responseBody: 'ok' });
    expect(s.requests[0]!.bodyLength).toBe(0);
  });

  it.each([307, 308])('%d re-sends the file to the new location', async (status) => {
    const s = await server();
    s.route('/old', { redirect: { to: '/new', status } });
    s.route('/new', { upload: true });
    const { file, data } = source(200_000);
    const r = await send(s.url('/old'), file, { method: 'POST' }).result;
    expect(s.requests.map((q) => [q.method, q.path, q.bodyLength, q.bodySha256])).toEqual([
      ['POST', '/old', data.length, sha256(data)],
      ['POST', '/new', data.length, sha256(data)],
    ]);
    expect(r).toMatchObject({ finalUrl: s.url('/new'), httpStatus: 201, methodChangedTo: null, bytesSent: data.length });
  });

  it.each([301, 302, 303])('%d turns the upload into a GET without a body', async (status) => {
    const s = await server();
    s.route('/form', { redirect: { to: '/thanks', status } });
    s.route('/thanks', { body: 'thank you' });
    const { file, data } = source(50_000);
    const r = await send(s.url('/form'), file, { method: 'POST', headers: [['Content-Type', 'text/plain']] }).result;
    const [first, second] = s.requests;
    expect(first!.bodySha256).toBe(sha256(data));
    expect(second!.method).toBe('GET');
    expect(second!.bodyLength).toBe(0);
    expect(second!.headers['content-type']).toBeUndefined();
    expect(second!.headers['content-length']).toBeUndefined();
    expect(r).toMatchObject({ methodChangedTo: 'GET', httpStatus: 200, responseBody: 'thank you', finalUrl: s.url('/thanks') });
  });

  it('drops credentials when a redirect leaves the origin', async () => {
    const a = await server();
    const b = await server();
    a.route('/in', { redirect: { to: b.url('/in'), status: 307 } });
    b.route('/in', { upload: true });
    const { file } = source(1000);
    await send(a.url('/in'), file, { headers: [['Authorization', 'Bearer secret'], ['Cookie', 'k=v']] }).result;
    expect(a.requests[0]!.headers.authorization).toBe('Bearer secret');
    expect(b.requests[0]!.headers.authorization).toBeUndefined();
    expect(b.requests[0]!.headers.cookie).toBeUndefined();
    expect(b.requests[0]!.bodyLength).toBe(1000);
  });

  it('keeps only the first 64 KiB of the response', async () => {
    const s = await server();
    s.route('/up', { upload: { body: 'a'.repeat(200_000) } });
    const { file } = source(10);
    const r = await send(s.url('/up'), file).result;
    expect(r.responseBody).toBe('a'.repeat(64 * 1024));
  });

  it('a source that changed size fails for good without sending', async () => {
    const s = await server();
    s.route('/up', { upload: true });
    const { file } = source(1000);
    const e = await failure(send(s.url('/up'), file, { expectedSize: 999 }).result);
    expect(e).toMatchObject({ code: 'E_UPLOAD_SOURCE', transient: false });
    expect(e.message).toContain('changed size since bgdl upload');
    expect(s.hits('/up')).toBe(0);
  });

  it('a source that is gone fails for good', async () => {
    const s = await server();
    s.route('/up', { upload: true });
    const file = path.join(dir, 'vanished');
    const e = await failure(send(s.url('/up'), file, { expectedSize: 5 }).result);
    expect(e).toMatchObject({ code: 'E_UPLOAD_SOURCE', transient: false, message: `upload source ${file} is gone` });
  });

  it('a 5xx answer is transient, a 4xx permanent', async () => {
    const s = await server();
    s.route('/up', { upload: true, failTimes: { status: 500, times: 1 } });
    s.route('/denied', { upload: { status: 403, body: 'no' } });
    const { file } = source(100);
    expect(await failure(send(s.url('/up'), file).result)).toMatchObject({ code: 'E_HTTP_STATUS', transient: true });
    expect((await send(s.url('/up'), file).result).httpStatus).toBe(201);
    const e = await failure(send(s.url('/denied'), file).result);
    expect(e).toMatchObject({ code: 'E_HTTP_STATUS', transient: false });
    expect(e.extra.httpStatus).toBe(403);
  });

  it('refuses a redirect to another scheme', async () => {
    const s = await server();
    s.route('/up', { redirect: { to: 'ftp://127.0.0.1/x', status: 307 } });
    const { file } = source(100);
    expect(await failure(send(s.url('/up'), file).result)).toMatchObject({ code: 'E_REDIRECT_SCHEME', transient: false });
  });

  it('stops when aborted', async () => {
    const s = await server();
    s.route('/slow', { upload: true, delayMs: 5000 });
    const { file } = source(100);
    const abort = new AbortController();
    const p = upload(
      { file, expectedSize: 100, url: s.url('/slow'), method: 'PUT', headers: [], allowDowngrade: false, stallTimeoutMs: 10_000, insecure: false, caFile: null },
      { signal: abort.signal, onProgress: () => {} },
    );
    setTimeout(() => abort.abort(), 100);
    const started = Date.now();
    expect(await failure(p)).toMatchObject({ code: 'E_ABORTED', transient: true });
    expect(Date.now() - started).toBeLessThan(3000);
  });
});
