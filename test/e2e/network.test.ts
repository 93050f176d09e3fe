// Networks and credentials from the real CLI: the proxy of the `add` command (environment or flags) is
// the task's, whatever the worker's own environment; credentials from .netrc and a cookie file reach the
// server and never the status, log or events. One test runs against a real squid or tinyproxy.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { statusJson, testdir, waitFinal, waitUntil, type TestDir, addJson as addJsonIn } from '../helpers/cli.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { startHttpsServer, startServer, type TestServer } from '../helpers/server.js';

let t: TestDir;
let s: TestServer;
let proxy: TestProxy;
beforeEach(async () => {
  t = await testdir();
  s = await startServer();
  s.route('/f', { body: 'hello' });
  proxy = await startProxy();
});
afterEach(async () => {
  await t.cleanup();
  await proxy.close();
  await s.close();
});

const addJson = (args: string[], env?: NodeJS.ProcessEnv) => addJsonIn(t, args, env);

/** Everything bgdl shows about these tasks: status (table, detail, JSON), the log and the events. */
async function everythingShown(ids: number[]): Promise<string> {
  const outs = await Promise.all([
    t.bgdl(['status']),
    t.bgdl(['status', '--json']),
    ...ids.map((id) => t.bgdl(['status', String(id)])),
    t.bgdl(['log']),
    t.bgdl(['events', '--json']),
  ]);
  return outs.map((r) => r.stdout + r.stderr).join('\n');
}

describe('the proxy is the one the user had when adding', () => {
  it("HTTP_PROXY (host:port, no scheme) at add is used by a worker started without it; the worker's environment is never read", async () => {
    const keep = await addJson(['--begin-at', '1h', s.url('/later')]);
    const pid = await waitUntil(() => t.workerPid(), 10_000, 'a worker');
    const [task] = await addJson(['-o', 'f.txt', s.url('/f')], { HTTP_PROXY: proxy.hostPort });
    const [done] = await waitFinal(t, [task.id]);
    expect(done).toMatchObject({ state: 'completed' });
    expect(fs.readFileSync(path.join(t.downloads, 'f.txt'), 'utf8')).toBe('hello');
    expect(proxy.requests.map((q) => [q.method, q.target])).toEqual([['GET', s.url('/f')]]);
    expect(t.workerPid()).toBe(pid);
    expect(fs.readFileSync(`/proc/${pid}/environ`, 'utf8')).not.toMatch(/proxy/i);
    expect(keep[0].state).toBe('queued');
  });

  it("--proxy wins over the environment; --noproxy '*' and --proxy '' go direct; lowercase http_proxy wins; upload records its proxy too", async () => {
    const dead = 'http://127.0.0.1:9';
    const [viaFlag] = await addJson(['-o', 'a', '--proxy', proxy.url, s.url('/f?a')], { HTTP_PROXY: dead, http_proxy: dead });
    const [noproxy] = await addJson(['-o', 'b', '--noproxy', '*', s.url('/f?b')], { HTTP_PROXY: proxy.url });
    const [empty] = await addJson(['-o', 'c', '--proxy', '', s.url('/f?c')], { HTTP_PROXY: proxy.url });
    const [lower] = await addJson(['-o', 'd', s.url('/f?d')], { http_proxy: proxy.url, HTTP_PROXY: dead });
    s.route('/up', { upload: true });
    fs.writeFileSync(path.join(t.downloads, 'up.bin'), 'payload');
    const up = await t.bgdl(['upload', '--json', 'up.bin', s.url('/up')], { env: { HTTP_PROXY: proxy.hostPort } });
    expect(up.code, up.stderr).toBe(0);
    const final = await waitFinal(t, [viaFlag.id, noproxy.id, empty.id, lower.id, JSON.parse(up.stdout)[0].id]);
    expect(final.map((x) => x.state)).toEqual(['completed', 'completed', 'completed', 'completed', 'completed']);
    expect(proxy.requests.filter((q) => q.method === 'PUT').map((q) => q.target)).toEqual([s.url('/up')]);
    expect(proxy.requests.filter((q) => q.method === 'GET').map((q) => q.target).sort()).toEqual([s.url('/f?a'), s.url('/f?d')]);
    expect(s.requestsTo('/f').map((q) => q.url).sort()).toEqual(['/f?a', '/f?b', '/f?c', '/f?d']);
  });

  it("proxy credentials reach the proxy and are redacted everywhere; a proxy's 407 fails the task with E_PROXY at once", async () => {
    proxy.requireAuth = 'pxuser:pxS3cret';
    const [ok] = await addJson(['-o', 'ok', '--proxy', `pxuser:pxS3cret@${proxy.hostPort}`, s.url('/f')]);
    const [bad] = await addJson(['-o', 'bad', s.url('/f?bad')], { http_proxy: `http://pxuser:wr0ngPw@${proxy.hostPort}` });
    const [a, b] = await waitFinal(t, [ok.id, bad.id]);
    expect(a.state).toBe('completed');
    expect(b).toMatchObject({ state: 'failed', attempts: 1, httpStatus: 407, error: { code: 'E_PROXY' } });
    expect(b.error.message).toContain('HTTP 407');
    expect(proxy.requests[0]!.headers['proxy-authorization']).toBe(`Basic ${Buffer.from('pxuser:pxS3cret').toString('base64')}`);
    const shown = await everythingShown([ok.id, bad.id]);
    expect(shown).toContain(`proxy:           http://***:***@${proxy.hostPort}/`);
    expect(shown).not.toMatch(/pxS3cret|wr0ngPw/);
  });

  it('a bad proxy in the environment or --proxy is refused at add (exit 2), nothing is added', async () => {
    const r1 = await t.bgdl(['add', s.url('/f')], { env: { HTTPS_PROXY: 'socks5://u:hidden@127.0.0.1:1080' } });
    expect(r1.code).toBe(2);
    expect(r1.stderr).toBe('bgdl: invalid proxy in HTTPS_PROXY: socks5 proxies are not supported: use an http:// or https:// proxy; nothing was added\n');
    const r2 = await t.bgdl(['add', '--proxy', 'http://[nope', s.url('/f')]);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/^bgdl: invalid proxy in --proxy: /);
    expect(await statusJson(t)).toEqual([]);
  });
});

describe('credentials from .netrc and cookie files', () => {
  it('~/.netrc credentials reach the server (only that host) and never the status, log or events', async () => {
    const host = new URL(s.origin).hostname;
    fs.writeFileSync(path.join(t.dir, '.netrc'), `machine ${host}\n  login nuser\n  password "n3tPass word"\nmachine elsewhere login x password y\n`, { mode: 0o600 });
    s.route('/hop', { redirect: { to: s.url('/f').replace('127.0.0.1', 'localhost') } });
    const [task] = await addJson(['-o', 'n', s.url('/hop')]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(s.requestsTo('/hop')[0]!.headers.authorization).toBe(`Basic ${Buffer.from('nuser:n3tPass word').toString('base64')}`);
    // The redirect went to another host (localhost): no entry for it, so no credentials.
    expect(s.requestsTo('/f')[0]!.headers.authorization).toBeUndefined();
    const shown = await everythingShown([task.id]);
    expect(shown).not.toMatch(/n3tPass|nuser/);
    const db = fs.readFileSync(path.join(t.home, 'bgdl.db')).toString('latin1') + (fs.existsSync(path.join(t.home, 'bgdl.db-wal')) ? fs.readFileSync(path.join(t.home, 'bgdl.db-wal')).toString('latin1') : '');
    expect(db).not.toContain('n3tPass');
  });

  it('a netrc others can read is not used (a warning at add); a missing --netrc-file is refused', async () => {
    const file = path.join(t.dir, '.netrc');
    fs.writeFileSync(file, `machine 127.0.0.1 login u password leaked\n`, { mode: 0o644 });
    fs.chmodSync(file, 0o644);
    const r = await t.bgdl(['add', '--json', '-o', 'w', s.url('/f')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(`bgdl: warning: netrc file ${file} not used: readable or writable by others (mode 0644): run chmod 600 on it\n`);
    await waitFinal(t, [JSON.parse(r.stdout)[0].id]);
    expect(s.requestsTo('/f')[0]!.headers.authorization).toBeUndefined();
    const missing = await t.bgdl(['add', '--netrc-file', 'nope.netrc', s.url('/f')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe('bgdl: cannot use --netrc-file nope.netrc: no such file\n');
    const open = await t.bgdl(['add', '--netrc-file', file, s.url('/f')]);
    expect(open.code).toBe(2);
    expect(open.stderr).toMatch(/^bgdl: cannot use --netrc-file .*: readable or writable by others/);
  });

  it('--cookies sends the matching cookies of a Netscape cookie file, and they are never shown', async () => {
    const jar = path.join(t.dir, 'cookies.txt');
    const future = Math.floor(Date.now() / 1000) + 86_400;
    fs.writeFileSync(
      jar,
      [
        '# Netscape HTTP Cookie File',
        `127.0.0.1\tFALSE\t/\tFALSE\t${future}\tsid\tck5ecret`,
        `#HttpOnly_127.0.0.1\tFALSE\t/f\tFALSE\t0\tpref\tdark`,
        `127.0.0.1\tFALSE\t/other\tFALSE\t0\tnot\tsent`,
        `127.0.0.1\tFALSE\t/\tTRUE\t0\tsecure\tnot-over-http`,
        `127.0.0.1\tFALSE\t/\tFALSE\t1\told\texpired`,
        `example.com\tTRUE\t/\tFALSE\t0\tother\thost`,
      ].join('\n') + '\n',
    );
    const [task] = await addJson(['-o', 'c', '--cookies', jar, s.url('/f')]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(s.requestsTo('/f')[0]!.headers.cookie).toBe('pref=dark; sid=ck5ecret');
    expect(await everythingShown([task.id])).not.toMatch(/ck5ecret|dark/);
    const bad = await t.bgdl(['add', '--cookies', path.join(t.dir, '.netrc-none'), s.url('/f')]);
    expect(bad.code).toBe(2);
    fs.writeFileSync(path.join(t.dir, 'notcookies'), 'just some text\n');
    const notJar = await t.bgdl(['add', '--cookies', path.join(t.dir, 'notcookies'), s.url('/f')]);
    expect(notJar.code).toBe(2);
    expect(notJar.stderr).toMatch(/line 1: not a Netscape cookie line/);
  });

  it('with --cookies, a cookie the server sets on a redirect goes with the next hop (as curl -b); without, nothing is kept', async () => {
    const jar = path.join(t.dir, 'cookies.txt');
    fs.writeFileSync(jar, `127.0.0.1\tFALSE\t/\tFALSE\t0\tpref\tdark\n`);
    s.route('/login', { redirect: { to: '/dl/file.bin' }, headers: { 'Set-Cookie': 'session=ck5s3t; Path=/dl; HttpOnly' } });
    s.route('/dl/file.bin', { body: 'members only' });
    const [withJar] = await addJson(['-o', 'with.bin', '--cookies', jar, s.url('/login')]);
    expect((await waitFinal(t, [withJar.id]))[0].state).toBe('completed');
    expect(s.requestsTo('/dl/file.bin').at(-1)!.headers.cookie).toBe('session=ck5s3t; pref=dark');
    expect(fs.readFileSync(jar, 'utf8')).not.toMatch(/ck5s3t/); // the file is never written
    const [without] = await addJson(['-o', 'without.bin', s.url('/login')]);
    expect((await waitFinal(t, [without.id]))[0].state).toBe('completed');
    expect(s.requestsTo('/dl/file.bin').at(-1)!.headers.cookie).toBeUndefined();
    expect(await everythingShown([withJar.id, without.id])).not.toMatch(/ck5s3t/);
  });
});

/** A free port on 127.0.0.1 (closed again: the proxy binds it next). */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool} || test -x /usr/sbin/${tool}`]).status === 0;
const bin = (tool: string): string => (fs.existsSync(`/usr/sbin/${tool}`) ? `/usr/sbin/${tool}` : tool);

/** The real proxy's configuration: loopback only, plain HTTP allowed, CONNECT only to port 443 (as shipped). */
function realProxyConfig(tool: 'squid' | 'tinyproxy', dir: string, port: number): string[] {
  if (tool === 'squid') {
    fs.writeFileSync(
      path.join(dir, 'squid.conf'),
      [
        `http_port 127.0.0.1:${port}`,
        `pid_filename ${dir}/squid.pid`,
        `access_log stdio:${dir}/access.log`,
        `cache_log ${dir}/cache.log`,
        'cache_store_log none',
        'cache deny all',
        'cache_mem 8 MB',
        `coredump_dir ${dir}`,
        'netdb_filename none',
        'pinger_enable off',
        'visible_hostname bgdl-test',
        'shutdown_lifetime 0 seconds',
        'acl SSL_ports port 443',
        'acl CONNECT method CONNECT',
        'http_access deny CONNECT !SSL_ports',
        'http_access allow localhost',
        'http_access deny all',
      ].join('\n') + '\n',
    );
    return [bin('squid'), '-N', '-f', path.join(dir, 'squid.conf')];
  }
  fs.writeFileSync(
    path.join(dir, 'tinyproxy.conf'),
    [`Port ${port}`, 'Listen 127.0.0.1', 'Timeout 30', 'Allow 127.0.0.1', 'MaxClients 20', 'ConnectPort 443', 'LogLevel Info', `PidFile "${dir}/tinyproxy.pid"`].join('\n') + '\n',
  );
  return [bin('tinyproxy'), '-d', '-c', path.join(dir, 'tinyproxy.conf')];
}

describe.each(['squid', 'tinyproxy'] as const)('against a real %s', (tool) => {
  it('downloads http:// through it (absolute form) and fails a refused CONNECT with E_PROXY 403 at once', async (ctx) => {
    if (!has(tool)) {
      console.warn(`NOTICE: ${tool} is not installed: skipping the end-to-end test against a real ${tool}`);
      ctx.skip();
    }
    // Its own directory outside the test's private one: as root, squid drops to an unprivileged user
    // that must still reach and write its logs here.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `bgdl-${tool}-`));
    if (process.getuid?.() === 0) fs.chmodSync(dir, 0o777);
    const port = await freePort();
    const [cmd, ...args] = realProxyConfig(tool, dir, port);
    const child: ChildProcess = spawn(cmd!, args, { stdio: ['ignore', 'ignore', fs.openSync(path.join(dir, 'stderr.txt'), 'w')], cwd: dir });
    const diagnostics = () => ['stderr.txt', 'cache.log'].map((f) => (fs.existsSync(path.join(dir, f)) ? fs.readFileSync(path.join(dir, f), 'utf8').slice(-2000) : '')).join('\n');
    try {
      await waitUntil(
        () => new Promise<boolean>((r) => net.connect(port, '127.0.0.1').on('connect', function (this: net.Socket) { this.destroy(); r(true); }).on('error', () => r(false))),
        15_000,
        `${tool} to listen`,
      ).catch((err) => {
        throw new Error(`${(err as Error).message}\n${diagnostics()}`);
      });
      const tls = await startHttpsServer();
      try {
        tls.route('/s', { body: 'secret' });
        const env = { http_proxy: `127.0.0.1:${port}`, https_proxy: `127.0.0.1:${port}` };
        const [plain] = await addJson(['-o', 'plain', s.url('/f')], env);
        const [tunnel] = await addJson(['-o', 'tunnel', '--ca-file', tls.caFile, tls.url('/s')], env);
        const [p, c] = await waitFinal(t, [plain.id, tunnel.id]);
        expect(p.state).toBe('completed');
        expect(fs.readFileSync(path.join(t.downloads, 'plain'), 'utf8')).toBe('hello');
        expect(s.requestsTo('/f')[0]!.headers.via).toMatch(new RegExp(tool));
        expect(c).toMatchObject({ state: 'failed', attempts: 1, httpStatus: 403, error: { code: 'E_PROXY' } });
        expect(c.error.message).toBe(`proxy http://127.0.0.1:${port}/ refused CONNECT ${new URL(tls.origin).host}: HTTP 403 Forbidden`);
        expect(tls.hits('/s')).toBe(0);
      } finally {
        await tls.close();
      }
    } finally {
      child.kill('SIGKILL');
      await waitUntil(() => child.exitCode !== null || child.signalCode !== null, 10_000, `${tool} to exit`);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
