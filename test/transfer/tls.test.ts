import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeDispatchers } from '../../src/transfer/dispatch.js';
import { download } from '../../src/transfer/download.js';
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
