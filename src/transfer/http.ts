// Requests and redirects, shared by downloads and uploads. A request is a "hop" (URL, method, headers,
// whether it carries the body); `nextHop` decides, as a pure function, where a redirect may lead and
// what travels with it; `requestFollowingRedirects` performs hops until a final response.

import fs from 'node:fs';
import type { Readable } from 'node:stream';
import { request, type Dispatcher } from 'undici';
import type { Header } from '../shared/model.js';
import { isCredentialHeader, redactUrl } from '../shared/redact.js';
import { dispatcherFor } from './dispatch.js';
import { TransferError, type TlsOptions } from './types.js';

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
    if (!hasHeader(headers, 'authorization')) headers.push(['Authorization', `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`]);
    url.username = '';
    url.password = '';
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
  return { url, method, headers, withBody };
}

export interface PerformOptions extends TlsOptions {
  signal: AbortSignal;
  /** headersTimeout and bodyTimeout: no progress for this long fails the request (E_STALL). */
  stallTimeoutMs: number;
  maxRedirects: number;
  rules: RedirectRules;
  /** A fresh request body for each hop that carries one (uploads). */
  body?: () => Readable | Buffer;
}

export interface FinalResponse {
  response: Dispatcher.ResponseData;
  hop: Hop;
  /** Redirects followed. */
  redirects: number;
}

export function headerValue(headers: Record<string, string | string[] | undefined>, name: string): string | null {
  const v = headers[name];
  return Array.isArray(v) ? (v[0] ?? null) : (v ?? null);
}

/** Send `first`, following redirects by hand (each redirect response's body is drained), up to the limit. */
export async function requestFollowingRedirects(first: Hop, opts: PerformOptions): Promise<FinalResponse> {
  const dispatcher = dispatcherFor(opts);
  let hop = first;
  for (let redirects = 0; ; redirects++) {
    const response = await request(hop.url, {
      dispatcher,
      method: hop.method as Dispatcher.HttpMethod,
      headers: hop.headers.flat(),
      body: hop.withBody && opts.body ? opts.body() : null,
      signal: opts.signal,
      headersTimeout: opts.stallTimeoutMs,
      bodyTimeout: opts.stallTimeoutMs,
      highWaterMark: BODY_HIGH_WATER_MARK,
    });
    const location = headerValue(response.headers, 'location');
    if (!isRedirect(response.statusCode) || !location) return { response, hop, redirects };
    await response.body.dump({ limit: REDIRECT_BODY_LIMIT, signal: opts.signal });
    if (redirects >= opts.maxRedirects) {
      throw new TransferError('E_TOO_MANY_REDIRECTS', `more than ${opts.maxRedirects} redirects (last at ${redactUrl(hop.url.href)})`, false, { finalUrl: hop.url.href });
    }
    hop = nextHop(hop, response.statusCode, location, opts.rules);
  }
}
