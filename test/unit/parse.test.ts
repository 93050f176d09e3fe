import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/shared/errors.js';
import { formatDuration, parseDuration, parseFreeSpace, parseHeader, parseHttpUrl, parsePriority, parseSessionName, parseSha256, parseSize, parseWhen, parseWindow, reserveBytes } from '../../src/shared/parse.js';

describe('parseSize', () => {
  it.each([
    ['0', 0], ['1234', 1234], ['500K', 500_000], ['2MB', 2_000_000], ['1G', 1e9], ['1GiB', 1024 ** 3],
    ['1.5MiB', 1.5 * 1024 ** 2], ['10 kib', 10240], ['7b', 7],
  ])('%s is %d bytes', (text, bytes) => expect(parseSize(text)).toBe(bytes));
  it.each(['', 'abc', '-1', '5X', '1..2M', 'K'])('rejects %j', (text) => expect(() => parseSize(text)).toThrow(UsageError));
});

describe('parseDuration', () => {
  it.each([
    ['250ms', 250], ['90s', 90_000], ['15m', 900_000], ['1h', 3_600_000], ['2d', 172_800_000], ['1h30m', 5_400_000], ['5', 5000], ['1.5s', 1500],
  ])('%s is %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));
  it.each(['', 'soon', '5x', '1h 30', 'h1', '-5s'])('rejects %j', (text) => expect(() => parseDuration(text)).toThrow(UsageError));
  it('formats back', () => {
    expect(formatDuration(90_000)).toBe('1m30s');
    expect(formatDuration(500)).toBe('500ms');
    expect(formatDuration(86_400_000 + 3_600_000)).toBe('1d1h');
  });
});

describe('parseWhen', () => {
  const now = Date.UTC(2026, 0, 1, 12, 0, 0);
  it('takes a delay from now', () => {
    expect(parseWhen('90s', now)).toBe(now + 90_000);
    expect(parseWhen('2d', now)).toBe(now + 2 * 86_400_000);
  });
  it('takes ISO 8601 with a zone', () => {
    expect(parseWhen('2026-05-01T02:00:00Z', now)).toBe(Date.UTC(2026, 4, 1, 2, 0, 0));
    expect(parseWhen('2026-05-01T02:00+02:00', now)).toBe(Date.UTC(2026, 4, 1, 0, 0, 0));
    expect(parseWhen('2026-05-01T02:00:30.5-0130', now)).toBe(Date.UTC(2026, 4, 1, 3, 30, 30, 500));
  });
  it('takes ISO 8601 without a zone as local time', () => {
    expect(parseWhen('2026-05-01T02:00', now)).toBe(new Date(2026, 4, 1, 2, 0).getTime());
    expect(parseWhen('2026-05-01', now)).toBe(new Date(2026, 4, 1).getTime());
  });
  it.each(['tomorrow', '2026-13-01T00:00Z', '2026-02-30', '2026-01-01T25:00', '12:00'])('rejects %j', (text) => expect(() => parseWhen(text, now)).toThrow(UsageError));
});

describe('parseHeader', () => {
  it('splits name and value', () => {
    expect(parseHeader('X-Token: abc: def')).toEqual(['X-Token', 'abc: def']);
    expect(parseHeader('Accept:text/plain')).toEqual(['Accept', 'text/plain']);
    expect(parseHeader('X-Name: caf\u00e9\tau lait')).toEqual(['X-Name', 'caf\u00e9\tau lait']);
  });
  it.each(['NoColon', ': value', 'Bad Name: x', 'X-A: b\r\nInjected: 1', 'X-A: b\nc', 'X\0: y', 'X-A: a\x01b', 'X-A: a\x7f', 'X-A: \u2713'])('rejects %j', (h) => expect(() => parseHeader(h)).toThrow(UsageError));
  it('never shows a refused credential header\'s value', () => {
    expect(() => parseHeader('Authorization: Bearer s3cret\r\nX: y')).toThrow(/^invalid header 'Authorization: \*\*\*'/);
    expect(() => parseHeader('Cookie: a=s3cret\u2713')).toThrow(/^invalid header 'Cookie: \*\*\*'/);
  });
});

describe('parseHttpUrl', () => {
  it('accepts http and https', () => {
    expect(parseHttpUrl('https://example.com/a b')).toBe('https://example.com/a%20b');
    expect(parseHttpUrl('http://127.0.0.1:8080/x?y=1')).toBe('http://127.0.0.1:8080/x?y=1');
  });
  it.each(['ftp://example.com/x', 'file:///etc/passwd', 'example.com/x', 'http://', 'javascript:alert(1)', ''])('rejects %j', (u) => expect(() => parseHttpUrl(u)).toThrow(UsageError));
  it('never shows the user info or secret parameters of a refused URL', () => {
    expect(() => parseHttpUrl('ftp://me:s3cret@example.com/x?token=s3cret')).toThrow(/'ftp:\/\/\*\*\*:\*\*\*@example.com\/x\?token=\*\*\*'/);
    expect(() => parseHttpUrl('http://me:s3cret@')).toThrow(/'http:\/\/\*\*\*@'/);
  });
});

describe('small parsers', () => {
  it('priorities', () => {
    expect(parsePriority('HIGH')).toBe('high');
    expect(() => parsePriority('urgent')).toThrow(UsageError);
  });
  it('sha256', () => {
    expect(parseSha256('A'.repeat(64))).toBe('a'.repeat(64));
    expect(() => parseSha256('abc')).toThrow(UsageError);
  });
  it('session names', () => {
    expect(parseSessionName('nightly-2.x_y')).toBe('nightly-2.x_y');
    for (const bad of ['', '.hidden', '-x', 'a/b', 'a b', 'x'.repeat(65)]) expect(() => parseSessionName(bad)).toThrow(UsageError);
  });
  it('windows', () => {
    expect(parseWindow('01:00-06:00')).toEqual({ start: 60, end: 360 });
    expect(parseWindow('22:30-02:00')).toEqual({ start: 1350, end: 120 });
    expect(() => parseWindow('25:00-01:00')).toThrow(UsageError);
    expect(() => parseWindow('night')).toThrow(UsageError);
  });
});

describe('parseFreeSpace and reserveBytes', () => {
  it.each([
    ['256MiB', { bytes: 256 * 1024 ** 2, percent: null }],
    ['5%', { bytes: null, percent: 5 }],
    ['0.5%', { bytes: null, percent: 0.5 }],
    ['1%,256MiB', { bytes: 256 * 1024 ** 2, percent: 1 }],
    ['256MiB, 1%', { bytes: 256 * 1024 ** 2, percent: 1 }],
    ['0', { bytes: 0, percent: null }],
  ])('%s', (text, rule) => expect(parseFreeSpace(text)).toEqual(rule));
  it.each(['', 'lots', '150%', '5%,', '1%,2%', '1G,2G', '1%,2G,3G', '-1%'])('rejects %j', (text) => expect(() => parseFreeSpace(text)).toThrow(UsageError));
  it.each([
    // The default: 1% of the filesystem or 256 MiB, the smaller.
    [{ bytes: 256 * 1024 ** 2, percent: 1 }, 10 * 1024 ** 3, Math.ceil((10 * 1024 ** 3) / 100)],
    [{ bytes: 256 * 1024 ** 2, percent: 1 }, 100 * 1024 ** 3, 256 * 1024 ** 2],
    [{ bytes: null, percent: 100 }, 1000, 1000],
    [{ bytes: 0, percent: null }, 1000, 0],
    [{ bytes: 5000, percent: null }, 1000, 5000],
  ])('%j of %d keeps %d', (rule, total, bytes) => expect(reserveBytes(rule, total)).toBe(bytes));
});
