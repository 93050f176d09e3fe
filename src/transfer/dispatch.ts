// One undici dispatcher per distinct TLS setting, shared by every transfer: each keeps a keep-alive
// connection pool per origin, so thousands of small files to one host reuse a handful of connections.

import fs from 'node:fs';
import tls from 'node:tls';
import { Agent, EnvHttpProxyAgent, type Dispatcher } from 'undici';
import { TransferError, type TlsOptions } from './types.js';

// Connection defaults, in one place:
// - keepAliveTimeout 30 s: a worker draining a queue reuses connections between files; servers that
//   close sooner say so with Keep-Alive hints, which undici honours.
// - pipelining 1: one request at a time per connection (HTTP/1.1 pipelining breaks too many servers).
const CONNECTION_OPTIONS = { keepAliveTimeout: 30_000, keepAliveMaxTimeout: 600_000, pipelining: 1 } as const;

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

/** The shared dispatcher for these TLS options (through the environment's proxy when one is set). */
export function dispatcherFor(opts: TlsOptions): Dispatcher {
  const proxy = proxyKey();
  const key = tlsKey(opts) + proxy;
  let d = dispatchers.get(key);
  if (!d) {
    const options = connectOptions(opts);
    d = proxy
      ? new EnvHttpProxyAgent({ ...CONNECTION_OPTIONS, connect: options, requestTls: options })
      : new Agent({ ...CONNECTION_OPTIONS, connect: options });
    dispatchers.set(key, d);
  }
  return d;
}

/** Close every pooled connection (worker shutdown, end of a test file). */
export async function closeDispatchers(): Promise<void> {
  const all = [...dispatchers.values()];
  dispatchers.clear();
  await Promise.all(all.map((d) => d.close().catch(() => d.destroy().catch(() => {}))));
}
