// Netscape/Mozilla cookie files (what curl -c, wget --save-cookies and browser exporters write), read
// when a transfer starts, and the cookies that match one request (domain, path, secure, expiry). With a
// cookie file, cookies the server sets during the attempt (Set-Cookie, RFC 6265) join the file's in
// memory for the attempt's later requests, as curl's cookie engine does with -b; nothing is written.
// Cookies are credentials: only the file's path is stored with the task, never its contents.

import fs from 'node:fs';

export interface Cookie {
  /** Lowercase, without a leading dot. */
  domain: string;
  /** TRUE in the file: subdomains of `domain` get the cookie too. */
  includeSubdomains: boolean;
  path: string;
  /** Only sent over https. */
  secure: boolean;
  /** Expiry in seconds since the epoch; 0 for a session cookie (always sent). */
  expires: number;
  name: string;
  value: string;
  httpOnly: boolean;
}

export interface CookieFile {
  cookies: Cookie[];
  /** Line numbers of lines that are neither comments nor cookies. */
  badLines: number[];
}

/** Characters a cookie name or value can never hold: they would break or inject into the header. */
const UNSAFE = /[\x00-\x1f\x7f;]/;

/**
 * One cookie a line: domain, include-subdomains flag, path, secure flag, expiry, name, value,
 * separated by tabs. `#HttpOnly_` before the domain marks an HttpOnly cookie; other `#` lines and
 * blank lines are comments.
 */
export function parseCookieFile(text: string): CookieFile {
  const cookies: Cookie[] = [];
  const badLines: number[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    let line = raw;
    let httpOnly = false;
    if (line.startsWith('#HttpOnly_')) {
      httpOnly = true;
      line = line.slice('#HttpOnly_'.length);
    } else if (line.trim() === '' || line.startsWith('#')) return;
    const f = line.split('\t');
    if (f.length < 6) return void badLines.push(index + 1);
    const [domainRaw, sub, path, secure, expires, name] = f as [string, string, string, string, string, string];
    const value = f.slice(6).join('\t');
    const flag = (s: string) => s.trim().toUpperCase();
    if (!/^(TRUE|FALSE)$/.test(flag(sub)) || !/^(TRUE|FALSE)$/.test(flag(secure)) || !/^-?\d+(\.\d+)?$/.test(expires.trim())) {
      return void badLines.push(index + 1);
    }
    const domain = domainRaw.trim().toLowerCase().replace(/^\./, '');
    if (domain === '' || name === '' || UNSAFE.test(name) || UNSAFE.test(value) || /[=\s]/.test(name)) return void badLines.push(index + 1);
    cookies.push({
      domain,
      includeSubdomains: flag(sub) === 'TRUE',
      path: path.trim() === '' ? '/' : path.trim(),
      secure: flag(secure) === 'TRUE',
      expires: Math.floor(Number(expires)),
      name,
      value,
      httpOnly,
    });
  });
  return { cookies, badLines };
}

/** The host a cookie is matched against: lowercase, no IPv6 brackets, no trailing dot. */
const cookieHost = (url: URL): string => url.hostname.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');

/** RFC 6265 path-match: the same path, or a prefix ending at a `/`. */
function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

/** The cookies for a request to `url` at time `now` (ms), longest path first (as RFC 6265 orders them). */
export function cookiesFor(cookies: Cookie[], url: URL, now: number): Cookie[] {
  const host = cookieHost(url);
  const requestPath = url.pathname || '/';
  const secure = url.protocol === 'https:';
  return cookies
    .filter((c) => {
      const domainOk = host === c.domain || (c.includeSubdomains && host.endsWith(`.${c.domain}`));
      return domainOk && pathMatches(requestPath, c.path) && (!c.secure || secure) && (c.expires === 0 || c.expires * 1000 > now);
    })
    .map((c, i) => ({ c, i }))
    .sort((a, b) => b.c.path.length - a.c.path.length || a.i - b.i)
    .map(({ c }) => c);
}

/** The `Cookie` header value for these cookies, or null when there are none. */
export function cookieHeader(cookies: Cookie[]): string | null {
  return cookies.length === 0 ? null : cookies.map((c) => `${c.name}=${c.value}`).join('; ');
}

/** Read and parse a cookie file for a transfer (an Error with the reason when it cannot be read). */
export function readCookieFile(file: string): CookieFile {
  try {
    return parseCookieFile(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read cookie file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

const isIp = (host: string): boolean => /^[0-9.]+$/.test(host) || host.includes(':');

/** RFC 6265 default-path: the request path up to its last `/` (not included), or `/`. */
function defaultPath(url: URL): string {
  const p = url.pathname || '/';
  const last = p.lastIndexOf('/');
  return last <= 0 ? '/' : p.slice(0, last);
}

/**
 * One Set-Cookie header from a response to `url` at `now` (ms), as RFC 6265 section 5.2-5.3 store it:
 * null when the cookie is not acceptable (no `name=`, a Domain that does not cover the host or is a
 * bare top-level name, Secure over plain http, characters a header cannot carry). An `expires` below
 * zero marks a cookie that deletes its stored namesake.
 */
export function parseSetCookie(header: string, url: URL, now: number): Cookie | null {
  const [pair = '', ...attrs] = header.split(';');
  const eq = pair.indexOf('=');
  if (eq <= 0) return null;
  const name = pair.slice(0, eq).trim();
  const value = pair.slice(eq + 1).trim();
  if (name === '' || UNSAFE.test(name) || UNSAFE.test(value) || /[=\s]/.test(name)) return null;
  const host = cookieHost(url);
  let domain: string | null = null;
  let path: string | null = null;
  let expires: number | null = null;
  let maxAge: number | null = null;
  let secure = false;
  let httpOnly = false;
  for (const attr of attrs) {
    const at = attr.indexOf('=');
    const key = (at === -1 ? attr : attr.slice(0, at)).trim().toLowerCase();
    const v = at === -1 ? '' : attr.slice(at + 1).trim();
    if (key === 'domain' && v !== '') domain = v.toLowerCase().replace(/^\./, '');
    else if (key === 'path') path = v.startsWith('/') ? v : null;
    else if (key === 'max-age' && /^-?\d+$/.test(v)) maxAge = Number(v);
    else if (key === 'expires' && !Number.isNaN(Date.parse(v))) expires = Date.parse(v);
    else if (key === 'secure') secure = true;
    else if (key === 'httponly') httpOnly = true;
  }
  if (secure && url.protocol !== 'https:') return null;
  if (domain !== null) {
    const covers = host === domain || (!isIp(host) && host.endsWith(`.${domain}`));
    if (!covers || (!domain.includes('.') && domain !== host)) return null;
  }
  // Max-Age wins over Expires; either in the past deletes. A session cookie lives for the attempt.
  const expiresAt = maxAge !== null ? (maxAge <= 0 ? -1 : Math.floor(now / 1000) + maxAge) : expires !== null ? (expires <= now ? -1 : Math.floor(expires / 1000)) : 0;
  return { domain: domain ?? host, includeSubdomains: domain !== null, path: path ?? defaultPath(url), secure, expires: expiresAt, name, value, httpOnly };
}

/**
 * Take a response's Set-Cookie headers into `jar`: a cookie replaces the one of the same name, domain
 * and path, and one that has expired removes it.
 */
export function storeSetCookies(jar: Cookie[], headers: string | string[] | undefined, url: URL, now: number): void {
  for (const header of headers === undefined ? [] : Array.isArray(headers) ? headers : [headers]) {
    const c = parseSetCookie(header, url, now);
    if (!c) continue;
    const at = jar.findIndex((o) => o.name === c.name && o.domain === c.domain && o.path === c.path);
    if (at !== -1) jar.splice(at, 1);
    if (c.expires >= 0) jar.push(c);
  }
}
