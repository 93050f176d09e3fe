// Our own HTTP/1.1 client, for the hot path: direct requests that carry no body (downloads), over
// http://, and over https:// to an origin already known to speak HTTP/1.1 (dispatch.ts remembers what
// each origin's TLS connections negotiated; the first goes through undici, which offers HTTP/2).
// Every connection reads into ONE buffer shared by all of them (net's and tls's `onread`): a read
// allocates nothing, and each chunk is consumed (hashed, copied into the part file's write batch)
// before the callback returns. Node's usual way of reading, a fresh buffer per read, cost 20-40% more
// CPU than curl for the same work and tens of MiB of dead buffers (scripts/bench-floor.mjs measures
// both). HTTP/2, proxies and uploads go through undici (dispatch.ts).
//
// Keep-alive: an idle connection is pooled per host:port and reused, most recently used first; a
// reused connection that fails before any byte of the answer (the server closed it meanwhile) is
// retried once on a fresh one (these requests are safe to repeat). Framing follows RFC 9112:
// Transfer-Encoding chunked, else Content-Length, else the body ends when the connection closes.
//
// Pipelining (RFC 9112 section 9.3.2): a request that may wait (`behind`) is sent at once on a busy
// http:// connection whose server has kept it alive over HTTP/1.1 after a short answer, up to
// PIPELINE_DEPTH behind the current one; its response is read when the one before it ends. Nothing
// is lost when the server does not keep up its side: a waiting request with no byte of its answer
// is asked again on a fresh connection (as a stale reused one is), and a host whose connections fail
// that way (or with a malformed answer) PIPELINE_FAILURES times is not pipelined to again.

import net from 'node:net';
import type tls from 'node:tls';
import { tlsModule } from '../shared/builtins.js';
import type { Headers, Response, ResponseBody } from './response.js';
import { TUNING } from './tuning.js';
import { TransferError } from './types.js';

// Connection settings, with why:
// - CONNECT_TIMEOUT_MS: as undici's default, so a host that never answers fails as before.
// - MAX_HEAD_BYTES: a status line and headers larger than this are not an HTTP server's answer.
// - KEEP_ALIVE_MS: how long an idle connection is kept when the server names no timeout (as undici here).
// - KEEP_ALIVE_MARGIN_MS: a server's own `Keep-Alive: timeout=N` less this, so we never send on a
//   connection the server is closing at that moment.
// - MAX_IDLE_PER_ORIGIN: idle connections kept per host:port.
// - MAX_LINE_BYTES: a chunk-size line (with extensions) longer than this is malformed.
const CONNECT_TIMEOUT_MS = 10_000;
const MAX_HEAD_BYTES = 64 * 1024;
const KEEP_ALIVE_MS = 30_000;
const KEEP_ALIVE_MARGIN_MS = 1000;
const MAX_IDLE_PER_ORIGIN = 64;
const MAX_LINE_BYTES = 4096;
// - ITERATED_PIECE_BYTES: the largest chunk the body's async iterator yields (a stream's usual read).
const ITERATED_PIECE_BYTES = 64 * 1024;
// - PIPELINE_FAILURES: a host whose connections failed this many times with a request waiting behind
//   another is not pipelined to again (one failure can be a server closing after N requests).
const PIPELINE_FAILURES = 3;
// - PIPELINE_DEPTH: requests sent behind the current one on a connection, at most. 2,000 x 16 KiB
//   at the defaults (worker started by hand, seven interleaved pairs): 4 took 5-15% less wall time
//   and 7-11% less of the main thread's CPU than 2 in every pair (more files share each pass of
//   the loop, commit and fsync window); 6 measured as 4.
export const PIPELINE_DEPTH = 4;
// - BEHIND_MAX_BYTES: a request waiting behind a response longer than this (or of unknown length) is
//   sent again on a connection of its own rather than wait for it all.
const BEHIND_MAX_BYTES = 1024 * 1024;

/** The one read buffer of every connection (made at the first connection). */
let readBuffer: Buffer | null = null;
const idle = new Map<string, Connection[]>();
/** Every open connection, by key (idle or busy): where a request that may wait looks for a place behind another. */
const live = new Map<string, Set<Connection>>();
/** Failures with a request waiting behind another, by key (PIPELINE_FAILURES: not pipelined to again). */
const pipelineFailures = new Map<string, number>();

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What a header value may not hold, as undici says: control characters other than tab, and anything past Latin-1. */
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

export interface H1Options {
  method: string;
  /** Sent as given, in order; a Host header of the user's replaces ours. */
  headers: Array<[string, string]>;
  signal: AbortSignal;
  /** From sending the request to the end of the response head. */
  headersTimeoutMs: number;
  /** The longest silence while the body is being read (not while its reader holds it). */
  bodyTimeoutMs: number;
  /**
   * For an https:// URL: the TLS options (dispatch.ts: verification, CAs) and a key naming them, so
   * that connections made with other options are never reused for it.
   */
  tls?: { key: string; options: tls.ConnectionOptions };
  /**
   * The request may be sent behind another on a busy connection (pipelining: see the top of this
   * file). Called once it no longer waits: its response is the connection's current one, or it went
   * on a connection of its own. Absent: the request waits for a connection of its own.
   */
  behind?: () => void;
}

const protocolError = (what: string) => new TransferError('E_PROTOCOL', `malformed HTTP response: ${what}`, true);
const stopped = () => new TransferError('E_ABORTED', 'stopped', true);

/** Send a request without a body to an http:// URL (or https:// with `opts.tls`); resolves at the response head. */
export async function h1Request(url: URL, opts: H1Options): Promise<Response> {
  const head = requestHead(url, opts.method, opts.headers);
  const secure = url.protocol === 'https:';
  if (secure && !opts.tls) throw new TransferError('E_REQUEST', 'an https:// request needs its TLS options', false);
  const port = Number(url.port || (secure ? 443 : 80));
  const key = secure ? `https:${url.hostname}:${port}|${opts.tls!.key}` : plainKey(url.hostname, port);
  for (let attempt = 0; ; attempt++) {
    if (opts.signal.aborted) throw stopped();
    const ahead = attempt === 0 && opts.behind && !secure ? takeBusy(key) : null;
    const reused = ahead ?? (attempt === 0 ? takeIdle(key) : null);
    const conn = reused ?? new Connection(key, url.hostname.replace(/^\[|\]$/g, ''), port, secure ? opts.tls!.options : null);
    try {
      return await (ahead ? conn.queue(head, opts) : conn.exchange(head, opts));
    } catch (err) {
      // The server closed a kept-alive connection just as we sent: ask once more on a fresh one.
      if (reused && err instanceof StaleConnection) continue;
      throw err instanceof StaleConnection ? err.cause : err;
    }
  }
}

/** Close every idle connection (worker shutdown). Connections in use close when their transfer ends. */
export function closeIdleConnections(): void {
  for (const list of idle.values()) for (const c of list) c.destroy();
  idle.clear();
  pipelineFailures.clear();
}

/** The pool key of a plain http:// host and port. */
const plainKey = (hostname: string, port: number): string => `${hostname}:${port}`;

/** The pool key of an http:// origin (`http://host:port`), as h1Request makes it; null for any other. */
const originKeys = new Map<string, string | null>();
function keyOfOrigin(origin: string): string | null {
  let key = originKeys.get(origin);
  if (key !== undefined) return key;
  try {
    const u = new URL(origin);
    key = u.protocol === 'http:' ? plainKey(u.hostname, Number(u.port || 80)) : null;
  } catch {
    key = null;
  }
  if (originKeys.size >= 1024) originKeys.clear();
  originKeys.set(origin, key);
  return key;
}

/**
 * How many requests to `origin` may wait behind others (pipelining): PIPELINE_DEPTH on each of its busy
 * connections whose server has kept them alive over HTTP/1.1, those already waiting included (the
 * caller subtracts the ones it started). 0 for an origin that is not http://, or no longer pipelined
 * to (PIPELINE_FAILURES).
 */
export function pipelineCapacity(origin: string): number {
  const key = keyOfOrigin(origin);
  if (key === null || (pipelineFailures.get(key) ?? 0) >= PIPELINE_FAILURES) return 0;
  let n = 0;
  for (const c of live.get(key) ?? []) if (c.pipelines()) n += PIPELINE_DEPTH;
  return n;
}

/** A busy connection that can take a request behind its current one, if any. */
function takeBusy(key: string): Connection | null {
  if ((pipelineFailures.get(key) ?? 0) >= PIPELINE_FAILURES) return null;
  for (const c of live.get(key) ?? []) if (c.canQueue()) return c;
  return null;
}

/** The request head: request line, Host, the headers (validated: no line breaks), and Content-Length: 0 where a body is expected. */
export function requestHead(url: URL, method: string, headers: Array<[string, string]>): string {
  if (!TOKEN.test(method)) throw new TransferError('E_REQUEST', `invalid request: invalid method '${method}'`, false);
  const lines = [`${method} ${url.pathname}${url.search} HTTP/1.1`];
  if (!headers.some(([n]) => n.toLowerCase() === 'host')) lines.push(`Host: ${url.host}`);
  for (const [name, value] of headers) {
    if (!TOKEN.test(name)) throw new TransferError('E_REQUEST', `invalid request: invalid header name '${name}'`, false);
    if (BAD_VALUE.test(value)) throw new TransferError('E_REQUEST', `invalid request: invalid value for header ${name}`, false);
    lines.push(`${name}: ${value}`);
  }
  if ((method === 'POST' || method === 'PUT' || method === 'PATCH') && !headers.some(([n]) => n.toLowerCase() === 'content-length')) lines.push('Content-Length: 0');
  return `${lines.join('\r\n')}\r\n\r\n`;
}

function takeIdle(key: string): Connection | null {
  const list = idle.get(key);
  while (list && list.length > 0) {
    const c = list.pop()!;
    if (list.length === 0) idle.delete(key);
    if (c.usable()) return c;
  }
  return null;
}

function putIdle(c: Connection): void {
  let list = idle.get(c.key);
  if (!list) idle.set(c.key, (list = []));
  if (list.length >= MAX_IDLE_PER_ORIGIN) return c.destroy();
  list.push(c);
}

function dropIdle(c: Connection): void {
  const list = idle.get(c.key);
  const i = list ? list.indexOf(c) : -1;
  if (i === -1) return;
  list!.splice(i, 1);
  if (list!.length === 0) idle.delete(c.key);
}

/** A failure on a reused connection before any byte of the answer: worth one more try elsewhere. */
class StaleConnection extends Error {
  constructor(override readonly cause: unknown) {
    super('stale connection');
  }
}

/** A response head as parsed. */
export interface Head {
  version: string;
  statusCode: number;
  headers: Headers;
}

/** Parse a response head (status line and header lines, without the blank line that ends it). */
export function parseHead(text: string): Head {
  const lines = text.split(/\r?\n/);
  while (lines.length > 0 && lines[0] === '') lines.shift();
  const m = /^HTTP\/(1\.[01]) ([0-9]{3})(?: [^\r\n]*)?$/.exec(lines[0] ?? '');
  if (!m) throw protocolError(`unexpected status line '${(lines[0] ?? '').slice(0, 60)}'`);
  const headers: Headers = {};
  let last: string | null = null;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '') continue;
    if ((line[0] === ' ' || line[0] === '\t') && last) {
      // An obsolete folded line continues the previous header: joined with a space.
      const v = headers[last]!;
      const more = line.trim();
      if (Array.isArray(v)) v[v.length - 1] = `${v[v.length - 1]} ${more}`;
      else headers[last] = `${v} ${more}`;
      continue;
    }
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!TOKEN.test(name)) throw protocolError(`invalid header line '${line.slice(0, 60)}'`);
    const value = line.slice(colon + 1).trim();
    if (/[\0\r]/.test(value)) throw protocolError(`invalid characters in header ${name}`);
    const key = name.toLowerCase();
    const had = headers[key];
    headers[key] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
    last = key;
  }
  return { version: m[1]!, statusCode: Number(m[2]), headers };
}

type Framing =
  | { kind: 'none' }
  | { kind: 'length'; left: number }
  | { kind: 'chunked'; state: 'size' | 'data' | 'data-end' | 'trailer'; left: number; line: string; trailerBytes: number }
  | { kind: 'close' };

const single = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(', ') : v);

/** How the body of this response is delimited (RFC 9112 section 6.3). */
export function framingOf(method: string, head: Head): Framing {
  const s = head.statusCode;
  if (method === 'HEAD' || s === 204 || s === 304 || (s >= 100 && s < 200)) return { kind: 'none' };
  const te = single(head.headers['transfer-encoding']);
  if (te !== undefined) {
    const codings = te.split(',').map((c) => c.trim().toLowerCase());
    if (codings.at(-1) === 'chunked') return { kind: 'chunked', state: 'size', left: 0, line: '', trailerBytes: 0 };
    return { kind: 'close' };
  }
  const cl = head.headers['content-length'];
  if (cl !== undefined) {
    const values = new Set((Array.isArray(cl) ? cl : [cl]).flatMap((v) => v.split(',')).map((v) => v.trim()));
    const [only] = values;
    if (values.size !== 1 || !/^[0-9]{1,15}$/.test(only!)) throw protocolError(`invalid Content-Length '${single(cl)}'`);
    return { kind: 'length', left: Number(only) };
  }
  return { kind: 'close' };
}

/** Whether the connection may carry another request after this response. */
function keepsAlive(head: Head, framing: Framing, requestHeaders: Array<[string, string]>): boolean {
  if (framing.kind === 'close') return false;
  if (head.headers['transfer-encoding'] !== undefined && head.headers['content-length'] !== undefined) return false;
  const connection = (single(head.headers['connection']) ?? '').toLowerCase();
  const asked = requestHeaders.find(([n]) => n.toLowerCase() === 'connection')?.[1].toLowerCase() ?? '';
  if (/\bclose\b/.test(connection) || /\bclose\b/.test(asked)) return false;
  return head.version === '1.1' || /\bkeep-alive\b/.test(connection);
}

/** How long the server lets an idle connection live, from `Keep-Alive: timeout=N`. */
function keepAliveMs(head: Head): number {
  const m = /\btimeout=(\d+)/i.exec(single(head.headers['keep-alive']) ?? '');
  if (!m) return KEEP_ALIVE_MS;
  return Math.min(KEEP_ALIVE_MS, Number(m[1]) * 1000 - KEEP_ALIVE_MARGIN_MS);
}

/** One request and its response on a connection. */
interface Exchange {
  /** The request's method and headers among them. */
  opts: H1Options;
  resolve(r: Response): void;
  reject(err: unknown): void;
  /** Any byte of the answer has arrived. */
  answered: boolean;
  head: Head | null;
  headBytes: Buffer[];
  headLength: number;
  framing: Framing | null;
  body: H1Body | null;
  /** The answer has no body or a Content-Length of at most BEHIND_MAX_BYTES (known with its head). */
  short: boolean;
  /** Stopped while it waited behind another: its answer is read and dropped. */
  dropped: boolean;
  onAbort: () => void;
}

class Connection {
  private readonly socket: net.Socket;
  /** host:port, for messages. */
  private readonly where: string;
  private ex: Exchange | null = null;
  /** Requests sent behind `ex` (pipelining), in order: each is read once the one before it ends. */
  private waiting: Exchange[] = [];
  /**
   * The waiting requests were sent elsewhere (release: their answers would come unread here): the
   * connection ends with `ex`.
   */
  private closeAfter = false;
  /**
   * The server kept this connection alive over HTTP/1.1 after a short answer (no body, or a length
   * of at most BEHIND_MAX_BYTES): it may carry a request behind another.
   */
  private proven = false;
  private served = 0;
  private dead = false;
  private connected = false;
  private timer: NodeJS.Timeout | null = null;
  private timerKind: 'connect' | 'headers' | 'body' | 'idle' | null = null;
  private timerMs = 0;
  private lastActivity = 0;
  /** Reading stopped for the body's reader (or a body nobody has taken yet). */
  private held = false;

  constructor(
    /** The idle pool's key (for https:// it names the TLS settings too). */
    readonly key: string,
    host: string,
    port: number,
    /** TLS options for https://, offering HTTP/1.1 only (null: plain TCP). */
    secure: tls.ConnectionOptions | null,
  ) {
    // Only an IPv6 address has a colon (a URL's brackets are off). net.isIPv6's first call compiles
    // its pattern: ~4 ms of a worker's way to its first request.
    this.where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    readBuffer ??= Buffer.allocUnsafeSlow(TUNING.readBufferBytes);
    // Over plain TCP the buffer of each read is chosen when the connection is set up and then once
    // the read before it has been handled (Node.js calls the function then): a long body's taker may
    // name its own (readTarget). TLS reads keep to the one buffer.
    const onread = {
      buffer: secure ? readBuffer : () => this.readTarget(),
      callback: (n: number, buf: Uint8Array) => (this.onRead(buf as Buffer, n), true),
    };
    this.socket = secure
      ? // tls.connect takes `onread` as net.connect does (Node's documentation; @types/node 20 lacks it).
        tlsModule().connect({ ...secure, host, port, servername: net.isIP(host) ? undefined : host, ALPNProtocols: ['http/1.1'], onread } as tls.ConnectionOptions)
      : net.connect({ host, port, onread });
    this.socket.setNoDelay(true);
    // Connected once TLS is set up too: the connect timeout covers the handshake, and a request waits for it.
    this.socket.once(secure ? 'secureConnect' : 'connect', () => {
      this.connected = true;
      if (this.timerKind === 'connect') this.arm('headers', this.ex?.opts.headersTimeoutMs ?? 0);
    });
    this.socket.on('error', (err) => this.fail(err));
    this.socket.on('end', () => this.onEnd());
    this.socket.on('close', () => this.onEnd());
    this.arm('connect', CONNECT_TIMEOUT_MS);
    let set = live.get(key);
    if (!set) live.set(key, (set = new Set()));
    set.add(this);
  }

  usable(): boolean {
    return !this.dead && !this.socket.destroyed && this.ex === null;
  }

  /** Busy, proven kept alive over HTTP/1.1, and nothing known yet that says the connection ends with this response. */
  pipelines(): boolean {
    if (this.dead || this.closeAfter || !this.proven || this.ex === null || this.socket.destroyed) return false;
    const ex = this.ex;
    return !ex.head || keepsAlive(ex.head, ex.framing!, ex.opts.headers);
  }

  /** Can a request be sent behind the current one now? */
  canQueue(): boolean {
    return this.waiting.length < PIPELINE_DEPTH && this.pipelines();
  }

  exchange(head: string, opts: H1Options): Promise<Response> {
    return new Promise<Response>((resolve, reject) => {
      const ex = this.newExchange(opts, resolve, reject);
      this.ex = ex;
      this.socket.ref();
      if (this.connected) this.arm('headers', opts.headersTimeoutMs);
      this.socket.write(head, 'latin1');
      opts.behind?.();
    });
  }

  /** Send a request behind the current one (canQueue): its response is read once the current one ends. */
  queue(head: string, opts: H1Options): Promise<Response> {
    return new Promise<Response>((resolve, reject) => {
      this.waiting.push(this.newExchange(opts, resolve, reject));
      this.socket.write(head, 'latin1');
    });
  }

  private newExchange(opts: H1Options, resolve: (r: Response) => void, reject: (err: unknown) => void): Exchange {
    const ex: Exchange = {
      opts, resolve, reject,
      answered: false, head: null, headBytes: [], headLength: 0, framing: null, body: null, short: false, dropped: false,
      onAbort: () => {
        if (this.ex === ex) return this.fail(stopped());
        if (!this.waiting.includes(ex)) return;
        // Stopped while waiting: the request fails now; its answer, which will still come, is read
        // and dropped in its turn (the connection ends there if that answer is long).
        ex.dropped = true;
        ex.reject(stopped());
      },
    };
    opts.signal.addEventListener('abort', ex.onAbort, { once: true });
    return ex;
  }

  /** Start (or restart) the one timer for this phase. */
  private arm(kind: NonNullable<Connection['timerKind']>, ms: number): void {
    this.disarm();
    if (ms <= 0) return;
    this.timerKind = kind;
    this.timerMs = ms;
    this.lastActivity = Date.now();
    this.timer = setTimeout(() => this.onTimer(), ms);
    if (kind === 'idle') this.timer.unref();
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerKind = null;
  }

  private onTimer(): void {
    this.timer = null;
    const quiet = Date.now() - this.lastActivity;
    // Reads move the deadline without touching the timer: it is pushed back here instead.
    if (this.timerKind === 'body' && quiet < this.timerMs) {
      this.timer = setTimeout(() => this.onTimer(), this.timerMs - quiet);
      return;
    }
    const kind = this.timerKind;
    this.timerKind = null;
    if (kind === 'idle') return this.destroy();
    if (kind === 'connect') return this.fail(new TransferError('E_CONNECTION', `connection timed out: connecting to ${this.where}`, true));
    if (kind === 'headers') return this.fail(new TransferError('E_STALL', 'no response headers within the stall timeout', true));
    if (kind === 'body') return this.fail(new TransferError('E_STALL', 'no body bytes within the stall timeout', true));
  }

  /**
   * Where the next read goes: into the body's taker's own buffer when it names one (a large file's
   * direct-I/O buffer: the bytes need no copy), for at most the body's remaining length so that no
   * byte of anything after it lands there; else the shared buffer.
   */
  private readTarget(): Buffer {
    const ex = this.ex;
    const f = ex?.framing;
    if (ex?.body && f?.kind === 'length' && f.left >= TUNING.placedReadMinBytes && !ex.dropped) return ex.body.target(f.left) ?? readBuffer!;
    return readBuffer!;
  }

  private onRead(buf: Buffer, n: number): void {
    if (!this.ex) return this.destroy(); // bytes nobody asked for: this connection is not in a known state
    this.lastActivity = Date.now();
    // Only the first n bytes are this read's: the rest of the shared buffer is an older read's.
    const data = n === buf.length ? buf : buf.subarray(0, n);
    let off = 0;
    try {
      // One read may end a response and begin the next (a request sent behind it).
      for (let ex = this.ex; off < n && ex; ex = this.ex) {
        ex.answered = true;
        off = ex.body ? this.readBody(ex, data, off) : this.readHead(ex, data, off);
      }
    } catch (err) {
      return this.fail(err);
    }
    // Bytes past the end of the response: the connection cannot be trusted with another request.
    if (off < n) this.destroy();
  }

  private readHead(ex: Exchange, data: Buffer, off: number): number {
    let end: number;
    let text: string;
    if (ex.headLength === 0) {
      // Usually the whole head comes in one read: parsed where it lies.
      end = headEnd(data, off);
      if (end !== -1) text = data.toString('latin1', off, end);
    } else {
      const before = ex.headLength;
      const all = Buffer.concat([...ex.headBytes, data.subarray(off)]);
      const at = headEnd(all, Math.max(0, before - 3));
      end = at === -1 ? -1 : off + at - before;
      if (at !== -1) text = all.toString('latin1', 0, at);
    }
    if (end === -1) {
      ex.headBytes.push(Buffer.from(data.subarray(off)));
      ex.headLength += data.length - off;
      if (ex.headLength > MAX_HEAD_BYTES) throw protocolError(`response head larger than ${MAX_HEAD_BYTES / 1024} KiB`);
      return data.length;
    }
    ex.headBytes = [];
    ex.headLength = 0;
    if (text!.length > MAX_HEAD_BYTES) throw protocolError(`response head larger than ${MAX_HEAD_BYTES / 1024} KiB`);
    const head = parseHead(text!);
    if (head.statusCode === 101) throw protocolError('a protocol switch nobody asked for (HTTP 101)');
    if (head.statusCode < 200) return end; // an interim answer (100, 103): the real one follows
    ex.head = head;
    const framing = framingOf(ex.opts.method, head);
    ex.framing = framing;
    ex.short = framing.kind === 'none' || (framing.kind === 'length' && framing.left <= BEHIND_MAX_BYTES);
    if (ex.dropped && !ex.short) throw stopped(); // not worth reading: the connection ends (fail)
    if (this.waiting.length && !ex.short) this.release();
    ex.body = new H1Body(this);
    this.arm('body', ex.opts.bodyTimeoutMs);
    if (ex.dropped) ex.body.take(() => {});
    else ex.resolve({ statusCode: head.statusCode, headers: head.headers, body: ex.body });
    if (framing.kind === 'none' || (framing.kind === 'length' && framing.left === 0)) this.finish(ex);
    return end;
  }

  private readBody(ex: Exchange, buf: Buffer, off: number): number {
    const n = buf.length;
    const f = ex.framing!;
    const body = ex.body!;
    if (f.kind === 'close') {
      body.push(buf.subarray(off, n));
      return n;
    }
    if (f.kind === 'length') {
      const take = Math.min(f.left, n - off);
      f.left -= take;
      body.push(buf.subarray(off, off + take));
      if (f.left === 0) this.finish(ex);
      return off + take;
    }
    if (f.kind !== 'chunked') return n;
    // Chunked: a size line, the data, a line end; after a zero size, trailer lines to a blank one.
    if (f.state === 'data') {
      const take = Math.min(f.left, n - off);
      f.left -= take;
      body.push(buf.subarray(off, off + take));
      if (f.left === 0) f.state = 'data-end';
      return off + take;
    }
    const nl = buf.indexOf(10, off);
    const upTo = nl === -1 ? n : nl;
    f.line += buf.toString('latin1', off, upTo);
    if (f.line.length > MAX_LINE_BYTES) throw protocolError('chunk line too long');
    if (upTo === n) return n;
    const line = f.line.endsWith('\r') ? f.line.slice(0, -1) : f.line;
    f.line = '';
    if (f.state === 'size') {
      const m = /^([0-9A-Fa-f]{1,15})[ \t]*(?:;.*)?$/.exec(line);
      if (!m) throw protocolError(`invalid chunk size '${line.slice(0, 40)}'`);
      f.left = parseInt(m[1]!, 16);
      f.state = f.left === 0 ? 'trailer' : 'data';
    } else if (f.state === 'data-end') {
      if (line !== '') throw protocolError('chunk data longer than its size');
      f.state = 'size';
    } else {
      f.trailerBytes += line.length;
      if (f.trailerBytes > MAX_HEAD_BYTES) throw protocolError('trailers too large');
      if (line === '') this.finish(ex);
    }
    return upTo + 1;
  }

  /**
   * The requests waiting behind the current one are asked again on fresh connections (they would
   * wait for a long answer, or the connection is ending), and this one ends with its current
   * response (the answers to the others are not read).
   */
  private release(): void {
    this.closeAfter = true;
    for (const ex of this.waiting.splice(0)) {
      ex.opts.signal.removeEventListener('abort', ex.onAbort);
      const cause = Object.assign(new Error('the connection ends before this request is answered'), { code: 'UND_ERR_SOCKET' });
      ex.reject(new StaleConnection(cause));
    }
  }

  /** The whole response has arrived: the exchange ends, the connection is pooled or closed. */
  private finish(ex: Exchange): void {
    this.ex = null;
    this.served++;
    ex.opts.signal.removeEventListener('abort', ex.onAbort);
    ex.body!.end();
    if (this.held) this.hold(false);
    const ms = keepAliveMs(ex.head!);
    if (!keepsAlive(ex.head!, ex.framing!, ex.opts.headers) || ms <= 0 || this.closeAfter) {
      // A request waiting behind this one is asked again elsewhere (the server said it closes).
      return this.destroy();
    }
    // Only behind a connection whose last answer was short: a server whose answers are long or
    // chunked (dynamic pages) would have each waiting request sent again elsewhere (release).
    this.proven = ex.head!.version === '1.1' && ex.short;
    const next = this.waiting.shift();
    if (next) {
      this.ex = next;
      this.arm('headers', next.opts.headersTimeoutMs);
      if (!next.dropped) next.opts.behind?.();
      return;
    }
    this.socket.unref();
    this.arm('idle', ms);
    putIdle(this);
  }

  /** EOF or close: the end of a body read to the close, or a failure. */
  private onEnd(): void {
    const ex = this.ex;
    if (!ex) {
      this.dead = true;
      this.unlist();
      this.disarm();
      return;
    }
    if (ex.body && ex.framing?.kind === 'close') {
      this.ex = null;
      ex.opts.signal.removeEventListener('abort', ex.onAbort);
      ex.body.end();
      return this.destroy();
    }
    if (!ex.head) return this.fail(Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }));
    const f = ex.framing!;
    const missing = f.kind === 'length' ? ` (${f.left} bytes missing)` : '';
    this.fail(new TransferError('E_SHORT_BODY', `the connection closed before the end of the response body${missing}`, true));
  }

  /** The exchange fails with `err` (before the head: the request's promise; after: the body's `done`). */
  fail(err: unknown): void {
    const ex = this.ex;
    this.ex = null;
    // A request waiting behind a response that failed: not this server's fault alone, but counted.
    if (this.waiting.length && !ex?.dropped) pipelineFailures.set(this.key, (pipelineFailures.get(this.key) ?? 0) + 1);
    this.destroy();
    if (!ex) return;
    ex.opts.signal.removeEventListener('abort', ex.onAbort);
    if (ex.body) return ex.body.failed(err);
    const retry = this.served > 0 && !ex.answered && !(err instanceof TransferError);
    ex.reject(retry ? new StaleConnection(err) : err);
  }

  /** Stop (true) or start again (false) reading, for the body's reader. */
  hold(on: boolean): void {
    if (this.held === on) return;
    this.held = on;
    if (on) {
      this.socket.pause();
      if (this.timerKind === 'body') this.disarm();
    } else {
      if (this.socket.destroyed) return;
      this.socket.resume();
      if (this.ex?.body) this.arm('body', this.ex.opts.bodyTimeoutMs);
    }
  }

  destroy(): void {
    // A request sent behind a response and never answered here: asked again on a fresh connection.
    if (this.waiting.length) this.release();
    if (this.dead && this.socket.destroyed) return;
    this.dead = true;
    this.disarm();
    this.unlist();
    this.socket.destroy();
  }

  /** Out of the idle pool and the list of open connections. */
  private unlist(): void {
    dropIdle(this);
    const set = live.get(this.key);
    set?.delete(this);
    if (set?.size === 0) live.delete(this.key);
  }

  /** The reader of `body` gave up on it: close, unless that response already ended. */
  abandon(body: H1Body, err: unknown): void {
    if (this.ex?.body === body) this.fail(err);
  }
}

/** Where the response head ends in `buf` (the index after its blank line), looking from `from`; -1 if not yet. */
function headEnd(buf: Buffer, from: number): number {
  for (let i = buf.indexOf(10, from); i !== -1; i = buf.indexOf(10, i + 1)) {
    if (buf[i + 1] === 10) return i + 2;
    if (buf[i + 1] === 13 && buf[i + 2] === 10) return i + 3;
  }
  return -1;
}

/**
 * A response body read by a Connection. Chunks go straight to the taker while it takes them; while it
 * holds the body (or before anyone takes it) they are copied aside and the connection stops reading.
 */
class H1Body implements ResponseBody {
  private taker: ((chunk: Buffer, owned: boolean) => void) | null = null;
  private place: ((max: number) => Buffer | null) | null = null;
  private pending: Buffer[] = [];
  private paused = false;
  private ended = false;
  private failure: unknown = null;
  private settle!: { resolve: () => void; reject: (err: unknown) => void };
  destroyed = false;
  readonly done: Promise<void>;

  constructor(private readonly conn: Connection) {
    this.done = new Promise<void>((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => {}); // observed by whoever takes the body; never an unhandled rejection
  }

  /** From the connection: the next chunk (valid during this call only). */
  push(chunk: Buffer): void {
    if (chunk.length === 0 || this.destroyed) return;
    if (this.taker && !this.paused && this.pending.length === 0) return this.taker(chunk, false);
    this.pending.push(Buffer.from(chunk));
    this.conn.hold(true);
  }

  end(): void {
    this.ended = true;
    this.flush();
  }

  failed(err: unknown): void {
    if (this.destroyed && this.failure) return;
    this.failure = err;
    this.destroyed = true;
    this.pending = [];
    this.settle.reject(err);
  }

  take(take: (chunk: Buffer, owned: boolean) => void): void {
    this.taker = take;
    this.flush();
  }

  readInto(place: (max: number) => Buffer | null): void {
    this.place = place;
  }

  /** The taker's place for the next read, while chunks go straight to it (nothing set aside). */
  target(max: number): Buffer | null {
    if (!this.place || !this.taker || this.paused || this.pending.length > 0 || this.destroyed) return null;
    return this.place(max);
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    if (!this.ended) this.conn.hold(true);
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.flush();
  }

  /** Hand over what was set aside; then read on (or report the end). */
  private flush(): void {
    while (this.taker && !this.paused && this.pending.length > 0 && !this.destroyed) this.taker(this.pending.shift()!, true);
    if (this.destroyed || this.paused || this.pending.length > 0 || !this.taker) return;
    if (this.ended) return this.settle.resolve();
    this.conn.hold(false);
  }

  destroy(err?: Error): void {
    if (this.destroyed) return;
    const e = err ?? stopped();
    this.conn.abandon(this, e);
    this.failed(e);
  }

  async dump(opts: { limit?: number; signal?: AbortSignal } = {}): Promise<void> {
    const limit = opts.limit ?? 128 * 1024;
    let seen = 0;
    if (!this.taker) {
      this.take((chunk) => {
        seen += chunk.length;
        if (seen > limit) this.destroy();
      });
    }
    const onAbort = () => this.destroy();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await this.done.catch(() => {});
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
    if (opts.signal?.aborted) throw stopped();
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    const queue: Buffer[] = [];
    let wake: (() => void) | null = null;
    let finished = false;
    let error: unknown = null;
    // In pieces of at most 64 KiB, as a stream's reads come: a reader that paces itself per chunk
    // (a split download under a bandwidth limit) is not handed a whole MiB at once.
    this.take((chunk, owned) => {
      for (let off = 0; off < chunk.length; off += ITERATED_PIECE_BYTES) {
        const piece = chunk.subarray(off, off + ITERATED_PIECE_BYTES);
        queue.push(owned ? piece : Buffer.from(piece));
      }
      if (queue.length >= 2) this.pause();
      wake?.();
    });
    this.done.then(
      () => ((finished = true), wake?.()),
      (err) => ((error = err), (finished = true), wake?.()),
    );
    return {
      next: async () => {
        for (;;) {
          if (queue.length > 0) {
            const value = queue.shift()!;
            if (queue.length === 0) this.resume();
            return { value, done: false };
          }
          if (error) throw error;
          if (finished) return { value: undefined, done: true };
          await new Promise<void>((resolve) => (wake = resolve));
          wake = null;
        }
      },
      return: async () => {
        if (!finished) this.destroy();
        return { value: undefined, done: true };
      },
    };
  }
}
