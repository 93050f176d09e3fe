// A small forward proxy for tests, on 127.0.0.1 port 0: absolute-form requests (`GET http://host/path`)
// are forwarded, CONNECT opens a tunnel; every request is recorded as the proxy saw it. Switches make it
// refuse (as squid answers a CONNECT to port 80 with 403) or demand credentials (407).

import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { selfSignedCertificate } from './server.js';

export interface ProxiedRequest {
  method: string;
  /** The request target as received: `http://host/path` (absolute form) or `host:port` (CONNECT). */
  target: string;
  headers: http.IncomingHttpHeaders;
}

export interface TestProxy {
  /** `http://127.0.0.1:PORT` (`https://` for a TLS proxy, whose certificate is the test servers' one). */
  url: string;
  hostPort: string;
  requests: ProxiedRequest[];
  /** Answer CONNECT (or everything) with this status instead of serving it. */
  refuse: { status: number; connectOnly?: boolean } | null;
  /** Demand `Proxy-Authorization: Basic base64(credentials)`, else 407. */
  requireAuth: string | null;
  close(): Promise<void>;
}

export async function startProxy(opts: { tls?: boolean } = {}): Promise<TestProxy> {
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  };
  const p: TestProxy = { url: '', hostPort: '', requests: [], refuse: null, requireAuth: null, close: async () => {} };
  const denied = (headers: http.IncomingHttpHeaders): number | null => {
    if (p.requireAuth && headers['proxy-authorization'] !== `Basic ${Buffer.from(p.requireAuth).toString('base64')}`) return 407;
    return null;
  };
  const handler: http.RequestListener = (req, res) => {
    p.requests.push({ method: req.method ?? '', target: req.url ?? '', headers: req.headers });
    const status = denied(req.headers) ?? (p.refuse && !p.refuse.connectOnly ? p.refuse.status : null);
    if (status) {
      res.writeHead(status, { 'Content-Type': 'text/plain', ...(status === 407 ? { 'Proxy-Authenticate': 'Basic realm="test"' } : {}), 'Proxy-Status': `testproxy; error=http_request_denied` });
      return void res.end(`denied by the test proxy (${status})\n`);
    }
    let target: URL;
    try {
      target = new URL(req.url ?? '');
    } catch {
      return void res.writeHead(400).end('not absolute form\n');
    }
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    delete headers['proxy-connection'];
    const upstream = http.request({ host: target.hostname, port: target.port || 80, method: req.method, path: target.pathname + target.search, headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, { ...up.headers, via: '1.1 testproxy' });
      up.pipe(res);
    });
    upstream.on('error', () => res.headersSent ? res.destroy() : res.writeHead(502, { 'Proxy-Status': 'testproxy; error=connection_refused' }).end());
    req.pipe(upstream);
  };
  const server = opts.tls ? https.createServer({ key: selfSignedCertificate().key, cert: selfSignedCertificate().cert }, handler) : http.createServer(handler);
  server.on(opts.tls ? 'secureConnection' : 'connection', track);
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    p.requests.push({ method: 'CONNECT', target: req.url ?? '', headers: req.headers });
    const status = denied(req.headers) ?? p.refuse?.status ?? null;
    if (status) return void client.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Length: 0\r\n\r\n`);
    const [host, port] = (req.url ?? '').split(':');
    const upstream = net.connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    track(upstream);
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  p.hostPort = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  p.url = `${opts.tls ? 'https' : 'http'}://${p.hostPort}`;
  p.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return p;
}
