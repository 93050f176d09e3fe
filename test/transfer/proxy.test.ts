import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeDispatchers } from '../../src/transfer/dispatch.js';
import { download } from '../../src/transfer/download.js';
import { fileError } from '../../src/transfer/partfile.js';
import { startServer, type TestServer } from '../helpers/server.js';

/** A CONNECT proxy that records the targets it tunnels to. */
async function startProxy(): Promise<{ url: string; targets: string[]; close(): Promise<void> }> {
  const targets: string[] = [];
  const sockets = new Set<net.Socket>();
  const proxy = http.createServer((_req, res) => res.writeHead(405).end());
  proxy.on('connect', (req, client: net.Socket, head: Buffer) => {
    targets.push(req.url ?? '');
    const [host, port] = (req.url ?? '').split(':');
    const upstream = net.connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    targets,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        proxy.close(() => r());
      }),
  };
}

const saved = { ...process.env };
let dir: string;
let server: TestServer;
beforeEach(async () => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-proxy-')));
  server = await startServer();
  server.route('/f', { body: 'via proxy' });
});
afterEach(async () => {
  for (const k of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'NO_PROXY', 'no_proxy']) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  await closeDispatchers();
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function get(url: string) {
  const out = path.join(dir, 'out');
  return download(
    { url, method: 'GET', headers: [], allowDowngrade: false, output: out, outputFixed: true, resume: null, sha256Expected: null, expectReceive: null, stallTimeoutMs: 5000, insecure: false, caFile: null },
    { signal: new AbortController().signal, chooseOutput: async () => out, onProgress: () => {}, onDurable: () => {} },
  );
}

describe('proxies from the environment', () => {
  it('goes through HTTP_PROXY, and not for hosts in NO_PROXY', async () => {
    const proxy = await startProxy();
    try {
      delete process.env.NO_PROXY;
      delete process.env.no_proxy;
      process.env.HTTP_PROXY = proxy.url;
      const r = await get(server.url('/f'));
      expect(fs.readFileSync(r.output, 'utf8')).toBe('via proxy');
      expect(proxy.targets).toEqual([new URL(server.origin).host]);

      process.env.NO_PROXY = '127.0.0.1';
      await get(server.url('/f'));
      expect(proxy.targets).toHaveLength(1);
      expect(server.hits('/f')).toBe(2);
    } finally {
      await proxy.close();
    }
  });
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
