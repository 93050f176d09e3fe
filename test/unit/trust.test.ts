// Pure rules behind "never a wrong file, never a wrong value": judging 206 and bodiless responses,
// bounds on durations and times, the secret-header rule, escaping echoed text, long timers, and
// server-chosen names that could pass for partial files.

import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS } from '../../src/shared/config.js';
import { UsageError } from '../../src/shared/errors.js';
import { iso } from '../../src/shared/model.js';
import { MAX_DURATION_MS, parseDuration, parseHeader, parseSize, parseWhen } from '../../src/shared/parse.js';
import { isCredentialHeader, redactHeader } from '../../src/shared/redact.js';
import { printable } from '../../src/shared/text.js';
import { MAX_TIMER_MS, setLongTimeout } from '../../src/shared/timers.js';
import { judgeResponse } from '../../src/transfer/download.js';
import { firstHop, nextHop } from '../../src/transfer/http.js';
import { nameFromResponse, safeBaseName } from '../../src/transfer/naming.js';

describe('judgeResponse: partial and bodiless answers', () => {
  const plan = { offset: 100, etag: null, lastModified: null };
  const cases: Array<[string, number, Record<string, string>, typeof plan | null, string, string | null, string, number?]> = [
    ['an unasked 206 of a slice is rejected', 206, { 'content-range': 'bytes 0-99/1000' }, null, 'GET', null, 'reject'],
    ['an unasked 206 from the middle is rejected', 206, { 'content-range': 'bytes 500-999/1000' }, null, 'GET', null, 'reject'],
    ['an unasked 206 without Content-Range is rejected', 206, {}, null, 'GET', null, 'reject'],
    ['an unasked 206 of unknown total is rejected', 206, { 'content-range': 'bytes 0-99/*' }, null, 'GET', null, 'reject'],
    ['an unasked 206 of the whole resource is a 200', 206, { 'content-range': 'bytes 0-999/1000' }, null, 'GET', null, 'write', 0],
    ['a 206 matching the user\'s own Range is the file', 206, { 'content-range': 'bytes 10-19/1000' }, null, 'GET', 'bytes=10-19', 'write', 0],
    ['a 206 inside the user\'s open Range is the file', 206, { 'content-range': 'bytes 10-999/1000' }, null, 'GET', 'bytes=10-', 'write', 0],
    ['a 206 not matching the user\'s Range is rejected', 206, { 'content-range': 'bytes 0-99/1000' }, null, 'GET', 'bytes=10-19', 'reject'],
    ['a 206 to a user\'s suffix range is taken as sent', 206, { 'content-range': 'bytes 900-999/1000' }, null, 'GET', 'bytes=-100', 'write', 0],
    ['a resume 206 at another offset restarts', 206, { 'content-range': 'bytes 0-99/1000' }, plan, 'GET', null, 'restart'],
    ['a resume 206 at the offset appends', 206, { 'content-range': 'bytes 100-999/1000' }, plan, 'GET', null, 'write', 100],
    ['204 has no body', 204, {}, null, 'GET', null, 'no-body'],
    ['205 has no body', 205, { 'content-length': '0' }, null, 'GET', null, 'no-body'],
    ['304 has no body', 304, {}, null, 'GET', null, 'no-body'],
    ['a 204 to a resume has no body', 204, {}, plan, 'GET', null, 'no-body'],
    ['HEAD 200 has no body', 200, { 'content-length': '5000' }, null, 'HEAD', null, 'no-body'],
    ['HEAD 404 fails', 404, {}, null, 'HEAD', null, 'fail'],
    ['a plain 200 writes', 200, { 'content-length': '5' }, null, 'GET', null, 'write', 0],
  ];
  it.each(cases)('%s', (_what, status, headers, p, method, userRange, kind, start) => {
    const v = judgeResponse(status, headers, p, method, userRange);
    expect(v.kind).toBe(kind);
    if (v.kind === 'write') expect(v.startOffset).toBe(start);
  });
  it('a rejected 206 says what came and that nothing was saved', () => {
    const v = judgeResponse(206, { 'content-range': 'bytes 0-99/1000' }, null);
    expect(v).toEqual({
      kind: 'reject',
      code: 'E_PARTIAL_CONTENT',
      message: 'the server sent only part of the file (HTTP 206, bytes 0-99/1000) but no range was asked for; nothing was saved',
    });
  });
  it('a whole-resource 206 reports the total', () => {
    expect(judgeResponse(206, { 'content-range': 'bytes 0-999/1000' }, null)).toEqual({ kind: 'write', startOffset: 0, totalBytes: 1000, bodyBytes: 1000 });
  });
});

describe('bounds on durations and times', () => {
  const now = Date.UTC(2026, 0, 1);
  it('takes up to 100 years', () => {
    expect(parseDuration('36525d')).toBe(MAX_DURATION_MS);
    expect(parseWhen('36525d', now)).toBe(now + MAX_DURATION_MS);
  });
  it.each(['36526d', '999999999d', '9'.repeat(400), '9'.repeat(400) + 'ms', '1e400'])('refuses the duration %j', (text) => {
    expect(() => parseDuration(text, 'value for stallTimeout')).toThrow(UsageError);
  });
  it.each(['999999999d', '9'.repeat(30), '9999-01-01T00:00Z'])('refuses the time %j', (text) => expect(() => parseWhen(text, now)).toThrow(UsageError));
  it('says what the bound is', () => {
    expect(() => parseDuration('999999999d', 'value for hookTimeout')).toThrow("invalid value for hookTimeout '999999999d': at most 36525d (100 years)");
    expect(() => parseWhen('999999999d', now)).toThrow(/at most 36525d/);
  });
  it('bounds every duration config key, and a hookTimeout past the timer limit is accepted', () => {
    for (const [key, spec] of Object.entries(CONFIG_KEYS)) {
      if (spec.defaultText() !== 'none' && /^\d+(ms|s|m|h|d)$/.test(spec.defaultText())) expect(() => spec.parse('999999999d', key), key).toThrow(UsageError);
    }
    expect(CONFIG_KEYS.hookTimeout.parse('30d', 'hookTimeout')).toBe(30 * 86_400_000);
  });
  it('sizes beyond exact integers are refused', () => {
    expect(() => parseSize('9'.repeat(400), '--max-size')).toThrow(UsageError);
    expect(() => parseSize('9007199254740993')).toThrow(UsageError);
  });
  it('a stored time no date can hold shows as null instead of breaking status', () => {
    expect(iso(8.64e15 + 1)).toBeNull();
    expect(iso(0)).toBe('1970-01-01T00:00:00.000Z');
  });
});

describe('long timers', () => {
  it('chain past the setTimeout limit instead of firing at once', async () => {
    let fired = false;
    const timer = setLongTimeout(() => (fired = true), MAX_TIMER_MS + 10_000);
    await new Promise((r) => setTimeout(r, 50));
    expect(fired).toBe(false);
    timer.clear();
  });
  it('fire after a short delay', async () => {
    let fired = false;
    setLongTimeout(() => (fired = true), 5);
    const deadline = Date.now() + 5000;
    while (!fired && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(fired).toBe(true);
  });
});

describe('headers named like secrets', () => {
  it.each([
    'Authorization', 'proxy-authorization', 'Cookie', 'X-Api-Key', 'X-API-TOKEN', 'Private-Token', 'X-Client-Secret',
    'X-Password', 'X-Auth-User', 'X-Amz-Security-Token', 'apikey', 'X-Goog-Api-Key',
  ])('%s is a credential', (name) => expect(isCredentialHeader(name)).toBe(true));
  it.each(['Accept', 'User-Agent', 'X-Request-Id', 'Range', 'Content-Type', 'If-None-Match', 'Referer'])('%s is not', (name) => {
    expect(isCredentialHeader(name)).toBe(false);
  });
  it('redacts their values', () => {
    expect(redactHeader('X-Api-Key', 'k')).toBe('***');
    expect(redactHeader('Accept', 'text/plain')).toBe('text/plain');
  });
  it('a refused header does not echo a secret-named header\'s value', () => {
    expect(() => parseHeader('X-Api-Token: hunter2\r\nX: 1')).toThrow(/X-Api-Token: \*\*\*/);
    try {
      parseHeader('X-Api-Token: hunter2\r\nX: 1');
    } catch (err) {
      expect((err as Error).message).not.toContain('hunter2');
    }
  });
  it('are dropped when a redirect leaves the origin, kept on the same origin', () => {
    const hop = firstHop('http://a.test/x', 'GET', [['X-Api-Key', 'k'], ['X-Auth-Token', 't'], ['X-Plain', 'p']]);
    const rules = { allowDowngrade: false, anyRedirectDropsBody: false };
    const names = (h: typeof hop) => h.headers.map(([n]) => n).filter((n) => n.startsWith('X-'));
    expect(names(nextHop(hop, 302, '/y', rules))).toEqual(['X-Api-Key', 'X-Auth-Token', 'X-Plain']);
    expect(names(nextHop(hop, 302, 'http://b.test/y', rules))).toEqual(['X-Plain']);
  });
});

describe('printable', () => {
  it.each([
    ['plain text', 'plain text'],
    ['a\x1b[31mred', 'a\\x1b[31mred'],
    ['bell\x07', 'bell\\x07'],
    ['line\nbreak\r\ttab', 'line\\nbreak\\r\\ttab'],
    ['del\x7f c1\x9b', 'del\\x7f c1\\x9b'],
    ['ünïcödé €', 'ünïcödé €'],
  ])('%j', (text, shown) => expect(printable(text)).toBe(shown));
});

describe('server-chosen names are never partial-file names', () => {
  it.each([
    ['x.bgdl-part', 'x'],
    ['x.tar.gz.BGDL-PART', 'x.tar.gz'],
    ['x.bgdl-part.bgdl-part', 'x'],
    ['x.bgdl-part. ', 'x'],
    ['.bgdl-part', 'bgdl-part'],
    ['..bgdl-part', 'bgdl-part'],
    ['x.bgdl-part.gz', 'x.bgdl-part.gz'],
  ])('%j → %j', (raw, safe) => expect(safeBaseName(raw)).toBe(safe));
  it('a URL segment ending in .bgdl-part loses the suffix', () => {
    expect(nameFromResponse(null, 'http://h/a/file.bgdl-part')).toBe('file');
    expect(nameFromResponse(null, 'http://h/a/.BGDL-part')).toBe('BGDL-part');
  });
  it('a long name shortened so that .bgdl-part would end it is reduced again', () => {
    const raw = `${'a'.repeat(190)}.bgdl-part${'b'.repeat(100)}`;
    const name = safeBaseName(raw)!;
    expect(name.toLowerCase().endsWith('.bgdl-part')).toBe(false);
    expect(Buffer.byteLength(name)).toBeLessThanOrEqual(200);
  });
});
