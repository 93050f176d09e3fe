// Netscape/Mozilla cookie files (what curl -c, wget --save-cookies and browser exporters write), read
// when a transfer starts, and the cookies that match one request (domain, path, secure, expiry).
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

/** RFC 6265 path-match: the same path, or a prefix ending at a `/`. */
function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

/** The cookies for a request to `url` at time `now` (ms), longest path first (as RFC 6265 orders them). */
export function cookiesFor(cookies: Cookie[], url: URL, now: number): Cookie[] {
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
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
