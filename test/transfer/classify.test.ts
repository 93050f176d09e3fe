import { describe, expect, it } from 'vitest';
import { backoffDelay, classifyError, classifyStatus, parseRetryAfter } from '../../src/transfer/classify.js';
import { judgeResponse, parseContentRange, rangeHeaders } from '../../src/transfer/download.js';
import { firstHop, nextHop, type Hop } from '../../src/transfer/http.js';
import { TransferError } from '../../src/transfer/types.js';

const NOW = Date.parse('2030-01-01T00:00:00Z');

describe('classifyStatus', () => {
  const cases: Array<[number, boolean]> = [
    [400, false], [401, false], [403, false], [404, false], [405, false], [410, false], [416, false], [451, false],
    [408, true], [429, true], [500, true], [502, true], [503, true], [504, true], [507, true], [599, true],
    // The server cannot do this at all: asking again will not help.
    [501, false], [505, false],
    [304, false],
  ];
  it.each(cases)('HTTP %d transient=%s', (status, transient) => {
    const e = classifyStatus(status, {}, NOW);
    expect(e).toBeInstanceOf(TransferError);
    expect(e.code).toBe('E_HTTP_STATUS');
    expect(e.transient).toBe(transient);
    expect(e.extra.httpStatus).toBe(status);
  });
  it('names the status and the redacted URL', () => {
    const e = classifyStatus(404, {}, NOW, 'https://u:secret@h.test/f?token=abc');
    expect(e.message).toBe('HTTP 404 Not Found from https://***:***@h.test/f?token=***');
    expect(e.message).not.toContain('secret');
  });
  const retryAfter: Array<[string | string[] | undefined, number | undefined]> = [
    ['120', 120_000],
    ['0', 0],
    ['1.5', 1500],
    [['7', '9'], 7000],
    ['Tue, 01 Jan 2030 00:00:30 GMT', 30_000],
    ['Mon, 31 Dec 2029 23:00:00 GMT', 0],
    ['999999999', 24 * 3600 * 1000],
    ['soon', undefined],
    [undefined, undefined],
  ];
  it.each(retryAfter)('Retry-After %j → %j ms', (value, ms) => {
    expect(classifyStatus(503, { 'retry-after': value }, NOW).extra.retryAfterMs).toBe(ms);
  });
  it('parseRetryAfter ignores blank values', () => {
    expect(parseRetryAfter('  ', NOW)).toBeUndefined();
  });
});

function errno(code: string, message = code): Error {
  return Object.assign(new Error(message), { code });
}

describe('classifyError', () => {
  const cases: Array<[string, unknown, string, boolean]> = [
    ['connect refused', errno('ECONNREFUSED'), 'E_CONNECTION', true],
    ['reset', errno('ECONNRESET'), 'E_CONNECTION', true],
    ['broken pipe', errno('EPIPE'), 'E_CONNECTION', true],
    ['timed out', errno('ETIMEDOUT'), 'E_CONNECTION', true],
    ['unreachable', errno('EHOSTUNREACH'), 'E_CONNECTION', true],
    ['DNS not found', errno('ENOTFOUND'), 'E_DNS', true],
    ['DNS again', errno('EAI_AGAIN'), 'E_DNS', true],
    ['undici socket', errno('UND_ERR_SOCKET', 'other side closed'), 'E_CONNECTION', true],
    ['undici connect timeout', errno('UND_ERR_CONNECT_TIMEOUT'), 'E_CONNECTION', true],
    ['undici headers timeout', errno('UND_ERR_HEADERS_TIMEOUT'), 'E_STALL', true],
    ['undici body timeout', errno('UND_ERR_BODY_TIMEOUT'), 'E_STALL', true],
    ['undici short body', errno('UND_ERR_RES_CONTENT_LENGTH_MISMATCH'), 'E_SHORT_BODY', true],
    ['undici aborted', errno('UND_ERR_ABORTED'), 'E_ABORTED', true],
    ['abort DOMException', new DOMException('This operation was aborted', 'AbortError'), 'E_ABORTED', true],
    ['malformed response', errno('HPE_INVALID_CONSTANT'), 'E_PROTOCOL', true],
    ['self-signed', errno('DEPTH_ZERO_SELF_SIGNED_CERT'), 'E_TLS_CERT', false],
    ['self-signed chain', errno('SELF_SIGNED_CERT_IN_CHAIN'), 'E_TLS_CERT', false],
    ['unknown CA', errno('UNABLE_TO_VERIFY_LEAF_SIGNATURE'), 'E_TLS_CERT', false],
    ['expired', errno('CERT_HAS_EXPIRED'), 'E_TLS_CERT', false],
    ['wrong host', errno('ERR_TLS_CERT_ALTNAME_INVALID'), 'E_TLS_CERT', false],
    ['TLS handshake timeout', errno('ERR_TLS_HANDSHAKE_TIMEOUT'), 'E_TLS', true],
    ['TLS protocol', errno('ERR_SSL_WRONG_VERSION_NUMBER'), 'E_TLS', true],
    ['wrapped in cause', new Error('fetch failed', { cause: errno('ECONNREFUSED') }), 'E_CONNECTION', true],
    ['deeply wrapped cert', new Error('a', { cause: new Error('b', { cause: errno('CERT_HAS_EXPIRED') }) }), 'E_TLS_CERT', false],
    ['aggregate', new AggregateError([errno('ECONNREFUSED'), errno('ECONNREFUSED')], 'all failed'), 'E_CONNECTION', true],
    ['disk full', errno('ENOSPC'), 'E_DISK_SPACE', true],
    ['unknown', new Error('something odd'), 'E_NETWORK', true],
    ['not an error', 'a string', 'E_NETWORK', true],
  ];
  it.each(cases)('%s → %s', (_what, err, code, transient) => {
    const e = classifyError(err);
    expect(e.code).toBe(code);
    expect(e.transient).toBe(transient);
  });
  it('tells the user what to do about an untrusted certificate', () => {
    const e = classifyError(new Error('x', { cause: errno('DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate') }));
    expect(e.message).toMatch(/self-signed/);
    expect(e.message).toContain('use --ca-file PEM to trust its CA, or --insecure to skip verification');
  });
  it('returns a TransferError unchanged, even when wrapped', () => {
    const t = new TransferError('E_UPLOAD_SOURCE', 'gone', false);
    expect(classifyError(t)).toBe(t);
    expect(classifyError(new Error('wrapper', { cause: t }))).toBe(t);
  });
  it('redacts URLs in messages', () => {
    expect(classifyError(new Error('failed for http://u:pw@h.test/x')).message).not.toContain('pw');
  });
  it('disk full asks to wait for space', () => {
    expect(classifyError(errno('ENOSPC')).extra.waitFor).toBe('disk-space');
  });
});

describe('backoffDelay', () => {
  it('doubles from the base with full jitter between 50% and 100%', () => {
    expect(backoffDelay(1, 1000, 300_000, () => 0)).toBe(500);
    expect(backoffDelay(1, 1000, 300_000, () => 1)).toBe(1000);
    expect(backoffDelay(2, 1000, 300_000, () => 1)).toBe(2000);
    expect(backoffDelay(4, 1000, 300_000, () => 0.5)).toBe(6000);
  });
  it('is capped at the maximum', () => {
    expect(backoffDelay(30, 1000, 300_000, () => 1)).toBe(300_000);
    expect(backoffDelay(10_000, 1000, 300_000, () => 0)).toBe(150_000);
  });
  it('treats attempt 0 or less as the first', () => {
    expect(backoffDelay(0, 1000, 300_000, () => 1)).toBe(1000);
  });
  it('stays within bounds for random jitter', () => {
    for (let attempt = 1; attempt <= 20; attempt++) {
      const cap = Math.min(60_000, 250 * 2 ** (attempt - 1));
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(attempt, 250, 60_000);
        expect(d).toBeGreaterThanOrEqual(Math.floor(cap / 2));
        expect(d).toBeLessThanOrEqual(cap);
      }
    }
  });
});

describe('resume planning and judging responses', () => {
  const plan = { offset: 100, etag: '"v1"', lastModified: 'Mon, 01 Jan 2029 00:00:00 GMT' };
  it('sends If-Range with a strong ETag, else Last-Modified, else none', () => {
    expect(rangeHeaders(plan)).toEqual([['Range', 'bytes=100-'], ['If-Range', '"v1"']]);
    expect(rangeHeaders({ ...plan, etag: 'W/"v1"' })).toEqual([['Range', 'bytes=100-'], ['If-Range', plan.lastModified]]);
    expect(rangeHeaders({ offset: 5, etag: null, lastModified: null })).toEqual([['Range', 'bytes=5-']]);
  });
  it('parses Content-Range', () => {
    expect(parseContentRange('bytes 100-199/200')).toEqual({ start: 100, end: 199, total: 200 });
    expect(parseContentRange('bytes 100-199/*')).toEqual({ start: 100, end: 199, total: null });
    expect(parseContentRange('bytes 100-300/200')).toBeNull();
    expect(parseContentRange('items 1-2/3')).toBeNull();
  });
  const cases: Array<[string, number, Record<string, string>, typeof plan | null, string, number?]> = [
    ['206 at the offset appends', 206, { 'content-range': 'bytes 100-199/200', 'content-length': '100', etag: '"v1"' }, plan, 'write', 100],
    ['206 at another offset restarts', 206, { 'content-range': 'bytes 0-199/200' }, plan, 'restart'],
    ['206 without Content-Range restarts', 206, {}, plan, 'restart'],
    ['206 with a new ETag restarts', 206, { 'content-range': 'bytes 100-199/200', etag: '"v2"' }, plan, 'restart'],
    ['206 with a new Last-Modified restarts', 206, { 'content-range': 'bytes 100-199/200', 'last-modified': 'Tue, 02 Jan 2029 00:00:00 GMT' }, plan, 'restart'],
    ['200 to a range starts over', 200, { 'content-length': '200' }, plan, 'write', 0],
    ['416 for exactly the end is complete', 416, { 'content-range': 'bytes */100' }, plan, 'complete'],
    ['416 for another size restarts', 416, { 'content-range': 'bytes */500' }, plan, 'restart'],
    ['416 without a range asked is a failure', 416, {}, null, 'fail'],
    ['404 fails', 404, {}, plan, 'fail'],
    ['200 fresh', 200, { 'content-length': '5' }, null, 'write', 0],
  ];
  it.each(cases)('%s', (_what, status, headers, p, kind, start) => {
    const v = judgeResponse(status, headers, p);
    expect(v.kind).toBe(kind);
    if (v.kind === 'write') expect(v.startOffset).toBe(start);
  });
  it('a 206 reports the total from Content-Range', () => {
    expect(judgeResponse(206, { 'content-range': 'bytes 100-199/200' }, plan)).toEqual({ kind: 'write', startOffset: 100, totalBytes: 200, bodyBytes: 100 });
  });
});

describe('redirect hops', () => {
  const rules = { allowDowngrade: false, anyRedirectDropsBody: false };
  const start = (): Hop => firstHop('http://user:p%40ss@a.test/start', 'GET', [['Cookie', 'c=1'], ['X-Keep', 'yes'], ['accept-encoding', 'gzip']]);
  const header = (h: Hop, name: string) => h.headers.find(([n]) => n.toLowerCase() === name)?.[1];

  it('moves URL user info into Basic auth and asks for identity encoding', () => {
    const h = start();
    expect(h.url.href).toBe('http://a.test/start');
    expect(header(h, 'authorization')).toBe(`Basic ${Buffer.from('user:p@ss').toString('base64')}`);
    expect(header(h, 'accept-encoding')).toBe('identity');
    expect(h.headers.filter(([n]) => n.toLowerCase() === 'accept-encoding')).toHaveLength(1);
    expect(header(h, 'user-agent')).toMatch(/^bgdl\/\d/);
  });
  it('keeps a user-supplied User-Agent and Authorization', () => {
    const h = firstHop('http://u:p@a.test/', 'GET', [['User-Agent', 'me/1'], ['Authorization', 'Bearer t']]);
    expect(header(h, 'user-agent')).toBe('me/1');
    expect(header(h, 'authorization')).toBe('Bearer t');
  });
  it('keeps credentials on the same origin, drops them across origins for good', () => {
    const same = nextHop(start(), 302, '/next', rules);
    expect(same.url.href).toBe('http://a.test/next');
    expect(header(same, 'authorization')).toBeDefined();
    const other = nextHop(same, 302, 'http://b.test/x', rules);
    expect(header(other, 'authorization')).toBeUndefined();
    expect(header(other, 'cookie')).toBeUndefined();
    expect(header(other, 'x-keep')).toBe('yes');
    const back = nextHop(other, 302, 'http://a.test/again', rules);
    expect(header(back, 'authorization')).toBeUndefined();
  });
  it('a different port is a different origin', () => {
    expect(header(nextHop(start(), 301, 'http://a.test:8080/x', rules), 'authorization')).toBeUndefined();
  });
  it('does not adopt credentials from a Location', () => {
    const h = nextHop(start(), 302, 'http://evil:pw@b.test/', rules);
    expect(h.url.href).toBe('http://b.test/');
    expect(header(h, 'authorization')).toBeUndefined();
  });
  it('refuses other schemes and https → http', () => {
    expect(() => nextHop(start(), 302, 'ftp://a.test/f', rules)).toThrow(expect.objectContaining({ code: 'E_REDIRECT_SCHEME', transient: false }));
    expect(() => nextHop(start(), 302, 'file:///etc/passwd', rules)).toThrow(expect.objectContaining({ code: 'E_REDIRECT_SCHEME' }));
    const secure = firstHop('https://a.test/', 'GET', []);
    expect(() => nextHop(secure, 302, 'http://a.test/', rules)).toThrow(expect.objectContaining({ code: 'E_REDIRECT_DOWNGRADE', transient: false }));
    expect(nextHop(secure, 302, 'http://a.test/', { ...rules, allowDowngrade: true }).url.protocol).toBe('http:');
  });
  const methods: Array<[string, number, boolean, string]> = [
    ['POST', 301, false, 'GET'], ['POST', 302, false, 'GET'], ['POST', 303, false, 'GET'], ['POST', 307, false, 'POST'], ['POST', 308, false, 'POST'],
    ['PUT', 302, false, 'PUT'], ['PUT', 303, false, 'GET'], ['HEAD', 303, false, 'HEAD'], ['DELETE', 301, false, 'DELETE'],
    ['PUT', 301, true, 'GET'], ['PUT', 302, true, 'GET'], ['PUT', 307, true, 'PUT'],
  ];
  it.each(methods)('%s after %d (uploads: %s) → %s', (method, status, anyRedirectDropsBody, expected) => {
    const h = firstHop('http://a.test/', method, [['Content-Type', 'text/plain']]);
    const next = nextHop(h, status, '/n', { allowDowngrade: false, anyRedirectDropsBody });
    expect(next.method).toBe(expected);
    expect(next.withBody).toBe(expected === method);
    if (expected !== method) expect(header(next, 'content-type')).toBeUndefined();
  });
});
