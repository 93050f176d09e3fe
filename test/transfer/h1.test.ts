// Our HTTP/1.1 reader (src/transfer/h1.ts) against a raw TCP server on 127.0.0.1 that answers with
// whatever bytes each test scripts: framing, keep-alive, timeouts and malformed answers.

import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { PIPELINE_DEPTH, closeIdleConnections, framingOf, h1Request, parseHead, pipelineCapacity, requestHead, type H1Options } from '../../src/transfer/h1.js';
import type { Response } from '../../src/transfer/response.js';
import { TransferError } from '../../src/transfer/types.js';

type Script = (socket: net.Socket, request: string, n: number) => void;

interface Raw {
  url(path?: string): URL;
  /** Connections accepted so far. */
  connections: number;
  requests: string[];
  close(): Promise<void>;
}

/** A server that hands each complete request head (and the connection) to `script`. */
async function raw(script: Script): Promise<Raw> {
  const sockets = new Set<net.Socket>();
  const state: Raw = {
    url: (p = '/f') => new URL(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}${p}`),
    connections: 0,
    requests: [],
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  const server = net.createServer((socket) => {
    state.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      let end;
      while ((end = buf.indexOf('\r\n\r\n')) !== -1) {
        const request = buf.slice(0, end + 4);
        buf = buf.slice(end + 4);
        state.requests.push(request);
        script(socket, request, state.requests.length);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return state;
}

let servers: Raw[] = [];
afterEach(async () => {
  closeIdleConnections();
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});
async function serve(script: Script): Promise<Raw> {
  const s = await raw(script);
  servers.push(s);
  return s;
}

const opts = (over: Partial<H1Options> = {}): H1Options => ({
  method: 'GET', headers: [], signal: new AbortController().signal, headersTimeoutMs: 5000, bodyTimeoutMs: 5000, ...over,
});

/** The whole body as one buffer (through the taker, as the download path reads it). */
async function text(r: Response): Promise<string> {
  const parts: Buffer[] = [];
  r.body.take((c) => parts.push(Buffer.from(c)));
  await r.body.done;
  return Buffer.concat(parts).toString('latin1');
}

/** Write `data` a few bytes at a time, each piece in its own TCP segment (a hostile server's pace). */
async function trickle(socket: net.Socket, data: string, piece = 3): Promise<void> {
  for (let i = 0; i < data.length; i += piece) {
    socket.write(data.slice(i, i + piece), 'latin1');
    await new Promise((r) => setTimeout(r, 1));
  }
}

const failure = async (p: Promise<unknown>): Promise<TransferError> => {
  const e = await p.then(() => null, (err) => err);
  expect(e).toBeInstanceOf(TransferError);
  return e as TransferError;
};

describe('parsing (pure)', () => {
  it('reads the status line and headers: lower-case names, repeats as arrays, folded lines joined', () => {
    const h = parseHead('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Long: one\r\n two\r\n');
    expect(h).toEqual({ version: '1.1', statusCode: 200, headers: { 'content-length': '5', 'set-cookie': ['a=1', 'b=2'], 'x-long': 'one two' } });
    expect(parseHead('HTTP/1.0 404\n').statusCode).toBe(404);
  });

  it.each([
    ['HTTP/2.0 200 OK', 'status line'],
    ['ICY 200 OK', 'status line'],
    ['HTTP/1.1 20 OK', 'status line'],
    ['HTTP/1.1 200 OK\r\nNo colon here', 'header line'],
    ['HTTP/1.1 200 OK\r\nBad Name: x', 'header line'],
  ])('refuses %j (E_PROTOCOL)', (head, what) => {
    expect(() => parseHead(head)).toThrow(expect.objectContaining({ code: 'E_PROTOCOL', message: expect.stringContaining(what) }));
  });

  it('frames bodies as RFC 9112 says', () => {
    const head = (status: number, headers: Record<string, string | string[]>) => ({ version: '1.1', statusCode: status, headers });
    expect(framingOf('HEAD', head(200, { 'content-length': '10' }))).toEqual({ kind: 'none' });
    expect(framingOf('GET', head(204, {}))).toEqual({ kind: 'none' });
    expect(framingOf('GET', head(304, { 'content-length': '10' }))).toEqual({ kind: 'none' });
    expect(framingOf('GET', head(200, { 'transfer-encoding': 'chunked', 'content-length': '10' })).kind).toBe('chunked');
    expect(framingOf('GET', head(200, { 'transfer-encoding': 'gzip' }))).toEqual({ kind: 'close' });
    expect(framingOf('GET', head(200, { 'content-length': ['7', '7'] }))).toEqual({ kind: 'length', left: 7 });
    expect(framingOf('GET', head(200, {}))).toEqual({ kind: 'close' });
    expect(() => framingOf('GET', head(200, { 'content-length': ['7', '8'] }))).toThrow(expect.objectContaining({ code: 'E_PROTOCOL' }));
    expect(() => framingOf('GET', head(200, { 'content-length': '-1' }))).toThrow(expect.objectContaining({ code: 'E_PROTOCOL' }));
  });

  it('writes the request head: Host unless the user gave one, no line breaks in values, an empty POST body said', () => {
    const url = new URL('http://example.test:8080/a%20b?q=1#frag');
    expect(requestHead(url, 'GET', [['Accept', '*/*']])).toBe('GET /a%20b?q=1 HTTP/1.1\r\nHost: example.test:8080\r\nAccept: */*\r\n\r\n');
    expect(requestHead(url, 'GET', [['host', 'virtual']])).toBe('GET /a%20b?q=1 HTTP/1.1\r\nhost: virtual\r\n\r\n');
    expect(requestHead(url, 'POST', [])).toContain('Content-Length: 0\r\n');
    expect(() => requestHead(url, 'GET', [['X-Evil', 'a\r\nInjected: 1']])).toThrow(expect.objectContaining({ code: 'E_REQUEST' }));
    expect(() => requestHead(url, 'GET', [['Bad Name', 'x']])).toThrow(expect.objectContaining({ code: 'E_REQUEST' }));
    expect(() => requestHead(url, 'GET', [['X-Ctl', 'a\u0001b']])).toThrow(expect.objectContaining({ code: 'E_REQUEST' }));
    expect(() => requestHead(url, 'GET', [['X-Wide', 'snow \u2603']])).toThrow(expect.objectContaining({ code: 'E_REQUEST' }));
    expect(requestHead(url, 'GET', [['X-Latin', 'caf\u00e9\tok']])).toContain('X-Latin: caf\u00e9\tok\r\n');
  });
});

describe('over a connection', () => {
  it('reads a Content-Length body and reuses the connection for the next request', async () => {
    const s = await serve((sock, _r, n) => sock.write(`HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nbody-${n}`));
    expect(await text(await h1Request(s.url(), opts()))).toBe('body-1');
    expect(await text(await h1Request(s.url(), opts()))).toBe('body-2');
    expect(s.connections).toBe(1);
    expect(s.requests[0]).toMatch(/^GET \/f HTTP\/1\.1\r\nHost: 127\.0\.0\.1:\d+\r\n\r\n$/);
  });

  it('reads a chunked body with extensions and trailers, however the bytes are cut', async () => {
    const s = await serve((sock) => void trickle(sock, 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n'));
    expect(await text(await h1Request(s.url(), opts()))).toBe('hello 0123456789');
    // Still usable afterwards: the trailers were read to their end.
    expect(await text(await h1Request(s.url(), opts()))).toBe('hello 0123456789');
    expect(s.connections).toBe(1);
  });

  it('a body without a length ends when the connection closes, which is then not reused', async () => {
    const s = await serve((sock) => sock.end('HTTP/1.0 200 OK\r\n\r\nuntil the end'));
    expect(await text(await h1Request(s.url(), opts()))).toBe('until the end');
    expect(await text(await h1Request(s.url(), opts()))).toBe('until the end');
    expect(s.connections).toBe(2);
  });

  it('skips interim answers (100, 103) before the real one', async () => {
    const s = await serve((sock) => sock.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    const r = await h1Request(s.url(), opts());
    expect(r.statusCode).toBe(200);
    expect(await text(r)).toBe('ok');
  });

  it('a Connection: close answer, or bytes past the body, close the connection', async () => {
    const s = await serve((sock, _r, n) => sock.write(n === 1 ? 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na' : 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nbEXTRA'));
    expect(await text(await h1Request(s.url(), opts()))).toBe('a');
    expect(await text(await h1Request(s.url(), opts()))).toBe('b');
    expect(await text(await h1Request(s.url(), opts()))).toBe('b');
    expect(s.connections).toBe(3);
  });

  it('a Keep-Alive timeout too short to use, or our own Connection: close, leaves the connection unused', async () => {
    const s = await serve((sock, req) => sock.write(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n${/x-short/i.test(req) ? 'Keep-Alive: timeout=1\r\n' : ''}\r\nok`));
    expect(await text(await h1Request(s.url(), opts({ headers: [['X-Short', '1']] })))).toBe('ok');
    expect(await text(await h1Request(s.url(), opts({ headers: [['Connection', 'close']] })))).toBe('ok');
    expect(await text(await h1Request(s.url(), opts()))).toBe('ok');
    expect(await text(await h1Request(s.url(), opts()))).toBe('ok');
    // One connection each for the first two, then one kept alive for the last two.
    expect(s.connections).toBe(3);
  });

  it('a body cut short of its Content-Length fails E_SHORT_BODY after handing over what came', async () => {
    const s = await serve((sock) => sock.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this'));
    const r = await h1Request(s.url(), opts());
    const got: string[] = [];
    r.body.take((c) => got.push(c.toString('latin1')));
    const e = await failure(r.body.done);
    expect(e.code).toBe('E_SHORT_BODY');
    expect(got.join('')).toBe('only this');
  });

  it('a kept-alive connection the server closed meanwhile is replaced without failing the request', async () => {
    const s = await serve((sock, _r, n) => {
      sock.write(`HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n${n}`);
      if (n === 1) setTimeout(() => sock.destroy(), 20); // closes the idle connection, no Connection: close
    });
    expect(await text(await h1Request(s.url(), opts()))).toBe('1');
    await new Promise((r) => setTimeout(r, 100));
    expect(await text(await h1Request(s.url(), opts()))).toBe('2');
    expect(s.connections).toBe(2);
  });

  it('no head within the timeout is E_STALL; no body bytes within it, too', async () => {
    const s = await serve((sock, _r, n) => sock.write(n === 1 ? 'HTTP/1.1 200 OK\r\n' : 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc'));
    expect((await failure(h1Request(s.url(), opts({ headersTimeoutMs: 150 })))).message).toMatch(/no response headers/);
    const r = await h1Request(s.url(), opts({ bodyTimeoutMs: 150 }));
    r.body.take(() => {});
    const e = await failure(r.body.done);
    expect(e.code).toBe('E_STALL');
    expect(e.message).toMatch(/no body bytes/);
  });

  it('a body held by its reader longer than the stall timeout does not fail', async () => {
    let release!: () => void;
    const s = await serve((sock) => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc');
      release = () => sock.write('def');
    });
    const r = await h1Request(s.url(), opts({ bodyTimeoutMs: 100 }));
    const got: string[] = [];
    r.body.take((c) => got.push(c.toString()));
    r.body.pause();
    release();
    await new Promise((res) => setTimeout(res, 300));
    expect(got.join('')).toBe('abc');
    r.body.resume();
    await r.body.done;
    expect(got.join('')).toBe('abcdef');
  });

  it('an abort stops the request (E_ABORTED) and closes the connection', async () => {
    const s = await serve((sock) => sock.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc'));
    const abort = new AbortController();
    const r = await h1Request(s.url(), opts({ signal: abort.signal }));
    r.body.take(() => {});
    abort.abort();
    expect((await failure(r.body.done)).code).toBe('E_ABORTED');
    const before = abort.signal;
    expect((await failure(h1Request(s.url(), opts({ signal: before })))).code).toBe('E_ABORTED');
  });

  it.each([
    ['garbage instead of a status line', 'SSH-2.0-OpenSSH\r\n\r\n'],
    ['a head larger than 64 KiB', `HTTP/1.1 200 OK\r\n${'X-Big: y\r\n'.repeat(8000)}\r\n`],
    ['a bad chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'],
    ['chunk data longer than its size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n'],
    ['a protocol switch', 'HTTP/1.1 101 Switching Protocols\r\n\r\n'],
  ])('%s is E_PROTOCOL', async (_what, answer) => {
    const s = await serve((sock) => sock.write(answer));
    const e = await h1Request(s.url(), opts()).then(
      async (r) => (r.body.take(() => {}), failure(r.body.done)),
      (err) => err as TransferError,
    );
    expect(e.code).toBe('E_PROTOCOL');
  });

  it('dump() reads a small body to its end and keeps the connection; a large one closes it', async () => {
    const s = await serve((sock, _r, n) => sock.write(n === 2 ? `HTTP/1.1 302 Found\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(100_000)}` : 'HTTP/1.1 302 Found\r\nContent-Length: 3\r\n\r\nabc'));
    await (await h1Request(s.url(), opts())).body.dump({ limit: 1000 });
    await (await h1Request(s.url(), opts())).body.dump({ limit: 1000 });
    await (await h1Request(s.url(), opts())).body.dump({ limit: 1000 });
    expect(s.connections).toBe(2);
  });

  it('reads a long body into the place its taker names (readInto), never past the body, and the next answer as usual', async () => {
    const body = Buffer.alloc(700_000);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7) % 251;
    const s = await serve((socket, _req, n) => {
      if (n === 1) socket.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`), body]));
      else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const r = await h1Request(s.url(), opts());
    const area = Buffer.alloc(2 * 1024 * 1024);
    let used = 0;
    let received = 0;
    const maxes: Array<[number, number]> = [];
    let inPlace = 0;
    r.body.readInto!((max) => {
      // Never more than what is left of the body: nothing after it can land in the place.
      maxes.push([max, body.length - received]);
      return area.subarray(used, used + Math.min(max, 256 * 1024));
    });
    const got: Buffer[] = [];
    r.body.take((chunk) => {
      if (chunk.buffer === area.buffer && chunk.byteOffset === area.byteOffset + used) inPlace++;
      got.push(Buffer.from(chunk));
      if (chunk.buffer === area.buffer) used += chunk.length;
      received += chunk.length;
    });
    await r.body.done;
    expect(Buffer.concat(got).equals(body)).toBe(true);
    expect(inPlace).toBeGreaterThan(0);
    expect(maxes.length).toBeGreaterThan(0);
    for (const [max, left] of maxes) expect(max).toBe(left);
    expect(await text(await h1Request(s.url(), opts()))).toBe('ok');
    expect(s.connections).toBe(1);
  });

  it('the async iterator yields its own buffers of at most 64 KiB', async () => {
    const s = await serve((sock) => sock.write(`HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n${'z'.repeat(300_000)}`));
    const r = await h1Request(s.url(), opts());
    const sizes: number[] = [];
    let total = '';
    for await (const chunk of r.body as AsyncIterable<Buffer>) {
      sizes.push(chunk.length);
      total += chunk.toString();
    }
    expect(total).toBe('z'.repeat(300_000));
    expect(Math.max(...sizes)).toBeLessThanOrEqual(64 * 1024);
  });
});

describe('pipelining: requests that may wait go behind a busy connection', () => {
  const ok = (body: string, extra = '') => `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n${extra}\r\n${body}`;
  const pathOf = (request: string) => request.split(' ')[1]!.slice(1);
  /** A request that may wait, and how many times it was told it no longer does. */
  const behind = (p: string, s: Raw, over: Partial<H1Options> = {}) => {
    const told = { n: 0 };
    return { told, response: h1Request(s.url(`/${p}`), opts({ behind: () => told.n++, ...over })) };
  };
  /** Until the server has seen `n` requests (they are on their way over loopback). */
  const arrived = async (s: Raw, n: number) => {
    for (const deadline = Date.now() + 2000; s.requests.length < n && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 2));
    expect(s.requests.length).toBe(n);
  };
  /** A first answered request: the server has kept this connection alive over HTTP/1.1. */
  const prove = async (s: Raw) => expect(await text(await h1Request(s.url('/a'), opts()))).toBe('a');

  it('waits behind the current response, PIPELINE_DEPTH deep, and is read after it even from the same read', async () => {
    const names = Array.from({ length: PIPELINE_DEPTH }, (_, i) => `w${i}`);
    const s = await serve((sock, request, n) => {
      if (n === 1) return void sock.write(ok(pathOf(request)));
      // b and every request behind it answered together, in one write: one read ends a response and begins the next.
      if (n === 2 + PIPELINE_DEPTH) sock.write(['b', ...names].map((p) => ok(p)).join(''));
    });
    await prove(s);
    const origin = s.url().origin;
    expect(pipelineCapacity(origin)).toBe(0); // proven, but idle: nothing to wait behind
    const b = h1Request(s.url('/b'), opts());
    expect(pipelineCapacity(origin)).toBe(PIPELINE_DEPTH);
    const waiting = names.map((p) => behind(p, s));
    expect(await text(await b)).toBe('b');
    for (const [i, w] of waiting.entries()) expect(await text(await w.response)).toBe(names[i]);
    expect(waiting.map((w) => w.told.n)).toEqual(names.map(() => 1));
    expect(s.connections).toBe(1);
    expect(s.requests.map(pathOf)).toEqual(['a', 'b', ...names]);
  });

  it('with no busy connection to wait behind, goes as any request, and is told at once', async () => {
    const s = await serve((sock, request) => sock.write(ok(pathOf(request))));
    const first = behind('x', s);
    expect(first.told.n).toBe(1);
    expect(await text(await first.response)).toBe('x');
    // A connection not yet proven kept alive takes nobody behind it.
    let held: net.Socket | null = null;
    const slow = await serve((sock, request) => {
      held ??= sock;
      if (pathOf(request) === 'z') held.write(ok('y')), sock.write(ok('z'));
    });
    const y = h1Request(slow.url('/y'), opts());
    const z = behind('z', slow);
    expect(await text(await y)).toBe('y');
    expect(await text(await z.response)).toBe('z');
    expect(slow.connections).toBe(2);
  });

  it('only behind a connection whose last answer was short: after a long or chunked one, a request goes on its own', async () => {
    const s = await serve((sock, request, n) => {
      const p = pathOf(request);
      if (p === 'long') return void sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n${'x'.repeat(2 * 1024 * 1024)}`);
      if (p === 'chunked') return void sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n');
      if (p.startsWith('held')) return; // keeps its connection busy
      void n;
      sock.write(ok(p));
    });
    const origin = s.url().origin;
    for (const first of ['long', 'chunked']) {
      await text(await h1Request(s.url(`/${first}`), opts()));
      void h1Request(s.url(`/held-${first}`), opts()).catch(() => {});
      expect(pipelineCapacity(origin)).toBe(0);
      const x = behind(`x-${first}`, s);
      expect(x.told.n).toBe(1);
      expect(await text(await x.response)).toBe(`x-${first}`);
    }
    // A short answer on a connection makes it take requests behind it again.
    await text(await h1Request(s.url('/short'), opts()));
    void h1Request(s.url('/held-short'), opts()).catch(() => {});
    expect(pipelineCapacity(origin)).toBe(PIPELINE_DEPTH);
  });

  it('a server that drops the connection: what waited is asked again on fresh ones; after three drops the host is not pipelined to', async () => {
    const seen = new Set<string>();
    const s = await serve((sock, request) => {
      const p = pathOf(request);
      const again = seen.has(p);
      seen.add(p);
      if (again || p.startsWith('a') || p.startsWith('x')) return void sock.write(ok(p));
      if (p.startsWith('b') || p.startsWith('h')) return; // held: a request arrives behind it...
      sock.destroy(); // ...and the server drops the connection, answering neither
    });
    const origin = s.url().origin;
    for (let round = 1; round <= 3; round++) {
      expect(await text(await h1Request(s.url(`/a${round}`), opts()))).toBe(`a${round}`);
      const b = h1Request(s.url(`/b${round}`), opts());
      expect(pipelineCapacity(origin)).toBe(PIPELINE_DEPTH);
      const c = behind(`c${round}`, s);
      expect(c.told.n).toBe(0);
      expect(await text(await b)).toBe(`b${round}`);
      expect(await text(await c.response)).toBe(`c${round}`);
      expect(c.told.n).toBe(1);
    }
    // A busy, proven connection, but this host is no longer pipelined to: x goes on its own.
    void h1Request(s.url('/h'), opts()).catch(() => {});
    expect(pipelineCapacity(origin)).toBe(0);
    const x = behind('x', s);
    expect(x.told.n).toBe(1);
    expect(await text(await x.response)).toBe('x');
    expect(s.requests.filter((r) => pathOf(r) === 'x')).toHaveLength(1);
  });

  it('an answer that closes the connection sends what waited to fresh connections, not counted against the host', async () => {
    const s = await serve((sock, request, n) => {
      const p = pathOf(request);
      if (n === 1 || n > 4) return void sock.write(ok(p));
      if (n === 4) sock.write(ok('b', 'Connection: close\r\n')); // b's answer closes; c and d were sent behind it
    });
    await prove(s);
    const b = h1Request(s.url('/b'), opts());
    const c = behind('c', s);
    const d = behind('d', s);
    expect(await text(await b)).toBe('b');
    expect(await text(await c.response)).toBe('c');
    expect(await text(await d.response)).toBe('d');
    expect(s.connections).toBe(3);
    // Still pipelined to: a busy, proven connection can take a request behind it.
    const e = h1Request(s.url('/e'), opts());
    expect(pipelineCapacity(s.url().origin)).toBe(PIPELINE_DEPTH);
    expect(await text(await e)).toBe('e');
  });

  it('behind a long answer, what waits is asked at once on a connection of its own', async () => {
    let finish!: () => void;
    const sockets: net.Socket[] = [];
    const s = await serve((sock, request, n) => {
      const p = pathOf(request);
      sockets[n] = sock;
      if (n === 2) {
        // b: 2 MiB announced, a little sent, the rest only once c has been answered elsewhere.
        sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\nxyz`);
        finish = () => sock.write('x'.repeat(2 * 1024 * 1024 - 3));
        return;
      }
      if (n === 3) return; // c, sent behind b: never answered on that connection
      sock.write(ok(p));
    });
    await prove(s);
    const b = h1Request(s.url('/b'), opts());
    const c = behind('c', s);
    const rb = await b;
    expect(await text(await c.response)).toBe('c');
    expect(c.told.n).toBe(1);
    finish();
    expect((await text(rb)).length).toBe(2 * 1024 * 1024);
    expect(s.connections).toBe(2);
    // The long answer's connection is not kept (c's answer on it would come unread): f goes on c's.
    expect(await text(await h1Request(s.url('/f'), opts()))).toBe('f');
    expect(sockets[5]).toBe(sockets[4]);
    for (const deadline = Date.now() + 2000; !sockets[2]!.destroyed && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5));
    expect(sockets[2]!.destroyed).toBe(true);
  });

  /**
   * b held; c and d sent behind it, and c stopped while it waits (E_ABORTED at once); then the server
   * answers on b's connection with `answers`. Any later request is answered, but `held`.
   */
  async function stopOneBehind(answers: string) {
    let first!: net.Socket;
    const s = await serve((sock, request, n) => {
      if (n === 2) first = sock;
      if ((n >= 2 && n <= 4) || pathOf(request) === 'held') return;
      sock.write(ok(pathOf(request)));
    });
    await prove(s);
    const b = h1Request(s.url('/b'), opts());
    const stop = new AbortController();
    const c = behind('c', s, { signal: stop.signal });
    const d = behind('d', s);
    stop.abort();
    expect((await failure(c.response)).code).toBe('E_ABORTED');
    await arrived(s, 4);
    first.write(answers);
    expect(await text(await b)).toBe('b');
    expect(await text(await d.response)).toBe('d');
    return { s, c, d };
  }

  it('a waiting request that is stopped fails at once; its answer is read and dropped, and the connection goes on', async () => {
    const { s, c, d } = await stopOneBehind(ok('b') + ok('c-unread') + ok('d'));
    expect([c.told.n, d.told.n]).toEqual([0, 1]);
    expect(await text(await h1Request(s.url('/g'), opts()))).toBe('g');
    expect(s.connections).toBe(1);
  });

  it('a stopped waiting request whose answer is long ends the connection; what waited behind it is asked elsewhere', async () => {
    const { s } = await stopOneBehind(ok('b') + `HTTP/1.1 200 OK\r\nContent-Length: ${4 * 1024 * 1024}\r\n\r\nxyz`);
    expect(s.connections).toBe(2);
    // Not counted against the host: still pipelined to.
    void h1Request(s.url('/held'), opts()).catch(() => {});
    expect(pipelineCapacity(s.url().origin)).toBe(PIPELINE_DEPTH);
  });
});
