// One undici dispatcher per distinct TLS and proxy setting, shared by every transfer: each keeps a
// keep-alive connection pool per origin (or to the proxy), so thousands of small files to one host reuse
// a handful of connections. Which proxy a request takes is decided per request (src/shared/proxy.ts).
// Direct connections over TLS offer HTTP/2 (ALPN); an origin that takes it gets its requests
// multiplexed on one connection, and the protocol each origin spoke is remembered for `status`.

import fs from 'node:fs';
import type tls from 'node:tls';
import { tlsModule } from '../shared/builtins.js';
import { extraCaCerts } from '../shared/extra-ca.js';
import type { buildConnector as BuildConnector, Client as UndiciClient, Dispatcher, Pool as UndiciPool } from 'undici';
import { closeIdleConnections } from './h1.js';
import { undici } from './undici.js';
import { classifyError } from './classify.js';
import { statusText } from './status.js';
import { TransferError, type TlsOptions } from './types.js';

// Connection defaults, in one place:
// - keepAliveTimeout 30 s: a worker draining a queue reuses connections between files; servers that
//   close sooner say so with Keep-Alive hints, which undici honours.
// - pipelining 1: one request at a time per connection (HTTP/1.1 pipelining breaks too many servers).
const CONNECTION_OPTIONS = { keepAliveTimeout: 30_000, keepAliveMaxTimeout: 600_000, pipelining: 1 } as const;
// - H2_STREAMS: requests in flight on one HTTP/2 connection (servers commonly allow 100-250 streams).
const H2_STREAMS = 100;

export type Protocol = 'HTTP/1.1' | 'HTTP/2';
/** The protocol each origin's direct connections negotiated, by TLS key and origin. */
const protocols = new Map<string, Protocol>();

const dispatchers = new Map<string, Dispatcher>();

function caFileError(file: string, err: unknown): TransferError {
  return new TransferError('E_TLS_CA', `cannot read --ca-file ${file}: ${(err as Error).message}`, false);
}

/** Distinct TLS settings get distinct pools; a CA file that changes on disk gets a fresh one. */
function tlsKey(opts: TlsOptions): string {
  if (opts.insecure) return 'insecure';
  if (!opts.caFile) return 'default';
  try {
    return `ca:${opts.caFile}:${fs.statSync(opts.caFile).mtimeMs}`;
  } catch (err) {
    throw caFileError(opts.caFile, err);
  }
}

/**
 * The TLS connect options: verification on unless `insecure`; `caFile` adds to the system roots, as
 * NODE_EXTRA_CA_CERTS does (src/shared/extra-ca.ts says when its certificates must be given here).
 * An explicit CA list is made into a secure context once: given as `ca`, every connection parsed the
 * ~140 roots again (22 ms of CPU each, measured).
 */
function connectOptions(opts: TlsOptions): tls.ConnectionOptions {
  if (opts.insecure) return { rejectUnauthorized: false };
  const extra = extraCaCerts(!!opts.caFile);
  const withRoots = (...more: string[]) => ({ secureContext: tlsModule().createSecureContext({ ca: [...tlsModule().rootCertificates, ...more] }) });
  if (!opts.caFile) return extra ? withRoots(extra) : {};
  let pem: string;
  try {
    pem = fs.readFileSync(opts.caFile, 'utf8');
  } catch (err) {
    throw caFileError(opts.caFile, err);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new TransferError('E_TLS_CA', `--ca-file ${opts.caFile} holds no PEM certificate`, false);
  }
  return withRoots(...(extra ? [extra] : []), pem);
}

/**
 * A direct connection to `origin` that offers HTTP/2 over TLS. On an HTTP/2 connection many requests
 * run at once (streams); on HTTP/1.1 one at a time, as pipelining breaks too many servers. An origin
 * already known to speak HTTP/2 gets multiplexing from its next connection's first request.
 */
function clientFor(key: string, origin: URL | string, opts: object, tlsOptions: tls.ConnectionOptions): Dispatcher {
  const at = `${key} ${new URL(String(origin)).origin}`;
  const { buildConnector, Client } = undici();
  const connector = buildConnector({ ...(tlsOptions as object), allowH2: true } as BuildConnector.BuildOptions);
  let alpn: string | null = null;
  const client = new Client(origin, {
    ...(opts as UndiciClient.Options),
    allowH2: true,
    pipelining: protocols.get(at) === 'HTTP/2' ? H2_STREAMS : 1,
    connect: (o, cb) =>
      connector(o, (err, socket) => {
        alpn = err ? null : ((socket as tls.TLSSocket | null)?.alpnProtocol || null);
        cb(err as Error, socket as never);
      }),
  });
  // 'connect' comes once the connection speaks its protocol: only then may the stream count change.
  client.on('connect', () => {
    const h2 = alpn === 'h2';
    protocols.set(at, h2 ? 'HTTP/2' : 'HTTP/1.1');
    if (client.pipelining !== (h2 ? H2_STREAMS : 1)) client.pipelining = h2 ? H2_STREAMS : 1;
  });
  return client;
}

/** TLS connect options by tlsKey: built once (a CA list is ~140 certificates, a --ca-file is read). */
const tlsOptions = new Map<string, tls.ConnectionOptions>();

/** These TLS options, and the key that names them (connections made with other options are never shared). */
export function tlsFor(opts: TlsOptions): { key: string; options: tls.ConnectionOptions } {
  const key = tlsKey(opts);
  let options = tlsOptions.get(key);
  if (!options) tlsOptions.set(key, (options = connectOptions(opts)));
  return { key, options };
}

/** The shared direct dispatcher for these TLS options. */
export function dispatcherFor(opts: TlsOptions): Dispatcher {
  const { key, options } = tlsFor(opts);
  let d = dispatchers.get(key);
  if (!d) {
    const { Agent, Pool } = undici();
    d = new Agent({
      ...CONNECTION_OPTIONS,
      connect: options,
      factory: (origin, o) => new Pool(origin, { ...(o as UndiciPool.Options), factory: (co, copts) => clientFor(key, co, copts, options) }),
    });
    dispatchers.set(key, d);
  }
  return d;
}

/** The protocol a direct request to `url`'s origin went over under these options (null: not known yet). */
export function directProtocol(opts: TlsOptions, url: URL): Protocol | null {
  return url.protocol === 'http:' ? 'HTTP/1.1' : protocolWith(tlsKey(opts), url);
}

/** What an https:// origin's connections made with the TLS settings `key` (tlsFor) negotiated, if known. */
export function protocolWith(key: string, url: URL): Protocol | null {
  return protocols.get(`${key} ${url.origin}`) ?? null;
}

/**
 * A keep-alive pool of connections to the proxy itself, for plain http:// requests sent to it in
 * absolute form (`GET http://host/path`), as curl does: every proxy accepts those, while many refuse
 * a CONNECT tunnel to port 80. The task's TLS options apply to an https:// proxy.
 */
export function forwardDispatcherFor(opts: TlsOptions, proxyOrigin: string): Dispatcher {
  const key = `${tlsKey(opts)}|forward:${proxyOrigin}`;
  let d = dispatchers.get(key);
  if (!d) {
    d = new (undici().Pool)(proxyOrigin, { ...CONNECTION_OPTIONS, connect: tlsFor(opts).options });
    dispatchers.set(key, d);
  }
  return d;
}

/**
 * A dispatcher that tunnels https:// requests through the proxy with CONNECT, one keep-alive pool per
 * origin behind the tunnel. A proxy that answers CONNECT with anything but 200 (403 from squid for a
 * port it does not allow, 407 for missing credentials) fails the request with E_PROXY and that status,
 * and a proxy that cannot be reached fails it with E_PROXY too: both name the proxy, not the origin.
 */
export function tunnelDispatcherFor(opts: TlsOptions, proxyOrigin: string, proxyAuthorization: string | null): Dispatcher {
  const key = `${tlsKey(opts)}|tunnel:${proxyOrigin}|${proxyAuthorization ?? ''}`;
  let d = dispatchers.get(key);
  if (!d) {
    const tls = tlsFor(opts).options;
    const shown = proxyOrigin;
    const { Pool, ProxyAgent } = undici();
    d = new ProxyAgent({
      ...CONNECTION_OPTIONS,
      uri: proxyOrigin,
      ...(proxyAuthorization ? { token: proxyAuthorization } : {}),
      requestTls: tls,
      proxyTls: tls,
      clientFactory: (origin: URL, options: object) => {
        const pool = new Pool(origin, options);
        const connect = pool.connect.bind(pool) as (p: Dispatcher.ConnectOptions) => Promise<Dispatcher.ConnectData>;
        // Tunnel set-up errors in our own terms, with the proxy's status.
        (pool as unknown as { connect: typeof connect }).connect = async (params) => {
          let r: Dispatcher.ConnectData;
          try {
            r = await connect(params);
          } catch (err) {
            throw proxyUnreachable(shown, err);
          }
          if (r.statusCode !== 200) {
            r.socket.on('error', () => {}).destroy();
            throw proxyRefused(shown, `CONNECT ${params.path}`, r.statusCode);
          }
          return r;
        };
        return pool;
      },
    });
    dispatchers.set(key, d);
  }
  return d;
}

/** The proxy answered with an error status instead of doing what it was asked. */
export function proxyRefused(proxy: string | null, what: string, status: number): TransferError {
  const text = statusText(status);
  const hint = status === 407 ? ': the proxy wants credentials (put them in the proxy URL: http://USER:PASSWORD@HOST:PORT)' : '';
  // As for an origin's answer: a gateway error or overload may pass, a refusal will not.
  const transient = status === 408 || status === 429 || (status >= 500 && status !== 501 && status !== 505);
  return new TransferError('E_PROXY', `proxy ${proxy} refused ${what}: HTTP ${status} ${text}${hint}`, transient, { httpStatus: status });
}

/**
 * The proxy could not be reached, or its connection failed (refused, reset, DNS, TLS): E_PROXY, naming
 * the proxy, transient as the cause is. A stop or a stall (the origin may be the slow one) stays itself.
 */
export function proxyUnreachable(proxy: string | null, err: unknown): TransferError {
  if (err instanceof TransferError) return err;
  const e = classifyError(err);
  if (e.code === 'E_ABORTED' || e.code === 'E_STALL') return e;
  return new TransferError('E_PROXY', `cannot use proxy ${proxy}: ${e.message}`, e.transient);
}

/** Close every pooled connection, ours (h1.ts) and undici's (worker shutdown, end of a test file). */
export async function closeDispatchers(): Promise<void> {
  closeIdleConnections();
  const all = [...dispatchers.values()];
  dispatchers.clear();
  protocols.clear();
  tlsOptions.clear();
  await Promise.all(all.map((d) => d.close().catch(() => d.destroy().catch(() => {}))));
}
