import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cookieHeader, cookiesFor, parseCookieFile, parseSetCookie, storeSetCookies, type Cookie } from '../../src/shared/cookies.js';
import { netrcLookup, netrcPath, parseNetrc, readNetrc } from '../../src/shared/netrc.js';
import { hopHeaders, firstHop, nextHop } from '../../src/transfer/http.js';

describe('netrc parser', () => {
  it.each<[string, string, Array<{ machine: string | null; login: string | null; password: string | null }>]>([
    ['one line', 'machine example.com login alice password s3cret', [{ machine: 'example.com', login: 'alice', password: 's3cret' }]],
    ['across lines and tabs', 'machine a.org\n\tlogin bob\n\tpassword pw\n', [{ machine: 'a.org', login: 'bob', password: 'pw' }]],
    ['several, and default', 'machine a login x password 1\nmachine b login y password 2\ndefault login anon password guest',
      [{ machine: 'a', login: 'x', password: '1' }, { machine: 'b', login: 'y', password: '2' }, { machine: null, login: 'anon', password: 'guest' }]],
    ['quoted values with escapes', 'machine h login "a b" password "p\\"w\\\\x y"', [{ machine: 'h', login: 'a b', password: 'p"w\\x y' }]],
    ['comments', '# my hosts\nmachine h login u password p # trailing words are skipped\n', [{ machine: 'h', login: 'u', password: 'p' }]],
    ['a password starting with #', 'machine h login u password #hash', [{ machine: 'h', login: 'u', password: '#hash' }]],
    ['account is skipped', 'machine h login u account acct password p', [{ machine: 'h', login: 'u', password: 'p' }]],
    ['macdef body is skipped', 'macdef init\ncd /pub\nmachine fake login no password no\n\nmachine h login u password p',
      [{ machine: 'h', login: 'u', password: 'p' }]],
    ['machine names are case-insensitive', 'machine Example.COM login u password p', [{ machine: 'example.com', login: 'u', password: 'p' }]],
    ['login without password', 'machine h login u', [{ machine: 'h', login: 'u', password: null }]],
    ['empty', '', []],
  ])('%s', (_name, text, want) => expect(parseNetrc(text)).toEqual(want));

  const entries = parseNetrc('machine a.org login a password 1\nmachine b.org login b password 2\ndefault login d password 3\nmachine late login l password 4');
  it.each<[string, string | null]>([
    ['a.org', 'a'],
    ['A.ORG', 'a'],
    ['b.org', 'b'],
    ['sub.a.org', 'd'],
    ['other', 'd'],
  ])('lookup %s → login %s', (host, login) => expect(netrcLookup(entries, host)?.login ?? null).toBe(login));
  it('no default: no entry', () => expect(netrcLookup(parseNetrc('machine a login u password p'), 'b')).toBeNull());

  it('finds the file: --netrc-file, else NETRC, else ~/.netrc', () => {
    expect(netrcPath({ HOME: '/h', NETRC: '/e/n' }, 'f', '/cwd')).toEqual({ file: '/cwd/f', explicit: true });
    expect(netrcPath({ HOME: '/h', NETRC: '/e/n' }, undefined, '/cwd')).toEqual({ file: '/e/n', explicit: false });
    expect(netrcPath({ HOME: '/h' }, undefined, '/cwd')).toEqual({ file: '/h/.netrc', explicit: false });
  });

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-netrc-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  it('reads a private file, gives nothing for a missing one, refuses one others can read', () => {
    const f = path.join(dir, 'netrc');
    fs.writeFileSync(f, 'machine h login u password p', { mode: 0o600 });
    expect(readNetrc(f)).toHaveLength(1);
    expect(readNetrc(path.join(dir, 'missing'))).toEqual([]);
    fs.chmodSync(f, 0o644);
    expect(() => readNetrc(f)).toThrow(`netrc file ${f} not used: readable or writable by others (mode 0644): run chmod 600 on it`);
  });
});

const NOW = Date.UTC(2026, 0, 1);
const FUTURE = Math.floor(NOW / 1000) + 3600;
const PAST = Math.floor(NOW / 1000) - 3600;

describe('Netscape cookie files', () => {
  it('parses what curl -c, wget --save-cookies and browser exporters write', () => {
    const text = [
      '# Netscape HTTP Cookie File',
      '# https://curl.se/docs/http-cookies.html',
      '',
      `.example.com\tTRUE\t/\tFALSE\t${FUTURE}\tsid\tabc123`,
      `#HttpOnly_www.example.com\tFALSE\t/app\tTRUE\t0\ttoken\tt=1==`,
      `example.org\tFALSE\t/\tFALSE\t${FUTURE}\tempty\t`,
      'garbage line',
      `bad.org\tMAYBE\t/\tFALSE\t0\tn\tv`,
      `inject.org\tFALSE\t/\tFALSE\t0\tn\tv; other=1`,
    ].join('\r\n');
    const { cookies, badLines } = parseCookieFile(text);
    expect(cookies).toEqual([
      { domain: 'example.com', includeSubdomains: true, path: '/', secure: false, expires: FUTURE, name: 'sid', value: 'abc123', httpOnly: false },
      { domain: 'www.example.com', includeSubdomains: false, path: '/app', secure: true, expires: 0, name: 'token', value: 't=1==', httpOnly: true },
      { domain: 'example.org', includeSubdomains: false, path: '/', secure: false, expires: FUTURE, name: 'empty', value: '', httpOnly: false },
    ]);
    expect(badLines).toEqual([7, 8, 9]);
  });

  const c = (over: Partial<Cookie>): Cookie => ({ domain: 'example.com', includeSubdomains: false, path: '/', secure: false, expires: 0, name: 'n', value: 'v', httpOnly: false, ...over });
  it.each<[string, Partial<Cookie>, string, boolean]>([
    ['exact host', {}, 'http://example.com/x', true],
    ['other host', {}, 'http://example.org/x', false],
    ['subdomain without the flag', {}, 'http://www.example.com/x', false],
    ['subdomain with the flag', { includeSubdomains: true }, 'http://www.example.com/x', true],
    ['suffix that is not a subdomain', { includeSubdomains: true }, 'http://badexample.com/x', false],
    ['host case', {}, 'http://EXAMPLE.com/', true],
    ['path prefix at a slash', { path: '/app' }, 'http://example.com/app/file', true],
    ['path itself', { path: '/app' }, 'http://example.com/app', true],
    ['path prefix not at a slash', { path: '/app' }, 'http://example.com/apple', false],
    ['path ending in a slash', { path: '/app/' }, 'http://example.com/app/f', true],
    ['secure over https', { secure: true }, 'https://example.com/', true],
    ['secure over http', { secure: true }, 'http://example.com/', false],
    ['expired', { expires: PAST }, 'http://example.com/', false],
    ['not yet expired', { expires: FUTURE }, 'http://example.com/', true],
    ['session cookie', { expires: 0 }, 'http://example.com/', true],
    ['IP host exact only', { domain: '127.0.0.1', includeSubdomains: true }, 'http://127.0.0.1:8080/', true],
  ])('%s', (_name, over, url, want) => expect(cookiesFor([c(over)], new URL(url), NOW).length === 1).toBe(want));

  it('orders longer paths first and builds one Cookie header', () => {
    const list = [c({ name: 'a', path: '/' }), c({ name: 'b', path: '/x/y' }), c({ name: 'c', path: '/x' })];
    expect(cookieHeader(cookiesFor(list, new URL('http://example.com/x/y/z'), NOW))).toBe('b=v; c=v; a=v');
    expect(cookieHeader([])).toBeNull();
  });
});

describe('Set-Cookie (kept for the rest of an attempt that has a cookie file)', () => {
  const at = (url: string, header: string) => parseSetCookie(header, new URL(url), NOW);
  it('stores a host-only cookie with the default path, and a domain cookie for the subdomains too', () => {
    expect(at('http://www.example.com/dl/get?id=1', 'sid=abc; HttpOnly')).toEqual({
      domain: 'www.example.com', includeSubdomains: false, path: '/dl', secure: false, expires: 0, name: 'sid', value: 'abc', httpOnly: true,
    });
    expect(at('https://www.example.com/', 'a=1; Domain=.Example.com; Path=/files; Secure; Max-Age=60')).toEqual({
      domain: 'example.com', includeSubdomains: true, path: '/files', secure: true, expires: Math.floor(NOW / 1000) + 60, name: 'a', value: '1', httpOnly: false,
    });
    expect(at('http://example.com/a/b', `e=1; Expires=${new Date(FUTURE * 1000).toUTCString()}`)?.expires).toBe(FUTURE);
  });

  it.each([
    ['no name=value', 'justtext'],
    ['an empty name', '=v'],
    ['a domain that does not cover the host', 'a=1; Domain=other.com'],
    ['a top-level domain', 'a=1; Domain=com'],
    ['Secure over plain http', 'a=1; Secure'],
    ['a control character', 'a=1\u0001'],
  ])('refuses %s', (_what, header) => expect(at('http://www.example.com/', header)).toBeNull());

  it('replaces a namesake, and an expired one deletes it', () => {
    const url = new URL('http://example.com/');
    const jar = parseCookieFile(`example.com\tFALSE\t/\tFALSE\t0\tsid\told\nexample.com\tFALSE\t/\tFALSE\t0\tkeep\t1\n`).cookies;
    storeSetCookies(jar, ['sid=new; Path=/'], url, NOW);
    expect(cookieHeader(cookiesFor(jar, url, NOW))).toBe('keep=1; sid=new');
    storeSetCookies(jar, 'sid=gone; Path=/; Max-Age=0', url, NOW);
    expect(cookieHeader(cookiesFor(jar, url, NOW))).toBe('keep=1');
    storeSetCookies(jar, undefined, url, NOW);
    expect(jar).toHaveLength(1);
  });
});

describe('credentials per hop', () => {
  const netrc = parseNetrc('machine a.test login alice password apw\nmachine b.test login bob password bpw');
  const cookies = parseCookieFile(`a.test\tFALSE\t/\tFALSE\t0\tsid\t1\nb.test\tFALSE\t/\tFALSE\t0\tsid\t2\n`).cookies;
  const creds = { netrc, cookies };
  const auth = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;
  const get = (h: Array<[string, string]>, n: string) => h.filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
  const rules = { allowDowngrade: false, anyRedirectDropsBody: false };

  it("sends the host's netrc entry and cookies, and another host's after a redirect there", () => {
    const first = firstHop('http://a.test/f', 'GET', []);
    const h1 = hopHeaders(first, creds, NOW);
    expect(get(h1, 'authorization')).toEqual([auth('alice', 'apw')]);
    expect(get(h1, 'cookie')).toEqual(['sid=1']);
    const second = nextHop(first, 302, 'http://b.test/g', rules);
    const h2 = hopHeaders(second, creds, NOW);
    expect(get(h2, 'authorization')).toEqual([auth('bob', 'bpw')]);
    expect(get(h2, 'cookie')).toEqual(['sid=2']);
    const third = nextHop(second, 302, 'http://c.test/h', rules);
    expect(get(hopHeaders(third, creds, NOW), 'authorization')).toEqual([]);
    expect(get(hopHeaders(third, creds, NOW), 'cookie')).toEqual([]);
  });

  it('a URL naming the user without a password takes that login\'s netrc password, on its own origin only', () => {
    const withUser = firstHop('http://alice@a.test/f', 'GET', []);
    expect(get(hopHeaders(withUser, creds, NOW), 'authorization')).toEqual([auth('alice', 'apw')]);
    expect(get(hopHeaders(nextHop(withUser, 302, '/g', rules), creds, NOW), 'authorization')).toEqual([auth('alice', 'apw')]);
    // Another login than the entry's: no password from netrc (as curl).
    expect(get(hopHeaders(firstHop('http://mallory@a.test/f', 'GET', []), creds, NOW), 'authorization')).toEqual([auth('mallory', '')]);
    expect(get(hopHeaders(firstHop('http://alice@a.test/f', 'GET', []), { netrc: null, cookies: null }, NOW), 'authorization')).toEqual([auth('alice', '')]);
    // Leaving the origin drops the named user; the new host gets its own entry.
    expect(get(hopHeaders(nextHop(withUser, 302, 'http://b.test/g', rules), creds, NOW), 'authorization')).toEqual([auth('bob', 'bpw')]);
  });

  it('URL credentials and an Authorization header win over netrc; a Cookie header keeps its place first', () => {
    expect(get(hopHeaders(firstHop('http://u:p@a.test/f', 'GET', []), creds, NOW), 'authorization')).toEqual([auth('u', 'p')]);
    const own = firstHop('http://a.test/f', 'GET', [['Authorization', 'Bearer t'], ['Cookie', 'mine=1']]);
    const h = hopHeaders(own, creds, NOW);
    expect(get(h, 'authorization')).toEqual(['Bearer t']);
    expect(get(h, 'cookie')).toEqual(['mine=1; sid=1']);
  });
});
