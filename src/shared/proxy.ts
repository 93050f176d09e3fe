// Proxy settings: read once at `add` (from the command's environment or --proxy/--noproxy) and recorded
// with the task, and the pure decision of which proxy, if any, one URL goes through. The worker never
// reads its own environment for proxies.

import net from 'node:net';
import type { ProxySettings } from './model.js';
import { redactUrl } from './redact.js';

/** Where each proxy comes from, first non-empty wins: lowercase before uppercase (as curl), then all_proxy. */
export const PROXY_ENV = {
  http: ['http_proxy', 'HTTP_PROXY', 'all_proxy', 'ALL_PROXY'],
  https: ['https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'],
  noProxy: ['no_proxy', 'NO_PROXY'],
} as const;

const HAS_SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/**
 * A proxy as given (`host:port`, `user:pass@host:port`, `http://…`, `https://…`) as a normalized URL
 * string: a missing scheme means http; a missing port is the scheme's default (80 or 443). Throws an
 * Error whose message says what is wrong (never showing the credentials).
 */
export function parseProxyUrl(raw: string): string {
  const text = raw.trim();
  const withScheme = HAS_SCHEME.test(text) ? text : `http://${text}`;
  // What a message may show: nothing before the last '@', even of a string too broken to parse.
  const at = withScheme.lastIndexOf('@');
  const shown = at === -1 ? withScheme : `${withScheme.slice(0, withScheme.indexOf('//') + 2)}***@${withScheme.slice(at + 1)}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new Error(`'${shown}' is not a proxy URL: use HOST:PORT or http://[USER:PASSWORD@]HOST:PORT`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new Error(`${u.protocol.replace(/:$/, '')} proxies are not supported: use an http:// or https:// proxy`);
  }
  if (!u.hostname) throw new Error(`'${shown}' names no proxy host`);
  const auth = u.username || u.password ? `${u.username}${u.password ? `:${u.password}` : ''}@` : '';
  return `${u.protocol}//${auth}${u.host}`;
}

const firstSet = (env: NodeJS.ProcessEnv, names: readonly string[]): { name: string; value: string } | null => {
  for (const name of names) {
    const value = env[name];
    if (value && value.trim() !== '') return { name, value };
  }
  return null;
};

/**
 * The settings to record with a task: `--proxy` (both schemes; `''` means direct) and `--noproxy`
 * win over the environment. null means direct: no proxy at all, or `--noproxy '*'`.
 */
export function proxySettingsFrom(env: NodeJS.ProcessEnv, flags: { proxy?: string; noproxy?: string }): ProxySettings | null {
  const parse = (value: string, source: string): string => {
    try {
      return parseProxyUrl(value);
    } catch (err) {
      throw new Error(`invalid proxy in ${source}: ${(err as Error).message}`);
    }
  };
  let http: string | null;
  let https: string | null;
  if (flags.proxy !== undefined) {
    if (flags.proxy.trim() === '') return null;
    http = https = parse(flags.proxy, '--proxy');
  } else {
    const h = firstSet(env, PROXY_ENV.http);
    const s = firstSet(env, PROXY_ENV.https);
    http = h && parse(h.value, h.name);
    https = s && parse(s.value, s.name);
  }
  const noProxy = flags.noproxy ?? firstSet(env, PROXY_ENV.noProxy)?.value ?? null;
  if (noProxy?.trim() === '*' || (!http && !https)) return null;
  return { http, https, noProxy: noProxy && noProxy.trim() !== '' ? noProxy.trim() : null };
}

const stripBrackets = (h: string): string => (h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h);

/**
 * Whether `url` bypasses the proxy by the no_proxy list: comma- or space-separated entries, `*` for
 * everything, a host name matching itself and its subdomains (a leading dot is optional), an IP
 * address or CIDR range, and `host:port` for one port only. Case-insensitive.
 */
export function bypassesProxy(url: URL, noProxy: string | null): boolean {
  if (!noProxy) return false;
  const host = stripBrackets(url.hostname.toLowerCase()).replace(/\.$/, '');
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  const ipVersion = net.isIP(host);
  for (let entry of noProxy.toLowerCase().split(/[\s,]+/)) {
    if (entry === '') continue;
    if (entry === '*') return true;
    let entryPort: string | null = null;
    const withPort = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(entry);
    if (withPort) {
      entry = withPort[1]!;
      entryPort = withPort[2]!;
    }
    if (entryPort && entryPort !== port) continue;
    entry = stripBrackets(entry).replace(/^\*?\./, '').replace(/\.$/, '');
    if (entry.includes('/')) {
      if (ipVersion && inCidr(host, ipVersion, entry)) return true;
      continue;
    }
    if (ipVersion) {
      if (net.isIP(entry) && normalizeIp(entry) === normalizeIp(host)) return true;
      continue;
    }
    if (host === entry || host.endsWith(`.${entry}`)) return true;
  }
  return false;
}

function normalizeIp(ip: string): string {
  const list = new net.SocketAddress({ address: ip, family: net.isIP(ip) === 6 ? 'ipv6' : 'ipv4' });
  return list.address;
}

function inCidr(host: string, version: number, cidr: string): boolean {
  const [base, bits] = cidr.split('/');
  const family = version === 6 ? 'ipv6' : 'ipv4';
  if (!base || !bits || net.isIP(base) !== version || !/^\d+$/.test(bits)) return false;
  try {
    const list = new net.BlockList();
    list.addSubnet(base, Number(bits), family);
    return list.check(host, family);
  } catch {
    return false;
  }
}

/** The proxy URL (credentials included) that a request to `url` goes through, or null for a direct one. */
export function proxyFor(url: URL, settings: ProxySettings | null | undefined): string | null {
  if (!settings) return null;
  const proxy = url.protocol === 'https:' ? settings.https : settings.http;
  if (!proxy || bypassesProxy(url, settings.noProxy)) return null;
  return proxy;
}

/** One line for people: which proxies a task uses (credentials redacted). */
export function describeProxy(settings: ProxySettings | null | undefined): string | null {
  if (!settings) return null;
  const parts: string[] = [];
  if (settings.http && settings.http === settings.https) parts.push(redactUrl(settings.http)!);
  else {
    if (settings.http) parts.push(`http: ${redactUrl(settings.http)}`);
    if (settings.https) parts.push(`https: ${redactUrl(settings.https)}`);
  }
  if (settings.noProxy) parts.push(`not for ${settings.noProxy}`);
  return parts.join('; ');
}
