// Classifying a failed attempt: an HTTP status or a thrown network error becomes a TransferError with a
// stable code and the transient/permanent verdict the worker's retry policy acts on. Pure functions.

import { redactText, redactUrl } from '../shared/redact.js';
import { statusText } from './status.js';
import { TransferError } from './types.js';

/** Retry-After values beyond this are treated as this: a day is the longest wait we honour. */
const MAX_RETRY_AFTER_MS = 24 * 60 * 60 * 1000;

/** Statuses worth retrying besides 5xx: request timeout and rate limiting. */
const TRANSIENT_4XX = new Set([408, 429]);
/** 5xx answers that will not change by asking again (the server cannot do this at all). */
const PERMANENT_5XX = new Set([501, 505]);

type Headers = Record<string, string | string[] | undefined>;

function header(headers: Headers, name: string): string | null {
  const v = headers[name] ?? headers[name.toLowerCase()];
  return Array.isArray(v) ? (v[0] ?? null) : (v ?? null);
}

/** `Retry-After: 120` or `Retry-After: Fri, 31 Dec 1999 23:59:59 GMT`, as milliseconds from `now`. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value == null || value.trim() === '') return undefined;
  const text = value.trim();
  let ms: number;
  if (/^\d+(\.\d+)?$/.test(text)) ms = Number(text) * 1000;
  else {
    const at = Date.parse(text);
    if (Number.isNaN(at)) return undefined;
    ms = at - now;
  }
  return Math.round(Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS));
}

/** A non-2xx final status: 408, 429 and 5xx are transient, the rest permanent. */
export function classifyStatus(status: number, headers: Headers, now: number, url?: string): TransferError {
  const transient = (status >= 500 && !PERMANENT_5XX.has(status)) || TRANSIENT_4XX.has(status);
  const text = statusText(status);
  const from = url ? ` from ${redactUrl(url)}` : '';
  const retryAfterMs = parseRetryAfter(header(headers, 'retry-after'), now);
  return new TransferError('E_HTTP_STATUS', `HTTP ${status} ${text}${from}`, transient, {
    httpStatus: status,
    ...(url ? { finalUrl: url } : {}),
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
  });
}

/** OpenSSL / Node certificate verification failures, with what each means for the user. */
const CERT_PROBLEMS: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the server certificate is self-signed',
  SELF_SIGNED_CERT_IN_CHAIN: 'the certificate chain ends in an untrusted self-signed CA',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the server certificate is signed by an unknown CA',
  UNABLE_TO_GET_ISSUER_CERT: 'the issuer of the server certificate is unknown',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'the issuer of the server certificate is unknown',
  UNABLE_TO_GET_CRL: 'the certificate revocation list is unavailable',
  UNABLE_TO_DECRYPT_CERT_SIGNATURE: 'the certificate signature cannot be checked',
  UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY: 'the issuer public key cannot be read',
  CERT_SIGNATURE_FAILURE: 'the certificate signature is invalid',
  CERT_NOT_YET_VALID: 'the server certificate is not valid yet',
  CERT_HAS_EXPIRED: 'the server certificate has expired',
  ERROR_IN_CERT_NOT_BEFORE_FIELD: 'the server certificate has a malformed validity date',
  ERROR_IN_CERT_NOT_AFTER_FIELD: 'the server certificate has a malformed validity date',
  CERT_REVOKED: 'the server certificate has been revoked',
  CERT_UNTRUSTED: 'the server certificate is not trusted',
  CERT_REJECTED: 'the server certificate was rejected',
  CERT_CHAIN_TOO_LONG: 'the certificate chain is too long',
  INVALID_CA: 'a CA certificate in the chain is invalid',
  PATH_LENGTH_EXCEEDED: 'the certificate chain is too long for its CA',
  INVALID_PURPOSE: 'the certificate may not be used for a TLS server',
  HOSTNAME_MISMATCH: 'the server certificate is for a different host name',
  ERR_TLS_CERT_ALTNAME_INVALID: 'the server certificate is for a different host name',
};

const CONNECTION_ERRNOS = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'EHOSTDOWN',
  'ENETUNREACH', 'ENETDOWN', 'ENETRESET', 'EADDRNOTAVAIL', 'EPROTO',
]);
const DNS_ERRNOS = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NONAME', 'EAI_NODATA']);
const DISK_FULL = new Set(['ENOSPC', 'EDQUOT']);
const DEST_ERRNOS = new Set(['EACCES', 'EPERM', 'EROFS', 'EISDIR', 'ENOTDIR', 'ENAMETOOLONG']);

/** The error and its causes (`cause`, and the members of an AggregateError), outermost first. */
function causeChain(err: unknown): Array<Error & { code?: unknown }> {
  const out: Array<Error & { code?: unknown }> = [];
  const queue: unknown[] = [err];
  while (queue.length > 0 && out.length < 20) {
    const e = queue.shift();
    if (!(e instanceof Error) || out.includes(e)) continue;
    out.push(e);
    if (e.cause) queue.push(e.cause);
    if (e instanceof AggregateError) queue.push(...e.errors);
  }
  return out;
}

/** A thrown error (undici, Node errno, TLS) as a TransferError. Looks through wrapped causes. */
export function classifyError(err: unknown): TransferError {
  if (err instanceof TransferError) return err;
  const chain = causeChain(err);
  // The most specific cause decides: a TLS certificate problem wrapped in a connect error is still that.
  for (const e of chain) {
    const verdict = classifyOne(e);
    if (verdict) return verdict;
  }
  const message = chain[0]?.message || String(err);
  return new TransferError('E_NETWORK', redactText(message), true);
}

function classifyOne(e: Error & { code?: unknown }): TransferError | null {
  if (e instanceof TransferError) return e;
  const code = typeof e.code === 'string' ? e.code : '';
  const detail = redactText(e.message || code);
  if (code in CERT_PROBLEMS) {
    return new TransferError(
      'E_TLS_CERT',
      `TLS certificate not trusted: ${CERT_PROBLEMS[code]} (${code}); use --ca-file PEM to trust its CA, or --insecure to skip verification`,
      false,
    );
  }
  if (e.name === 'AbortError' || code === 'UND_ERR_ABORTED' || code === 'ABORT_ERR') return new TransferError('E_ABORTED', 'stopped', true);
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
      return new TransferError('E_STALL', 'no response headers within the stall timeout', true);
    case 'UND_ERR_BODY_TIMEOUT':
      return new TransferError('E_STALL', 'no body bytes within the stall timeout', true);
    case 'UND_ERR_CONNECT_TIMEOUT':
      return new TransferError('E_CONNECTION', `connection timed out: ${detail}`, true);
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
    case 'UND_ERR_DESTROYED':
      return new TransferError('E_CONNECTION', `connection lost: ${detail}`, true);
    case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
      // undici reports a connection closed before Content-Length bytes this way.
      return new TransferError('E_SHORT_BODY', 'the response body is shorter than its Content-Length', true);
    case 'UND_ERR_RESPONSE_EXCEEDED_MAX_SIZE':
      return new TransferError('E_LENGTH', 'the response body is longer than announced', false);
    case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH':
      return new TransferError('E_UPLOAD_SOURCE', 'the upload source changed size while it was being sent', false);
    case 'UND_ERR_INVALID_ARG':
    case 'UND_ERR_NOT_SUPPORTED':
      return new TransferError('E_REQUEST', `invalid request: ${detail}`, false);
    case 'ERR_TLS_HANDSHAKE_TIMEOUT':
      return new TransferError('E_TLS', 'TLS handshake timed out', true);
  }
  if (code.startsWith('HPE_')) return new TransferError('E_PROTOCOL', `malformed HTTP response: ${detail}`, true);
  if (DNS_ERRNOS.has(code)) return new TransferError('E_DNS', `DNS lookup failed: ${detail}`, true);
  if (CONNECTION_ERRNOS.has(code)) return new TransferError('E_CONNECTION', `connection failed: ${detail}`, true);
  if (code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_') || /\bSSL routines\b/.test(e.message)) {
    return new TransferError('E_TLS', `TLS error: ${detail}`, true);
  }
  if (DISK_FULL.has(code)) return new TransferError('E_DISK_SPACE', `disk full: ${detail}`, true, { waitFor: 'disk-space' });
  if (DEST_ERRNOS.has(code)) return new TransferError('E_DEST', `cannot write: ${detail}`, false);
  return null;
}

/**
 * Delay before attempt `attempt + 1` after `attempt` failures: base·2^(attempt-1) capped at max,
 * then "full jitter" between 50% and 100% of it, so many tasks failing together do not retry together.
 */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const exp = Math.max(1, Math.floor(attempt)) - 1;
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(exp, 52));
  return Math.round(ceiling * (0.5 + 0.5 * random()));
}
