// One undici dispatcher per distinct TLS setting, shared by every transfer: each keeps a keep-alive
// connection pool per origin, so thousands of small files to one host reuse a handful of connections.
// Over TLS the connection offers HTTP/2 (ALPN); an origin that takes it gets its requests multiplexed
// on one connection, and the protocol each origin spoke is remembered for `status`.

import fs from 'node:fs';
import tls from 'node:tls';
import { Agent, buildConnector, Client, EnvHttpProxyAgent, Pool, type Dispatcher } from 'undici';
import { TransferError, type TlsOptions } from './types.js';

// Connection defaults, in one place:
// - keepAliveTimeout 30 s: a worker draining a queue reuses connections between files; servers that
//   close sooner say so with Keep-Alive hints, which undici honours.
// - pipelining 1: one request at a time per connection (HTTP/1.1 pipelining breaks too many servers).
const CONNECTION_OPTIONS = { keepAliveTimeout: 30_000, keepAliveMaxTimeout: 600_000, pipelining: 1 } as const;
// - H2_STREAMS: requests in flight on one HTTP/2 connection (servers commonly allow 100-250 streams).
const H2_STREAMS = 100;

export type Protocol = 'HTTP/1.1' | 'HTTP/2';
/** The protocol each origin's connections negotiated, by dispatcher key and origin. */
const protocols = new Map<string, Protocol>();

const PROXY_VARS = ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy'] as const;

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

/** The TLS connect options: verification on unless `insecure`; `caFile` adds to the system roots. */
function connectOptions(opts: TlsOptions): tls.ConnectionOptions {
  if (opts.insecure) return { rejectUnauthorized: false };
  if (!opts.caFile) return {};
  let pem: string;
  try {
    pem = fs.readFileSync(opts.caFile, 'utf8');
  } catch (err) {
    throw caFileError(opts.caFile, err);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new TransferError('E_TLS_CA', `--ca-file ${opts.caFile} holds no PEM certificate`, false);
  }
  return { ca: [...tls.rootCertificates, pem] };
}

function proxyKey(): string {
  const set = PROXY_VARS.filter((v) => process.env[v]).map((v) => `${v}=${process.env[v]}`);
  if (set.length === 0) return '';
  return `|proxy:${set.join(',')}|no_proxy=${process.env.NO_PROXY ?? process.env.no_proxy ?? ''}`;
}

/**
 * A connection to `origin` that offers HTTP/2 over TLS. On an HTTP/2 connection many requests run at
 * once (streams); on HTTP/1.1 one at a time, as pipelining breaks too many servers. An origin already
 * known to speak HTTP/2 gets multiplexing from its next connection's first request.
 */
function clientFor(key: string, origin: URL | string, opts: object, tlsOptions: tls.ConnectionOptions): Dispatcher {
  const at = `${key} ${new URL(String(origin)).origin}`;
  const connector = buildConnector({ ...(tlsOptions as object), allowH2: true } as buildConnector.BuildOptions);
  let alpn: string | null = null;
  const client = new Client(origin, {
    ...(opts as Client.Options),
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

/** The shared dispatcher for these TLS options (through the environment's proxy when one is set). */
export function dispatcherFor(opts: TlsOptions): Dispatcher {
  const proxy = proxyKey();
  const key = tlsKey(opts) + proxy;
  let d = dispatchers.get(key);
  if (!d) {
    const options = connectOptions(opts);
    d = proxy
      ? new EnvHttpProxyAgent({ ...CONNECTION_OPTIONS, connect: options, requestTls: options })
      : new Agent({
          ...CONNECTION_OPTIONS,
          connect: options,
          factory: (origin, o) => new Pool(origin, { ...(o as Pool.Options), factory: (co, copts) => clientFor(key, co, copts, options) }),
        });
    dispatchers.set(key, d);
  }
  return d;
}

/** The protocol the connections to `url`'s origin spoke under these options (null: not known). */
export function protocolFor(opts: TlsOptions, url: URL): Protocol | null {
  if (url.protocol === 'http:') return 'HTTP/1.1';
  const key = tlsKey(opts) + proxyKey();
  return protocols.get(`${key} ${url.origin}`) ?? (proxyKey() ? 'HTTP/1.1' : null);
}

/** Close every pooled connection (worker shutdown, end of a test file). */
export async function closeDispatchers(): Promise<void> {
  const all = [...dispatchers.values()];
  dispatchers.clear();
  protocols.clear();
  await Promise.all(all.map((d) => d.close().catch(() => d.destroy().catch(() => {}))));
}
