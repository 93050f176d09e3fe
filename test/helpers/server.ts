// A local HTTP(S) server for tests, with a switch for every misbehaviour bgdl handles: redirects,
// ranges and validators, dropped and stalled connections, short bodies, error statuses, gzip, slow
// bodies, uploads. Every request is logged (method, path, headers, body length and sha256).
//
//   const s = await startServer();
//   s.route('/f.bin', { body: { size: 100_000 }, etag: '"v1"', dropAfter: { bytes: 30_000, times: 1 } });
//   ... download(s.url('/f.bin')) ...
//   expect(s.requestsTo('/f.bin')[1].headers.range).toBe('bytes=30000-');
//   await s.close();

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import zlib from 'node:zlib';

/** A misbehaviour that applies to the first `times` requests of a route (every request when omitted). */
interface Times {
  times?: number;
}

export interface RouteOptions {
  /** The resource: bytes, or `size` deterministic pseudo-random bytes (see bodyFor). Default: empty. */
  body?: Buffer | string | { size: number; seed?: string };
  /** Status for a normal (non-range) response. Default 200. */
  status?: number;
  /** Extra response headers (they override the computed ones). */
  headers?: Record<string, string>;
  contentDisposition?: string;
  /** Answer every request with a redirect. `to` may be relative. Default status 302. */
  redirect?: { to: string; status?: number };
  /** A fixed ETag (with its quotes), or `'per-request'`: `"r1"`, `"r2"`, … a new one each request. */
  etag?: string | 'per-request';
  lastModified?: string;
  /** Honour `Range` (with `If-Range`). `false`: ignore Range and send 200. Default true. */
  ranges?: boolean;
  /** `false`: honour Range even when If-Range does not match (a broken server). Default true. */
  ifRange?: boolean;
  /** Destroy the connection after this many body bytes. */
  dropAfter?: { bytes: number } & Times;
  /** Announce the full Content-Length, send `bytes`, then close the connection cleanly. */
  shortBody?: { bytes: number } & Times;
  /** Pause for `ms` after `bytes` body bytes. */
  stallAfter?: { bytes: number; ms: number } & Times;
  /** 503 Service Unavailable with Retry-After (seconds or a date) for the first `times` requests. */
  status503?: { times: number; retryAfter?: string };
  /** `status` for the first `times` requests. */
  failTimes?: { status: number; times: number };
  /** Send the body gzip-encoded with Content-Encoding: gzip (ranges apply to the encoded bytes). */
  gzip?: boolean;
  /** No Content-Length (chunked transfer encoding). */
  chunked?: boolean;
  /** A body that never ends: chunked, the route's body over and over until the client goes away. */
  endless?: boolean;
  /** Wait this long before answering. */
  delayMs?: number;
  /** Send the body at about this many bytes per second. */
  throttle?: number;
  /**
   * Limit each connection (socket) to about this many bytes per second, across the keep-alive
   * requests it carries (nginx's limit_rate): several connections together go faster.
   */
  connectionRate?: number;
  /** Answer If-None-Match (the ETag) and If-Modified-Since (Last-Modified) with 304, as web servers do. */
  conditional?: boolean;
  /** Answer a request without Range with 206 and this `Content-Range` slice of the body (a broken cache). */
  rangeForPlainGet?: { start: number; end: number };
  /** Hold the body after `bytes` until `until` settles (a transfer the test freezes at a known point). */
  holdAfter?: { bytes: number; until: Promise<unknown> };
  /** Accept PUT/POST here and answer with `status` (default 201) and `body` (default JSON of what arrived). */
  upload?: boolean | { status?: number; body?: string };
}

export interface RecordedRequest {
  method: string;
  /** The path without the query. */
  path: string;
  /** Path and query as sent. */
  url: string;
  headers: http.IncomingHttpHeaders;
  bodyLength: number;
  bodySha256: string;
  /** The client's port: requests with the same one came over the same connection. */
  remotePort: number | undefined;
  /** Response body bytes handed to the socket so far (what the client may have fetched). */
  bytesSent: number;
  /** It arrived on a connection still answering an earlier request (HTTP/1.1 pipelining). */
  behindAnother: boolean;
}

export interface TestServer {
  /** `http://127.0.0.1:PORT` (or https). */
  origin: string;
  url(p: string): string;
  /** Register (or replace) a route; its misbehaviour counters start again. */
  route(p: string, options: RouteOptions): void;
  requests: RecordedRequest[];
  requestsTo(p: string): RecordedRequest[];
  hits(p: string): number;
  /** The most requests answered at once (from the first response byte until done), over every route. */
  peakInFlight(): number;
  /** The bytes a route sends as its full body (gzip-encoded when `gzip`). */
  wireBody(p: string): Buffer;
  close(): Promise<void>;
}

export interface HttpsTestServer extends TestServer {
  /** A PEM file with the server's self-signed certificate, for `caFile`. */
  caFile: string;
}

const bodies = new Map<string, Buffer>();

/** `size` deterministic pseudo-random bytes for `seed` (xorshift32 seeded from sha256(seed)). */
export function bodyFor(size: number, seed = 'bgdl'): Buffer {
  const key = `${seed}:${size}`;
  let buf = bodies.get(key);
  if (!buf) {
    buf = Buffer.alloc(size);
    let x = createHash('sha256').update(seed).digest().readUInt32LE(0) || 1;
    const words = Math.floor(size / 4);
    for (let i = 0; i < words; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      buf.writeUInt32LE(x >>> 0, i * 4);
    }
    for (let i = words * 4; i < size; i++) buf[i] = (x >>> ((i % 4) * 8)) & 0xff;
    if (bodies.size < 64) bodies.set(key, buf);
  }
  return buf;
}

export const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

/** When each socket may send its next byte under `connectionRate`. */
const socketFree = new WeakMap<object, number>();

interface Route {
  options: RouteOptions;
  /** Requests since the route was registered: misbehaviours with `times` count these. */
  count: number;
  wire: Buffer;
}

function wireBodyOf(options: RouteOptions): Buffer {
  const b = options.body;
  const plain = b == null ? Buffer.alloc(0) : Buffer.isBuffer(b) ? b : typeof b === 'string' ? Buffer.from(b) : bodyFor(b.size, b.seed);
  return options.gzip ? zlib.gzipSync(plain) : plain;
}

/** Until the response can take more (or is gone). */
function drained(res: http.ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

const applies = (m: Times | undefined, n: number): boolean => !!m && n <= (m.times ?? Infinity);

/** Does `If-Range` still match the representation? Strong comparison for ETags, exact for dates. */
function ifRangeMatches(value: string, etag: string | null, lastModified: string | null): boolean {
  if (value.startsWith('"') || value.startsWith('W/')) return !!etag && !etag.startsWith('W/') && value === etag;
  return !!lastModified && value === lastModified;
}

/** RFC 9110: If-None-Match decides when present (weak comparison); else If-Modified-Since against Last-Modified. */
function notModified(h: http.IncomingHttpHeaders, etag: string | null, lastModified: string | null): boolean {
  const inm = h['if-none-match'];
  if (inm) return !!etag && inm.split(',').some((v) => v.trim() === '*' || v.trim().replace(/^W\//, '') === etag.replace(/^W\//, ''));
  const ims = h['if-modified-since'];
  if (!ims || !lastModified) return false;
  const since = Date.parse(ims);
  return !Number.isNaN(since) && Date.parse(lastModified) <= since;
}

/** Requests that arrived while their connection was still answering an earlier one (see makeServer). */
const answering = new WeakMap<http.IncomingMessage, boolean>();

function createHandler(routes: Map<string, Route>, log: RecordedRequest[], closing: AbortSignal, load: { now: number; peak: number }) {
  const pause = (ms: number) => sleep(ms, undefined, { signal: closing, ref: false }).catch(() => {});

  async function send(res: http.ServerResponse, data: Buffer, route: Route, n: number, record: RecordedRequest, release: () => void): Promise<void> {
    const o = route.options;
    const drop = applies(o.dropAfter, n) ? o.dropAfter!.bytes : Infinity;
    const short = applies(o.shortBody, n) ? o.shortBody!.bytes : Infinity;
    const stall = applies(o.stallAfter, n) ? o.stallAfter! : null;
    const hold = o.holdAfter ?? null;
    let held = false;
    const end = Math.min(data.length, drop, short);
    let stalled = false;
    let pos = 0;
    while (pos < end) {
      if (res.destroyed || closing.aborted) return;
      let size = Math.min(64 * 1024, end - pos);
      if (stall && !stalled && pos < stall.bytes) size = Math.min(size, stall.bytes - pos);
      if (hold && !held && pos < hold.bytes) size = Math.min(size, hold.bytes - pos);
      if (o.throttle) size = Math.min(size, Math.max(1, Math.floor(o.throttle / 20)));
      if (o.connectionRate) size = Math.min(size, Math.max(1, Math.floor(o.connectionRate / 20)));
      const chunk = data.subarray(pos, pos + size);
      pos += size;
      record.bytesSent += size;
      let ok = true;
      const flushed = new Promise<void>((resolve) => {
        ok = res.write(chunk, () => resolve());
      });
      // Before cutting the connection, make sure the bytes promised have reached the socket.
      if (pos === end && end < data.length) await flushed;
      else if (!ok) await drained(res);
      if (stall && !stalled && pos >= stall.bytes) {
        stalled = true;
        await pause(stall.ms);
      }
      if (hold && !held && pos >= hold.bytes) {
        held = true;
        await flushed;
        await Promise.race([hold.until.catch(() => {}), new Promise((r) => closing.addEventListener('abort', r, { once: true }))]);
      }
      if (o.throttle) await pause((size / o.throttle) * 1000);
      if (o.connectionRate && res.socket && pos < end) {
        const now = Date.now();
        const from = Math.max(now, socketFree.get(res.socket) ?? now);
        socketFree.set(res.socket, from + (size / o.connectionRate) * 1000);
        await pause(from + (size / o.connectionRate) * 1000 - now);
      }
      if (o.endless && pos >= end) pos = 0; // round again, forever
    }
    if (res.destroyed) return;
    release();
    if (end === drop) res.socket?.destroy();
    else if (end === short) res.socket?.end();
    else res.end();
  }

  return async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    res.on('error', () => {});
    const hash = createHash('sha256');
    let bodyLength = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bodyLength += chunk.length;
    }
    const url = new URL(req.url ?? '/', 'http://x');
    const record: RecordedRequest = { method: req.method ?? 'GET', path: url.pathname, url: req.url ?? '/', headers: req.headers, bodyLength, bodySha256: hash.digest('hex'), remotePort: req.socket.remotePort, bytesSent: 0, behindAnother: answering.get(req) ?? false };
    log.push(record);
    const route = routes.get(url.pathname);
    if (!route) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
      return;
    }
    const n = ++route.count;
    const o = route.options;
    if (o.delayMs) await pause(o.delayMs);
    if (o.failTimes && n <= o.failTimes.times) {
      res.writeHead(o.failTimes.status, { 'Content-Type': 'text/plain' }).end(`failure ${n}\n`);
      return;
    }
    if (o.status503 && n <= o.status503.times) {
      res.writeHead(503, { 'Content-Type': 'text/plain', ...(o.status503.retryAfter ? { 'Retry-After': o.status503.retryAfter } : {}) }).end('busy\n');
      return;
    }
    if (o.redirect) {
      res.writeHead(o.redirect.status ?? 302, { Location: o.redirect.to, 'Content-Type': 'text/plain', ...o.headers }).end('moved\n');
      return;
    }
    if (o.upload && (record.method === 'PUT' || record.method === 'POST')) {
      const u = typeof o.upload === 'object' ? o.upload : {};
      const answer = u.body ?? JSON.stringify({ received: bodyLength, sha256: record.bodySha256 });
      res.writeHead(u.status ?? 201, { 'Content-Type': 'text/plain', ...o.headers }).end(answer);
      return;
    }

    const etag = o.etag === 'per-request' ? `"r${n}"` : (o.etag ?? null);
    const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
    if (o.ranges !== false) headers['Accept-Ranges'] = 'bytes';
    if (etag) headers.ETag = etag;
    if (o.lastModified) headers['Last-Modified'] = o.lastModified;
    if (o.contentDisposition) headers['Content-Disposition'] = o.contentDisposition;
    if (o.gzip) headers['Content-Encoding'] = 'gzip';

    if (o.conditional && notModified(req.headers, etag, o.lastModified ?? null)) {
      res.writeHead(304, { ...headers, ...o.headers }).end();
      return;
    }
    const full = route.wire;
    let status = o.status ?? 200;
    let data = full;
    const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
    const ifRange = req.headers['if-range'] as string | undefined;
    const rangeApplies = range && o.ranges !== false && (o.ifRange === false || !ifRange || ifRangeMatches(ifRange, etag, o.lastModified ?? null));
    if (!req.headers.range && o.rangeForPlainGet) {
      const { start, end } = o.rangeForPlainGet;
      status = 206;
      data = full.subarray(start, end + 1);
      headers['Content-Range'] = `bytes ${start}-${end}/${full.length}`;
    } else if (rangeApplies) {
      const start = Number(range[1]);
      const last = range[2] ? Math.min(Number(range[2]), full.length - 1) : full.length - 1;
      if (start >= full.length || last < start) {
        res.writeHead(416, { ...headers, 'Content-Range': `bytes */${full.length}`, 'Content-Length': '0', ...o.headers }).end();
        return;
      }
      status = 206;
      data = full.subarray(start, last + 1);
      headers['Content-Range'] = `bytes ${start}-${last}/${full.length}`;
    }
    if (!o.chunked && !o.endless) headers['Content-Length'] = String(data.length);
    res.writeHead(status, { ...headers, ...o.headers });
    if (record.method === 'HEAD') {
      res.end();
      return;
    }
    // In flight until the response is done or its connection is gone (a client that stops reading).
    load.now++;
    load.peak = Math.max(load.peak, load.now);
    let released = false;
    const release = () => {
      if (!released) load.now--;
      released = true;
    };
    res.once('close', release);
    await send(res, data, route, n, record, release);
  };
}

function makeServer(create: (handler: http.RequestListener) => http.Server, scheme: 'http' | 'https'): Promise<TestServer> {
  const routes = new Map<string, Route>();
  const requests: RecordedRequest[] = [];
  const closing = new AbortController();
  // Every delayed answer waits on this signal: a pipelined batch has dozens at once (Node warns past 10).
  setMaxListeners(0, closing.signal);
  const load = { now: 0, peak: 0 };
  const handle = createHandler(routes, requests, closing.signal, load);
  // Responses not yet finished, per connection: Node.js hands over a pipelined request at once and
  // queues its response behind the earlier ones.
  const open = new WeakMap<object, number>();
  const server = create((req, res) => {
    const socket = req.socket;
    const n = open.get(socket) ?? 0;
    answering.set(req, n > 0);
    open.set(socket, n + 1);
    res.on('close', () => open.set(socket, (open.get(socket) ?? 1) - 1));
    handle(req, res).catch(() => res.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      const origin = `${scheme}://127.0.0.1:${port}`;
      resolve({
        origin,
        url: (p) => new URL(p, origin).href,
        route: (p, options) => routes.set(p, { options, count: 0, wire: wireBodyOf(options) }),
        requests,
        requestsTo: (p) => requests.filter((r) => r.path === p),
        hits: (p) => requests.filter((r) => r.path === p).length,
        peakInFlight: () => load.peak,
        wireBody: (p) => {
          const r = routes.get(p);
          if (!r) throw new Error(`no route ${p}`);
          return r.wire;
        },
        close: () =>
          new Promise<void>((done) => {
            closing.abort();
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

export function startServer(): Promise<TestServer> {
  return makeServer((h) => http.createServer(h), 'http');
}

let certificate: { key: string; cert: string; certFile: string } | null = null;

/** A self-signed certificate for 127.0.0.1, made once per test process with openssl. */
export function selfSignedCertificate(): { key: string; cert: string; certFile: string } {
  if (!certificate) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-cert-'));
    const keyFile = path.join(dir, 'key.pem');
    const certFile = path.join(dir, 'cert.pem');
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile,
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1',
    ], { stdio: 'ignore' });
    certificate = { key: fs.readFileSync(keyFile, 'utf8'), cert: fs.readFileSync(certFile, 'utf8'), certFile };
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  }
  return certificate;
}

export async function startHttpsServer(): Promise<HttpsTestServer> {
  const { key, cert, certFile } = selfSignedCertificate();
  const server = await makeServer((h) => https.createServer({ key, cert }, h), 'https');
  return { ...server, caFile: certFile };
}

export interface Http2TestServer {
  origin: string;
  url(p: string): string;
  caFile: string;
  /** Connections (HTTP/2 sessions, and HTTP/1.1 sockets when `allowHTTP1`) and requests seen. */
  sessions: number;
  http1Sockets: number;
  requests: number;
  close(): Promise<void>;
}

/**
 * An HTTPS server that offers HTTP/2 by ALPN (node:http2) and, unless `h2Only`, HTTP/1.1 too; it serves
 * `size` deterministic bytes (see bodyFor) at every path, optionally slowly, so many requests overlap.
 */
export async function startHttp2Server(opts: { size: number; delayMs?: number; h2Only?: boolean }): Promise<Http2TestServer> {
  const { key, cert, certFile } = selfSignedCertificate();
  const http2 = await import('node:http2');
  const body = bodyFor(opts.size);
  const state = { sessions: 0, http1Sockets: 0, requests: 0 };
  const server = http2.createSecureServer({ key, cert, allowHTTP1: !opts.h2Only }, (req, res) => {
    state.requests++;
    const send = () => {
      res.writeHead(200, { 'content-length': String(body.length), etag: '"h2"' });
      res.end(body);
    };
    if (opts.delayMs) setTimeout(send, opts.delayMs);
    else send();
  });
  server.on('session', () => state.sessions++);
  server.on('secureConnection', (socket) => {
    if (socket.alpnProtocol !== 'h2') state.http1Sockets++;
  });
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (s: import('node:net').Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    url: (p) => new URL(p, origin).href,
    caFile: certFile,
    get sessions() {
      return state.sessions;
    },
    get http1Sockets() {
      return state.http1Sockets;
    },
    get requests() {
      return state.requests;
    },
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        for (const s of sockets) s.destroy();
      }),
  };
}
