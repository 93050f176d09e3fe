import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bypassesProxy, describeProxy, parseProxyUrl, proxyFor, proxySettingsFrom } from '../../src/shared/proxy.js';
import { closeDispatchers } from '../../src/transfer/dispatch.js';
import { download } from '../../src/transfer/download.js';
import { answeredByProxy } from '../../src/transfer/http.js';
import { fileError } from '../../src/transfer/partfile.js';
import { TransferError, type DownloadRequest } from '../../src/transfer/types.js';
import { upload } from '../../src/transfer/upload.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { startHttpsServer, startServer, type HttpsTestServer, type TestServer } from '../helpers/server.js';

const saved = { ...process.env };
let dir: string;
let server: TestServer;
let proxy: TestProxy;
beforeEach(async () => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-proxy-')));
  server = await startServer();
  server.route('/f', { body: 'via proxy' });
  proxy = await startProxy();
});
afterEach(async () => {
  for (const k of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'NO_PROXY', 'no_proxy']) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  await proxy.close();
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
afterAll(() => closeDispatchers());

function get(url: string, over: Partial<DownloadRequest> = {}) {
  const out = path.join(dir, 'out');
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

const through = (url: string, noProxy: string | null = null) => ({ proxy: { http: url, https: url, noProxy } });

describe('requests through the proxy recorded with the task', () => {
  it('sends an http:// URL to the proxy in absolute form (no CONNECT), with the origin as Host', async () => {
    const r = await get(server.url('/f?x=1#part'), through(proxy.url));
    expect(fs.readFileSync(r.output!, 'utf8')).toBe('via proxy');
    expect(proxy.requests.map((q) => [q.method, q.target])).toEqual([['GET', server.url('/f?x=1')]]);
    expect(server.requestsTo('/f')[0]!.headers.host).toBe(new URL(server.origin).host);
  });

  it('tunnels an https:// URL with CONNECT to host:port', async () => {
    const tls: HttpsTestServer = await startHttpsServer();
    try {
      tls.route('/s', { body: 'over tls via proxy' });
      const r = await get(tls.url('/s'), { ...through(proxy.url), caFile: tls.caFile });
      expect(fs.readFileSync(r.output!, 'utf8')).toBe('over tls via proxy');
      expect(proxy.requests.map((q) => [q.method, q.target])).toEqual([['CONNECT', new URL(tls.origin).host]]);
    } finally {
      await tls.close();
    }
  });

  it('works through an https:// proxy too (absolute form and CONNECT inside TLS to the proxy)', async () => {
    const tlsProxy = await startProxy({ tls: true });
    const tls = await startHttpsServer();
    try {
      tls.route('/s', { body: 'tls in tls' });
      const r1 = await get(server.url('/f'), { ...through(tlsProxy.url), caFile: tls.caFile });
      expect(fs.readFileSync(r1.output!, 'utf8')).toBe('via proxy');
      const r2 = await get(tls.url('/s'), { ...through(tlsProxy.url), caFile: tls.caFile });
      expect(fs.readFileSync(r2.output!, 'utf8')).toBe('tls in tls');
      expect(tlsProxy.requests.map((q) => [q.method, q.target])).toEqual([['GET', server.url('/f')], ['CONNECT', new URL(tls.origin).host]]);
      // An https:// proxy's certificate is verified like an origin's.
      expect(await failure(get(server.url('/f?again'), through(tlsProxy.url)))).toMatchObject({ code: 'E_PROXY', transient: false });
    } finally {
      await tls.close();
      await tlsProxy.close();
    }
  });

  it("never uses the worker's own environment: HTTP_PROXY there is ignored, the task's settings are not", async () => {
    process.env.HTTP_PROXY = process.env.http_proxy = 'http://127.0.0.1:9';
    await get(server.url('/f'));
    expect(server.hits('/f')).toBe(1);
    expect(proxy.requests).toHaveLength(0);
  });

  it('goes direct for a host in the no_proxy list', async () => {
    await get(server.url('/f'), through(proxy.url, 'example.org, 127.0.0.0/8'));
    expect(proxy.requests).toHaveLength(0);
    expect(server.hits('/f')).toBe(1);
  });

  it('sends credentials of the proxy URL as Proxy-Authorization to the proxy only', async () => {
    proxy.requireAuth = 'al ice:p@ss';
    await get(server.url('/f'), through(`http://al%20ice:p%40ss@${proxy.hostPort}`));
    expect(proxy.requests[0]!.headers['proxy-authorization']).toBe(`Basic ${Buffer.from('al ice:p@ss').toString('base64')}`);
    expect(server.requestsTo('/f')[0]!.headers['proxy-authorization']).toBeUndefined();
  });

  it("a Proxy-Authorization header of the user's goes to the proxy (absolute form and CONNECT), not the origin", async () => {
    const value = `Basic ${Buffer.from('h:dr').toString('base64')}`;
    await get(server.url('/f'), { ...through(proxy.url), headers: [['Proxy-Authorization', value]] });
    expect(proxy.requests[0]!.headers['proxy-authorization']).toBe(value);
    expect(server.requestsTo('/f')[0]!.headers['proxy-authorization']).toBeUndefined();
    const tls = await startHttpsServer();
    try {
      tls.route('/s', { body: 'x' });
      await get(tls.url('/s'), { ...through(proxy.url), caFile: tls.caFile, headers: [['Proxy-Authorization', value]] });
      expect(proxy.requests[1]).toMatchObject({ method: 'CONNECT', headers: { 'proxy-authorization': value } });
      expect(tls.requestsTo('/s')[0]!.headers['proxy-authorization']).toBeUndefined();
    } finally {
      await tls.close();
    }
  });

  it('uploads through the proxy in absolute form', async () => {
    server.route('/up', { upload: true });
    const file = path.join(dir, 'up.bin');
    fs.writeFileSync(file, 'payload');
    const r = await upload(
      { file, expectedSize: 7, url: server.url('/up'), method: 'PUT', headers: [], allowDowngrade: false, stallTimeoutMs: 5000, insecure: false, caFile: null, ...through(proxy.url) },
      { signal: new AbortController().signal, onProgress: () => {} },
    );
    expect(r.httpStatus).toBe(201);
    expect(proxy.requests.map((q) => [q.method, q.target])).toEqual([['PUT', server.url('/up')]]);
    expect(server.requestsTo('/up')[0]!.bodyLength).toBe(7);
  });
});

describe("a proxy's refusal is the task's error (E_PROXY with the status)", () => {
  it('a CONNECT answered 403 (as squid does for a port it does not allow) fails for good', async () => {
    const tls = await startHttpsServer();
    try {
      proxy.refuse = { status: 403, connectOnly: true };
      const err = await failure(get(tls.url('/s'), { ...through(proxy.url), caFile: tls.caFile }));
      expect(err).toMatchObject({ code: 'E_PROXY', transient: false, extra: { httpStatus: 403 } });
      expect(err.message).toBe(`proxy ${proxy.url} refused CONNECT ${new URL(tls.origin).host}: HTTP 403 Forbidden`);
    } finally {
      await tls.close();
    }
  });

  it('a 407 to an absolute-form request fails for good and says how to give credentials; wrong credentials are not shown', async () => {
    proxy.requireAuth = 'u:right';
    const err = await failure(get(server.url('/f'), through(`http://u:wrong@${proxy.hostPort}`)));
    expect(err).toMatchObject({ code: 'E_PROXY', transient: false, extra: { httpStatus: 407 } });
    expect(err.message).toContain('HTTP 407 Proxy Authentication Required');
    expect(err.message).not.toContain('wrong');
    expect(server.hits('/f')).toBe(0);
  });

  it('a 407 to CONNECT is E_PROXY too', async () => {
    proxy.requireAuth = 'u:p';
    const err = await failure(get('https://127.0.0.1:1/x', through(proxy.url)));
    expect(err).toMatchObject({ code: 'E_PROXY', extra: { httpStatus: 407 } });
  });

  it("an error the proxy marks as its own is E_PROXY; the origin's own 403 stays E_HTTP_STATUS", async () => {
    proxy.refuse = { status: 403 };
    expect(await failure(get(server.url('/f'), through(proxy.url)))).toMatchObject({ code: 'E_PROXY', extra: { httpStatus: 403 } });
    proxy.refuse = null;
    server.route('/forbidden', { status: 403, body: 'no' });
    expect(await failure(get(server.url('/forbidden'), through(proxy.url)))).toMatchObject({ code: 'E_HTTP_STATUS', extra: { httpStatus: 403 } });
  });

  it('a proxy that cannot be reached is a transient E_PROXY naming the proxy', async () => {
    const closed = proxy.url;
    await proxy.close();
    for (const url of [server.url('/f'), 'https://127.0.0.1:1/x']) {
      const err = await failure(get(url, through(closed)));
      expect(err).toMatchObject({ code: 'E_PROXY', transient: true });
      expect(err.message).toContain(`proxy ${closed}`);
    }
  });
});

describe('proxy settings (pure)', () => {
  it.each([
    ['127.0.0.1:3128', 'http://127.0.0.1:3128'],
    ['proxy.example:8080', 'http://proxy.example:8080'],
    ['user:pw@proxy.example:8080', 'http://user:pw@proxy.example:8080'],
    ['http://proxy.example:3128/', 'http://proxy.example:3128'],
    ['https://proxy.example', 'https://proxy.example'],
    ['HTTP://Proxy.Example:80', 'http://proxy.example'],
  ])('parseProxyUrl(%s) = %s', (raw, want) => expect(parseProxyUrl(raw)).toBe(want));

  it.each([['socks5://h:1080', /socks5 proxies are not supported/], ['http://', /not a proxy URL/], ['http://user:secret@[bad', /not a proxy URL/], ['user:sec ret@[bad:1', /^'http:\/\/\*\*\*@\[bad:1' is not a proxy URL/]])(
    'parseProxyUrl(%s) throws',
    (raw, msg) => {
      expect(() => parseProxyUrl(raw)).toThrow(msg);
      try {
        parseProxyUrl(raw);
      } catch (err) {
        expect((err as Error).message).not.toContain('secret');
      }
    },
  );

  const P = 'http://p:1';
  it.each<[string, NodeJS.ProcessEnv, { proxy?: string; noproxy?: string }, unknown]>([
    ['nothing set', {}, {}, null],
    ['uppercase', { HTTP_PROXY: 'p:1', HTTPS_PROXY: 'p:2' }, {}, { http: P, https: 'http://p:2', noProxy: null }],
    ['lowercase', { http_proxy: 'p:1' }, {}, { http: P, https: null, noProxy: null }],
    ['lowercase wins', { http_proxy: 'p:1', HTTP_PROXY: 'q:1', https_proxy: 'p:1', HTTPS_PROXY: 'q:2' }, {}, { http: P, https: P, noProxy: null }],
    ['empty lowercase falls back', { http_proxy: '', HTTP_PROXY: 'p:1' }, {}, { http: P, https: null, noProxy: null }],
    ['all_proxy for both', { all_proxy: 'p:1' }, {}, { http: P, https: P, noProxy: null }],
    ['no_proxy either case, lowercase wins', { http_proxy: 'p:1', no_proxy: 'a', NO_PROXY: 'b' }, {}, { http: P, https: null, noProxy: 'a' }],
    ['NO_PROXY', { http_proxy: 'p:1', NO_PROXY: 'b' }, {}, { http: P, https: null, noProxy: 'b' }],
    ['no_proxy * is direct', { http_proxy: 'p:1', no_proxy: '*' }, {}, null],
    ['--proxy wins for both', { http_proxy: 'q:1' }, { proxy: 'p:1' }, { http: P, https: P, noProxy: null }],
    ["--proxy '' is direct", { http_proxy: 'q:1' }, { proxy: '' }, null],
    ["--noproxy '*' is direct", { http_proxy: 'q:1' }, { noproxy: '*' }, null],
    ['--noproxy wins', { http_proxy: 'p:1', no_proxy: 'a' }, { noproxy: 'c,d' }, { http: P, https: null, noProxy: 'c,d' }],
  ])('proxySettingsFrom: %s', (_name, env, flags, want) => expect(proxySettingsFrom(env, flags)).toEqual(want));

  it('names the variable that holds a bad proxy, without its credentials', () => {
    expect(() => proxySettingsFrom({ https_proxy: 'ftp://u:secret@h:1' }, {})).toThrow(/^invalid proxy in https_proxy: ftp proxies are not supported/);
    expect(() => proxySettingsFrom({}, { proxy: 'socks5://h' })).toThrow(/in --proxy/);
  });

  it.each<[string, string, boolean]>([
    ['http://example.com/', 'example.com', true],
    ['http://www.example.com/', 'example.com', true],
    ['http://www.example.com/', '.example.com', true],
    ['http://www.example.com/', '*.example.com', true],
    ['http://notexample.com/', 'example.com', false],
    ['http://EXAMPLE.com./', 'Example.COM', true],
    ['http://a.com/', 'b.com, a.com', true],
    ['http://a.com/', 'b.com a.com', true],
    ['http://a.com/', '*', true],
    ['http://10.1.2.3/', '10.0.0.0/8', true],
    ['http://11.1.2.3/', '10.0.0.0/8', false],
    ['http://10.1.2.3/', '10.1.2.3', true],
    ['http://[::1]:8080/', '::1', true],
    ['http://[::1]/', '[::1]', true],
    ['http://[fd00::5]/', 'fd00::/8', true],
    ['http://a.com:8080/', 'a.com:8080', true],
    ['http://a.com/', 'a.com:8080', false],
    ['https://a.com/', 'a.com:443', true],
    ['http://10.1.2.3/', 'example.com', false],
  ])('bypassesProxy(%s, %s) = %s', (url, list, want) => expect(bypassesProxy(new URL(url), list)).toBe(want));

  it('picks the proxy by scheme', () => {
    const s = { http: 'http://h:1', https: 'http://s:2', noProxy: 'local' };
    expect(proxyFor(new URL('http://x/'), s)).toBe('http://h:1');
    expect(proxyFor(new URL('https://x/'), s)).toBe('http://s:2');
    expect(proxyFor(new URL('https://local/'), s)).toBeNull();
    expect(proxyFor(new URL('https://x/'), { http: 'http://h:1', https: null, noProxy: null })).toBeNull();
    expect(proxyFor(new URL('https://x/'), null)).toBeNull();
  });

  it('describes settings with credentials redacted', () => {
    expect(describeProxy({ http: 'http://u:pw@h:1', https: 'http://u:pw@h:1', noProxy: 'a,b' })).toBe('http://***:***@h:1/; not for a,b');
    expect(describeProxy({ http: 'http://h:1', https: null, noProxy: null })).toBe('http: http://h:1/');
  });

  it.each<[number, Record<string, string>, boolean]>([
    [407, {}, true],
    [403, { 'x-squid-error': 'ERR_ACCESS_DENIED 0' }, true],
    [403, { server: 'tinyproxy/1.11.1' }, true],
    [502, { 'proxy-status': 'squid; error=connection_refused' }, true],
    [403, { server: 'nginx', via: '1.1 squid' }, false],
    [200, { 'x-squid-error': 'x' }, false],
  ])('answeredByProxy(%s, %j) = %s', (status, headers, want) => expect(answeredByProxy(status, headers)).toBe(want));
});

describe('file errors', () => {
  it('a full disk waits for space; other errors fail for good', () => {
    const full = fileError('/x/y', Object.assign(new Error('no space'), { code: 'ENOSPC' }));
    expect(full).toMatchObject({ code: 'E_DISK_SPACE', transient: true });
    expect(full.extra.waitFor).toBe('disk-space');
    expect(fileError('/x/y', Object.assign(new Error('quota'), { code: 'EDQUOT' })).code).toBe('E_DISK_SPACE');
    expect(fileError('/x/y', Object.assign(new Error('ro'), { code: 'EROFS' }))).toMatchObject({ code: 'E_DEST', transient: false, message: 'cannot write /x/y: read-only file system' });
    expect(fileError('/x/y', Object.assign(new Error('loop'), { code: 'ELOOP' })).code).toBe('E_UNSAFE_PART');
  });
});
