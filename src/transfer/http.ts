// Requests and redirects, shared by downloads and uploads. A request is a "hop" (URL, method, headers,
// whether it carries the body); `nextHop` decides, as a pure function, where a redirect may lead and
// what travels with it; `requestFollowingRedirects` performs hops until a final response.

import fs from 'node:fs';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { request } from './undici.js';
import { h1Request } from './h1.js';
import { readableBody, type Headers, type Response } from './response.js';
import { cookieHeader, cookiesFor, readCookieFile, storeSetCookies, type Cookie } from '../shared/cookies.js';
import type { Header } from '../shared/model.js';
import { netrcLookup, readNetrc, type NetrcEntry } from '../shared/netrc.js';
import { proxyFor } from '../shared/proxy.js';
import { isCredentialHeader, redactUrl } from '../shared/redact.js';
import { directProtocol, dispatcherFor, forwardDispatcherFor, protocolWith, proxyRefused, proxyUnreachable, tlsFor, tunnelDispatcherFor, type Protocol } from './dispatch.js';
import { TransferError, type NetworkOptions, type TlsOptions } from './types.js';

export const DEFAULT_MAX_REDIRECTS = 20;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Headers that describe a request body: gone when a redirect turns the request into a GET. */
const BODY_HEADERS = ['content-type', 'content-length', 'content-encoding', 'transfer-encoding'];
/** A paused response body buffers up to this much before back-pressure reaches the socket. */
const BODY_HIGH_WATER_MARK = 256 * 1024;
/** A redirect body larger than this is not read: the connection is closed instead. */
export const REDIRECT_BODY_LIMIT = 256 * 1024;

export interface Hop {
  url: URL;
  method: string;
  /** Headers to send, credentials included until the request leaves the origin they were given for. */
  headers: Array<[string, string]>;
  /** Whether this request carries the (upload) body. */
  withBody: boolean;
  /** The URL named this user without a password: the password comes from netrc, if it has one (same origin only). */
  netrcLogin?: string;
}

export interface RedirectRules {
  allowDowngrade: boolean;
  /** Uploads: 301/302/303 all turn into a GET. Downloads: 303 always, 301/302 only for POST (as browsers). */
  anyRedirectDropsBody: boolean;
}

let userAgent: string | null = null;
function defaultUserAgent(): string {
  if (userAgent == null) {
    let version = '0';
    try {
      version = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version ?? version;
    } catch {
      /* a packaged build without package.json: keep the placeholder */
    }
    userAgent = `bgdl/${version}`;
  }
  return userAgent;
}

const basicAuth = (user: string, pass: string): string => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
const hasHeader = (headers: Array<[string, string]>, name: string): boolean => headers.some(([n]) => n.toLowerCase() === name);
export const withoutHeaders = (headers: Array<[string, string]>, names: string[]): Array<[string, string]> =>
  headers.filter(([n]) => !names.includes(n.toLowerCase()));

/**
 * The first request: the user's headers, `Accept-Encoding: identity` (bytes are stored as sent, never
 * decoded), a default User-Agent, and URL user info moved into a Basic Authorization header (user info is
 * never sent in the URL; the header is dropped, like any credential, once a redirect leaves the origin).
 */
export function firstHop(rawUrl: string, method: string, userHeaders: Header[]): Hop {
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    throw new TransferError('E_REQUEST', `invalid URL '${redactUrl(rawUrl)}'`, false);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new TransferError('E_REQUEST', `unsupported URL scheme '${url.protocol.replace(/:$/, '')}': only http and https are supported`, false);
  }
  let headers: Array<[string, string]> = withoutHeaders(userHeaders.map(([n, v]) => [n, v]), ['accept-encoding']);
  headers.push(['Accept-Encoding', 'identity']);
  if (!hasHeader(headers, 'user-agent')) headers.push(['User-Agent', defaultUserAgent()]);
  if (url.username || url.password) {
    const user = decodeURIComponent(url.username);
    const pass = decodeURIComponent(url.password);
    const netrcLogin = !url.password && !hasHeader(headers, 'authorization') ? user : undefined;
    if (!netrcLogin && !hasHeader(headers, 'authorization')) headers.push(['Authorization', basicAuth(user, pass)]);
    url.username = '';
    url.password = '';
    if (netrcLogin !== undefined) return { url, method: method.toUpperCase(), headers, withBody: true, netrcLogin };
  }
  return { url, method: method.toUpperCase(), headers, withBody: true };
}

export const isRedirect = (status: number): boolean => REDIRECT_STATUSES.has(status);

/**
 * Where a redirect leads: only http(s), never from https to http unless allowed, credentials dropped
 * when the origin changes (and never restored), and the method turned into GET where HTTP says so.
 */
export function nextHop(hop: Hop, status: number, location: string, rules: RedirectRules): Hop {
  let url: URL;
  try {
    url = new URL(location, hop.url);
  } catch {
    throw new TransferError('E_REDIRECT_INVALID', `invalid redirect location '${location}' from ${redactUrl(hop.url.href)}`, false);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new TransferError('E_REDIRECT_SCHEME', `refusing redirect to a ${url.protocol.replace(/:$/, '')}: URL from ${redactUrl(hop.url.href)}: only http and https are supported`, false);
  }
  if (hop.url.protocol === 'https:' && url.protocol === 'http:' && !rules.allowDowngrade) {
    throw new TransferError('E_REDIRECT_DOWNGRADE', `refusing redirect from https to http (${redactUrl(url.href)}): it would send the request unencrypted`, false);
  }
  // Credentials in a Location are not adopted: they come from the server, not from the user.
  url.username = '';
  url.password = '';
  let headers = hop.headers;
  if (url.origin !== hop.url.origin) headers = headers.filter(([n]) => !isCredentialHeader(n));
  let method = hop.method;
  let withBody = hop.withBody;
  const toGet = (status === 303 && method !== 'HEAD') || ((status === 301 || status === 302) && (rules.anyRedirectDropsBody || method === 'POST'));
  if (toGet) {
    method = 'GET';
    withBody = false;
    headers = withoutHeaders(headers, BODY_HEADERS);
  }
  const sameOrigin = url.origin === hop.url.origin;
  return { url, method, headers, withBody, ...(sameOrigin && hop.netrcLogin !== undefined ? { netrcLogin: hop.netrcLogin } : {}) };
}

export interface PerformOptions extends TlsOptions, NetworkOptions {
  signal: AbortSignal;
  /** headersTimeout and bodyTimeout: no progress for this long fails the request (E_STALL). */
  stallTimeoutMs: number;
  maxRedirects: number;
  rules: RedirectRules;
  /** A fresh request body for each hop that carries one (uploads). */
  body?: () => Readable | Buffer;
  /**
   * The first request may be sent behind another on a busy HTTP/1.1 connection (h1.ts, pipelining).
   * Called once it no longer waits (at once when it does not go that way).
   */
  behind?: () => void;
}

export interface FinalResponse {
  response: Response;
  hop: Hop;
  /** Redirects followed. */
  redirects: number;
  /** The protocol the final response came over (through a proxy: HTTP/1.1). */
  protocol: Protocol | null;
}

export function headerValue(headers: Headers, name: string): string | null {
  const v = headers[name];
  return Array.isArray(v) ? (v[0] ?? null) : (v ?? null);
}

/** Credentials read from files when a transfer starts: looked up per hop, never part of a hop's own headers. */
export interface FileCredentials {
  netrc: NetrcEntry[] | null;
  cookies: Cookie[] | null;
}

/**
 * Read the task's netrc and cookie files. A cookie file that cannot be read fails the task (E_COOKIES).
 * The cookies are this request's own copy: Set-Cookie answers add to it (requestFollowingRedirects).
 */
export function loadFileCredentials(opts: NetworkOptions): FileCredentials {
  const creds: FileCredentials = { netrc: null, cookies: null };
  if (opts.netrcFile) {
    try {
      creds.netrc = readNetrc(opts.netrcFile);
    } catch (err) {
      throw new TransferError('E_NETRC', (err as Error).message, false);
    }
  }
  if (opts.cookiesFile) {
    try {
      creds.cookies = readCookieFile(opts.cookiesFile).cookies;
    } catch (err) {
      throw new TransferError('E_COOKIES', (err as Error).message, false);
    }
  }
  return creds;
}

/**
 * The headers one hop sends: its own; the netrc credentials for its host when it carries no
 * Authorization (so a redirect to another host gets that host's entry, if any, and never the first
 * host's), or the netrc password of the user its URL named; and the cookies of the cookie file that
 * match its URL, after any Cookie header of the user.
 */
export function hopHeaders(hop: Hop, creds: FileCredentials, now: number): Array<[string, string]> {
  let headers = hop.headers;
  if (hop.netrcLogin !== undefined) {
    const entry = creds.netrc && netrcLookup(creds.netrc, hop.url.hostname, hop.netrcLogin);
    headers = [...headers, ['Authorization', basicAuth(hop.netrcLogin, entry?.password ?? '')]];
  } else if (creds.netrc && !hasHeader(headers, 'authorization')) {
    const entry = netrcLookup(creds.netrc, hop.url.hostname);
    if (entry) headers = [...headers, ['Authorization', basicAuth(entry.login ?? '', entry.password ?? '')]];
  }
  const jar = creds.cookies && cookieHeader(cookiesFor(creds.cookies, hop.url, now));
  if (jar) {
    const own = headers.findIndex(([n]) => n.toLowerCase() === 'cookie');
    headers = own === -1 ? [...headers, ['Cookie', jar]] : headers.map((h, i): [string, string] => (i === own ? [h[0], `${h[1]}; ${jar}`] : h));
  }
  return headers;
}

/**
 * Whether a response to an absolute-form request came from the proxy itself rather than the origin:
 * 407 always; otherwise an error the proxy marked as its own (RFC 9209 `Proxy-Status` with an error,
 * squid's `X-Squid-Error`, tinyproxy's `Server` on its error pages).
 */
export function answeredByProxy(status: number, headers: Headers): boolean {
  if (status === 407) return true;
  if (status < 400) return false;
  if (headers['x-squid-error'] !== undefined) return true;
  if (/\berror=/i.test(headerValue(headers, 'proxy-status') ?? '')) return true;
  return /^tinyproxy\b/i.test(headerValue(headers, 'server') ?? '');
}

/**
 * Send one hop. A direct request without a body goes through our own HTTP/1.1 reader (h1.ts): over
 * http://, and over https:// once the origin's TLS connections are known to speak HTTP/1.1 (the first
 * goes through undici, which offers HTTP/2 and remembers what was chosen); the rest through undici
 * (`viaUndici`).
 */
async function send(hop: Hop, headers: Array<[string, string]>, opts: PerformOptions, behind?: () => void): Promise<Response> {
  const withBody = hop.withBody && opts.body !== undefined;
  const proxy = proxyFor(hop.url, opts.proxy);
  if (!withBody && !proxy) {
    // The TLS settings are looked up once per hop (with --ca-file, a stat of the file).
    const tls = hop.url.protocol === 'https:' ? tlsFor(opts) : undefined;
    if (!tls || protocolWith(tls.key, hop.url) === 'HTTP/1.1') {
      return h1Request(hop.url, { method: hop.method, headers, signal: opts.signal, headersTimeoutMs: opts.stallTimeoutMs, bodyTimeoutMs: opts.stallTimeoutMs, tls, behind });
    }
  }
  behind?.();
  const r = await viaUndici(hop, headers, opts, proxy);
  return { statusCode: r.statusCode, headers: r.headers, body: readableBody(r.body) };
}

/**
 * Send one hop through undici, direct or through the proxy recorded with the task: an http:// URL as
 * an absolute-form request to the proxy (`GET http://host/path`), an https:// URL through a CONNECT
 * tunnel. Proxy credentials (from the proxy URL, or the user's own Proxy-Authorization header) go
 * only to the proxy.
 */
async function viaUndici(hop: Hop, headers: Array<[string, string]>, opts: PerformOptions, proxy: string | null): Promise<Dispatcher.ResponseData> {
  const common = {
    method: hop.method as Dispatcher.HttpMethod,
    body: hop.withBody && opts.body ? opts.body() : null,
    signal: opts.signal,
    headersTimeout: opts.stallTimeoutMs,
    bodyTimeout: opts.stallTimeoutMs,
    highWaterMark: BODY_HIGH_WATER_MARK,
  };
  if (!proxy) return request(hop.url, { dispatcher: dispatcherFor(opts), headers: headers.flat(), ...common });
  const p = new URL(proxy);
  const own = headers.find(([n]) => n.toLowerCase() === 'proxy-authorization')?.[1];
  const auth = own ?? (p.username || p.password ? basicAuth(decodeURIComponent(p.username), decodeURIComponent(p.password)) : null);
  const rest = withoutHeaders(headers, ['proxy-authorization']);
  if (hop.url.protocol === 'https:') return request(hop.url, { dispatcher: tunnelDispatcherFor(opts, p.origin, auth), headers: rest.flat(), ...common });
  // The origin's Host, unless the user gave their own (a virtual host), as for a direct request.
  const forward: Array<[string, string]> = hasHeader(rest, 'host') ? [...rest] : [...rest, ['Host', hop.url.host]];
  if (auth) forward.push(['Proxy-Authorization', auth]);
  let response: Dispatcher.ResponseData;
  try {
    // The absolute form carries no fragment, like any request target.
    const target = `${hop.url.origin}${hop.url.pathname}${hop.url.search}`;
    response = await forwardDispatcherFor(opts, p.origin).request({ origin: p.origin, path: target, headers: forward.flat(), ...common });
  } catch (err) {
    throw proxyUnreachable(p.origin, err);
  }
  if (answeredByProxy(response.statusCode, response.headers)) {
    await response.body.dump({ limit: REDIRECT_BODY_LIMIT, signal: opts.signal }).catch(() => {});
    throw proxyRefused(p.origin, `${hop.method} ${redactUrl(hop.url.href)}`, response.statusCode);
  }
  return response;
}

/** Send `first`, following redirects by hand (each redirect response's body is drained), up to the limit. */
export async function requestFollowingRedirects(first: Hop, opts: PerformOptions): Promise<FinalResponse> {
  const creds = loadFileCredentials(opts);
  let hop = first;
  // Only the first request may wait behind another, and it is told once that it no longer does (a
  // stale connection's retry goes through h1Request's exchange again).
  let waits = opts.behind !== undefined;
  const behind = () => {
    if (waits) opts.behind!();
    waits = false;
  };
  for (let redirects = 0; ; redirects++) {
    const response = await send(hop, hopHeaders(hop, creds, Date.now()), opts, redirects === 0 && opts.behind ? behind : undefined);
    // With a cookie file, what the server sets goes with the later hops (a login or CDN redirect).
    if (creds.cookies) storeSetCookies(creds.cookies, response.headers['set-cookie'], hop.url, Date.now());
    const location = headerValue(response.headers, 'location');
    if (!isRedirect(response.statusCode) || !location) {
      const protocol = proxyFor(hop.url, opts.proxy) ? 'HTTP/1.1' : directProtocol(opts, hop.url);
      return { response, hop, redirects, protocol };
    }
    await response.body.dump({ limit: REDIRECT_BODY_LIMIT, signal: opts.signal });
    if (redirects >= opts.maxRedirects) {
      throw new TransferError('E_TOO_MANY_REDIRECTS', `more than ${opts.maxRedirects} redirects (last at ${redactUrl(hop.url.href)})`, false, { finalUrl: hop.url.href });
    }
    hop = nextHop(hop, response.statusCode, location, opts.rules);
  }
}
