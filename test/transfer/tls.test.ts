import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { classifyError } from '../../src/transfer/classify.js';
import { closeDispatchers } from '../../src/transfer/dispatch.js';
import { download } from '../../src/transfer/download.js';
import { h1Request } from '../../src/transfer/h1.js';
import { TransferError, type DownloadRequest } from '../../src/transfer/types.js';
import { startHttpsServer, startServer, type HttpsTestServer, type TestServer } from '../helpers/server.js';

let dir: string;
let servers: TestServer[] = [];
beforeEach(() => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-tls-')));
});
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  fs.rmSync(dir, { recursive: true, force: true });
});
afterAll(() => closeDispatchers());

async function https(): Promise<HttpsTestServer> {
  const s = await startHttpsServer();
  servers.push(s);
  s.route('/secret.txt', { body: 'over tls' });
  return s;
}

function get(url: string, over: Partial<DownloadRequest> = {}) {
  const out = path.join(dir, 'out.txt');
  return download(
    { url, method: 'GET', headers: [], allowDowngrade: false, output: out, outputFixed: true, resume: null, sha256Expected: null, expectReceive: null, stallTimeoutMs: 5000, insecure: false, caFile: null, ...over },
    { signal: new AbortController().signal, chooseOutput: async () => out, onProgress: () => {}, onDurable: () => {} },
  );
}

async function failure(p: Promise<unknown>): Promise<TransferError> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(TransferError);
  return err as TransferError;
}

describe('HTTP/1.1 over TLS through our own client', () => {
  it('the first request to an origin goes through undici (HTTP/2 may be offered); once it spoke HTTP/1.1, the next ones use our client on a keep-alive connection of its own', async () => {
    const s = await https();
    for (let i = 0; i < 3; i++) {
      const r = await get(s.url('/secret.txt'), { caFile: s.caFile });
      expect(fs.readFileSync(r.output!, 'utf8')).toBe('over tls');
    }
    const ports = s.requestsTo('/secret.txt').map((q) => q.remotePort);
    expect(ports[1]).not.toBe(ports[0]);
    expect(ports[2]).toBe(ports[1]);
  });

  it('verifies the certificate as undici does: E_TLS_CERT without the CA, and the TLS settings are part of what a connection is reused for', async () => {
    const s = await https();
    const url = new URL(s.url('/secret.txt'));
    const opts = (tls: { key: string; options: object }) => ({ method: 'GET', headers: [], signal: new AbortController().signal, headersTimeoutMs: 5000, bodyTimeoutMs: 5000, tls });
    const bad = await h1Request(url, opts({ key: 'default', options: {} })).then(() => null, (e: unknown) => e);
    expect(classifyError(bad).code).toBe('E_TLS_CERT');
    const good = await h1Request(url, opts({ key: `ca:${s.caFile}`, options: { ca: fs.readFileSync(s.caFile, 'utf8') } }));
    const chunks: Buffer[] = [];
    good.body.take((c) => chunks.push(Buffer.from(c)));
    await good.body.done;
    expect(Buffer.concat(chunks).toString()).toBe('over tls');
    // The verified connection is idle now, but never lent to a request with other TLS settings.
    const again = await h1Request(url, opts({ key: 'insecure', options: { rejectUnauthorized: false } }));
    await again.body.dump();
    const ports = s.requestsTo('/secret.txt').map((q) => q.remotePort);
    expect(ports[1]).not.toBe(ports[0]);
    await expect(h1Request(url, { ...opts({ key: 'x', options: {} }), tls: undefined })).rejects.toMatchObject({ code: 'E_REQUEST' });
  });
});

describe('TLS verification', () => {
  it('refuses a self-signed certificate with a permanent error that says what to do', async () => {
    const s = await https();
    const e = await failure(get(s.url('/secret.txt')));
    expect(e.code).toBe('E_TLS_CERT');
    expect(e.transient).toBe(false);
    expect(e.message).toContain('self-signed');
    expect(e.message).toContain('use --ca-file PEM to trust its CA, or --insecure to skip verification');
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('trusts the certificate given with caFile', async () => {
    const s = await https();
    const r = await get(s.url('/secret.txt'), { caFile: s.caFile });
    expect(fs.readFileSync(r.output!, 'utf8')).toBe('over tls');
  });

  it('skips verification with insecure', async () => {
    const s = await https();
    const r = await get(s.url('/secret.txt'), { insecure: true });
    expect(fs.readFileSync(r.output!, 'utf8')).toBe('over tls');
  });

  it('an unreadable caFile is a permanent E_TLS_CA', async () => {
    const s = await https();
    const e = await failure(get(s.url('/secret.txt'), { caFile: path.join(dir, 'missing.pem') }));
    expect(e).toMatchObject({ code: 'E_TLS_CA', transient: false });
    const notPem = path.join(dir, 'x.pem');
    fs.writeFileSync(notPem, 'hello');
    expect((await failure(get(s.url('/secret.txt'), { caFile: notPem }))).code).toBe('E_TLS_CA');
  });
});

describe('https → http redirects', () => {
  it('are refused unless allowed', async () => {
    const secure = await https();
    const plain = await startServer();
    servers.push(plain);
    plain.route('/landing', { body: 'plain text' });
    secure.route('/down', { redirect: { to: plain.url('/landing') } });
    const e = await failure(get(secure.url('/down'), { insecure: true }));
    expect(e).toMatchObject({ code: 'E_REDIRECT_DOWNGRADE', transient: false });
    expect(plain.hits('/landing')).toBe(0);
    const r = await get(secure.url('/down'), { insecure: true, allowDowngrade: true });
    expect(r.finalUrl).toBe(plain.url('/landing'));
    expect(fs.readFileSync(r.output!, 'utf8')).toBe('plain text');
  });
});
