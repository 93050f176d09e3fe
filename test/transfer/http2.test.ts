import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeDispatchers } from '../../src/transfer/dispatch.js';
import { download } from '../../src/transfer/download.js';
import type { DownloadRequest, ResponseMeta } from '../../src/transfer/types.js';
import { bodyFor, startHttp2Server, startHttpsServer, type Http2TestServer, type HttpsTestServer } from '../helpers/server.js';

let dir: string;
let closers: Array<() => Promise<void>> = [];
beforeEach(() => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-h2-')));
});
afterEach(async () => {
  await closeDispatchers();
  await Promise.all(closers.map((c) => c()));
  closers = [];
  fs.rmSync(dir, { recursive: true, force: true });
});
afterAll(() => closeDispatchers());

async function h2(opts: Parameters<typeof startHttp2Server>[0]): Promise<Http2TestServer> {
  const s = await startHttp2Server(opts);
  closers.push(() => s.close());
  return s;
}

function get(url: string, caFile: string, name: string, over: Partial<DownloadRequest> = {}) {
  const out = path.join(dir, name);
  let meta: ResponseMeta | null = null;
  const result = download(
    { url, method: 'GET', headers: [], allowDowngrade: false, output: out, outputFixed: true, resume: null, sha256Expected: null, expectReceive: null, stallTimeoutMs: 10_000, insecure: false, caFile, ...over },
    { signal: new AbortController().signal, chooseOutput: async (m) => ((meta = m), out), onProgress: () => {}, onDurable: () => {} },
  );
  return result.then((r) => ({ ...r, meta: meta! }));
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('HTTP/2 over TLS', () => {
  it('is used when the server offers it by ALPN, and the response says so', async () => {
    const s = await h2({ size: 200_000 });
    const r = await get(s.url('/a.bin'), s.caFile, 'a.bin');
    expect(r.meta.protocol).toBe('HTTP/2');
    expect(r.sha256).toBe(sha(bodyFor(200_000)));
    expect(s.sessions).toBe(1);
    expect(s.http1Sockets).toBe(0);
  });

  it('multiplexes many downloads to one origin on one connection', async () => {
    const s = await h2({ size: 50_000, delayMs: 300 });
    await get(s.url('/first.bin'), s.caFile, 'first.bin');
    // Eight at once, each answered after a delay so that they overlap: all on the first connection.
    const all = await Promise.all(Array.from({ length: 8 }, (_, i) => get(s.url(`/f${i}.bin`), s.caFile, `f${i}.bin`)));
    for (const r of all) {
      expect(r.meta.protocol).toBe('HTTP/2');
      expect(r.sha256).toBe(sha(bodyFor(50_000)));
    }
    expect(s.requests).toBe(9);
    expect(s.sessions).toBe(1);
  });

  it('falls back to HTTP/1.1 when the server does not offer HTTP/2', async () => {
    const s: HttpsTestServer = await startHttpsServer();
    closers.push(() => s.close());
    s.route('/plain.txt', { body: 'over http/1.1' });
    const r = await get(s.url('/plain.txt'), s.caFile, 'plain.txt');
    expect(r.meta.protocol).toBe('HTTP/1.1');
    expect(fs.readFileSync(path.join(dir, 'plain.txt'), 'utf8')).toBe('over http/1.1');
  });
});
