// Security and hostile input: nothing is written where it should not be, no secret is shown,
// nothing from the network or from events is ever run. Real CLI, real worker, real local servers.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { statusJson, testdir, waitFinal, waitUntil, type TestDir, addJson as addJsonIn } from '../helpers/cli.js';
import { bodyFor, startHttpsServer, startServer, type TestServer } from '../helpers/server.js';

let t: TestDir;
let s: TestServer;
beforeEach(async () => {
  t = await testdir();
  s = await startServer();
});
afterEach(async () => {
  await t.cleanup();
  await s.close();
});

const addJson = (args: string[], env?: NodeJS.ProcessEnv) => addJsonIn(t, args, env);

/** Every path under `dir` (files, directories, symlinks), relative, sorted; bgdl's own home and config left out. */
function walk(dir: string, skip = ['home', 'config']): string[] {
  const out: string[] = [];
  const visit = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (!rel && skip.includes(e.name)) continue;
      out.push(p);
      if (e.isDirectory()) visit(p);
    }
  };
  visit('');
  return out.sort();
}

const mode = (p: string) => fs.statSync(p).mode & 0o777;

/** Run `fn` with this process's umask (the CLI and the worker it starts inherit it). */
async function withUmask<T>(mask: number, fn: () => Promise<T>): Promise<T> {
  const old = process.umask(mask);
  try {
    return await fn();
  } finally {
    process.umask(old);
  }
}

describe('files: server-chosen names', () => {
  it('a table of hostile names each lands directly inside -d under its safe base name, and nothing else is written', async () => {
    // [route path, Content-Disposition (or null: the URL's last segment decides), expected name]
    const cases: [string, string | null, string][] = [
      ['/cd/1', 'attachment; filename="../../up.txt"', 'up.txt'],
      ['/cd/2', 'attachment; filename="/etc/passwd"', 'passwd'],
      ['/cd/3', 'attachment; filename="..\\\\..\\\\win.txt"', 'win.txt'],
      ['/cd/4', 'attachment; filename=..\\evil\\tok.txt', 'tok.txt'],
      ['/cd/5', "attachment; filename*=UTF-8''a%00b.txt", 'ab.txt'],
      ['/cd/6', "attachment; filename*=UTF-8''c%01t%1Fr%7Fl%C2%85.txt", 'ctrl.txt'],
      ['/cd/7', "attachment; filename*=UTF-8''line%0Abreak%0D.txt", 'linebreak.txt'],
      ['/cd/8', 'attachment; filename=".hidden"', 'hidden'],
      ['/cd/9', 'attachment; filename="...dots.txt"', 'dots.txt'],
      ['/cd/10', 'attachment; filename=" . .spaced.txt"', 'spaced.txt'],
      ['/cd/11', 'attachment; filename="CON"', '_CON'],
      ['/cd/12', 'attachment; filename="aux.txt"', '_aux.txt'],
      ['/cd/13', 'attachment; filename="LPT1"', '_LPT1'],
      ['/cd/14', 'attachment; filename="com9.tar.gz"', '_com9.tar.gz'],
      ['/cd/15', `attachment; filename="${'a'.repeat(300)}.txt"`, `${'a'.repeat(196)}.txt`],
      ['/cd/16', `attachment; filename*=UTF-8''${'%C3%A9'.repeat(150)}.bin`, `${'é'.repeat(98)}.bin`],
      ['/cd/17', "attachment; filename*=UTF-8''%2E%2E%2F%2E%2E%2Fpct.txt", 'pct.txt'],
      ['/cd/18', "attachment; filename*=UTF-8''%2E%2E%5C%2E%2E%5Cpctwin.txt", 'pctwin.txt'],
      // The plain form is not percent-decoded: the literal name holds no separator and is safe as it is.
      ['/cd/19', 'attachment; filename="%2E%2E%2Fliteral.txt"', '%2E%2E%2Fliteral.txt'],
      ['/cd/20', "attachment; filename*=UTF-8''evil%E2%80%AEtxt.exe", 'eviltxt.exe'],
      ['/cd/21', 'attachment; filename="trail.txt. . "', 'trail.txt'],
      ['/cd/22', "attachment; filename*=UTF-8''%ZZ; filename=\"plain-fallback.txt\"", 'plain-fallback.txt'],
      // Nothing usable left in the header: the URL's last segment names the file.
      ['/cd/dotdot-fallback', 'attachment; filename=".."', 'dotdot-fallback'],
      ['/cd/slash-fallback', 'attachment; filename="/"', 'slash-fallback'],
      // A name that exists (here a planted symlink to a victim) is never replaced, nor followed.
      ['/cd/planted', 'attachment; filename="planted.txt"', 'planted.1.txt'],
      // The URL's last segment, percent-decoded, then reduced the same way.
      ['/u/%2E%2E%2Fx', null, 'x'],
      ['/u/..%2F..%2Fseg2.txt', null, 'seg2.txt'],
      ['/u/a%5Cb%5Cseg3.txt', null, 'seg3.txt'],
      ['/u/%00%01seg4.txt', null, 'seg4.txt'],
      ['/u/%0A%0Dseg5.txt', null, 'seg5.txt'],
      ['/u/.seg6', null, 'seg6'],
      ['/u/%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fseg7', null, 'seg7'],
      [`/u/${'b'.repeat(300)}.bin`, null, `${'b'.repeat(196)}.bin`],
      ['/u/NUL.txt', null, '_NUL.txt'],
      // After redirects the final URL's last segment counts.
      ['/r/start', null, 'redir.txt'],
    ];
    for (const [p, cd] of cases) s.route(p, { body: `body of ${p}`, ...(cd ? { contentDisposition: cd } : {}) });
    s.route('/r/start', { redirect: { to: '/r/..%2F..%2Fredir.txt' } });
    s.route('/r/..%2F..%2Fredir.txt', { body: 'body of /r/start' });

    const out = path.join(t.downloads, 'out');
    fs.mkdirSync(out);
    const victim = path.join(t.dir, 'victim.txt');
    fs.writeFileSync(victim, 'precious');
    fs.symlinkSync(victim, path.join(out, 'planted.txt'));

    const tasks = await addJson(['-d', 'out', ...cases.map(([p]) => s.url(p))]);
    expect(tasks).toHaveLength(cases.length);
    const done = await waitFinal(t, tasks.map((x) => x.id));
    for (const [i, [p, , expected]] of cases.entries()) {
      const d = done[i]!;
      expect(d.state, `${p}: ${JSON.stringify(d.error)}`).toBe('completed');
      expect(d.output, p).toBe(path.join(out, expected));
      expect(fs.lstatSync(d.output).isFile(), p).toBe(true);
      expect(fs.readFileSync(d.output, 'utf8'), p).toBe(`body of ${p}`);
    }
    expect(new Set(cases.map(([, , e]) => e)).size).toBe(cases.length);
    expect(fs.readFileSync(victim, 'utf8')).toBe('precious');
    expect(fs.lstatSync(path.join(out, 'planted.txt')).isSymbolicLink()).toBe(true);
    const expected = ['downloads', 'downloads/out', 'victim.txt', 'downloads/out/planted.txt', ...cases.map(([, , e]) => `downloads/out/${e}`)].sort();
    expect(walk(t.dir)).toEqual(expected);
  });

  it('a -d directory that is a symlink: the file lands in the real directory', async () => {
    const real = path.join(t.dir, 'real');
    fs.mkdirSync(real);
    fs.symlinkSync(real, path.join(t.downloads, 'link'));
    s.route('/dl/linked.bin', { body: 'via link', contentDisposition: 'attachment; filename="../../../linked.bin"' });
    const [task] = await addJson(['-d', 'link', s.url('/dl/linked.bin')]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(fs.realpathSync(done.output)).toBe(path.join(real, 'linked.bin'));
    expect(fs.readFileSync(path.join(real, 'linked.bin'), 'utf8')).toBe('via link');
    expect(fs.lstatSync(path.join(t.downloads, 'link')).isSymbolicLink()).toBe(true);
    expect(walk(t.dir)).toEqual(['downloads', 'downloads/link', 'real', 'real/linked.bin']);
  });

  it('only the final response names the file: a redirect response\'s Content-Disposition is ignored', async () => {
    s.route('/cdr/start', { redirect: { to: '/cdr/final.bin' }, headers: { 'Content-Disposition': 'attachment; filename="from-redirect.txt"' } });
    s.route('/cdr/final.bin', { body: 'final' });
    s.route('/cdr/start2', { redirect: { to: '/cdr/named' }, headers: { 'Content-Disposition': 'attachment; filename="from-redirect2.txt"' } });
    s.route('/cdr/named', { body: 'named', contentDisposition: 'attachment; filename="from-final.txt"' });
    const [a, b] = await addJson(['-d', 'out', s.url('/cdr/start'), s.url('/cdr/start2')]);
    const done = await waitFinal(t, [a.id, b.id]);
    expect(done.map((d) => d.state)).toEqual(['completed', 'completed']);
    expect(done.map((d) => path.basename(d.output))).toEqual(['final.bin', 'from-final.txt']);
    expect(fs.readdirSync(path.join(t.downloads, 'out')).sort()).toEqual(['final.bin', 'from-final.txt']);
  });
});

describe('files: partial files and modes', () => {
  it('a planted partial file is never written through: symlinks fail the task with E_UNSAFE_PART, a hard link makes it wait', async () => {
    t.setConfig({ retryBaseDelay: '100ms', retryMaxDelay: '300ms' });
    s.route('/p.bin', { body: { size: 50_000 } });
    const victim = path.join(t.dir, 'victim.txt');
    fs.writeFileSync(victim, 'precious');
    const victimLinked = path.join(t.dir, 'victim-linked.txt');
    fs.writeFileSync(victimLinked, 'also precious');
    const notThere = path.join(t.dir, 'created-by-following');
    fs.symlinkSync(victim, path.join(t.downloads, 'x.bin.bgdl-part'));
    fs.symlinkSync(notThere, path.join(t.downloads, 'y.bin.bgdl-part'));
    fs.linkSync(victimLinked, path.join(t.downloads, 'z.bin.bgdl-part'));
    const [x] = await addJson([s.url('/p.bin'), '-o', 'x.bin']);
    const [y] = await addJson([s.url('/p.bin'), '-o', 'y.bin']);
    const [z] = await addJson([s.url('/p.bin'), '-o', 'z.bin']);
    const done = await waitFinal(t, [x.id, y.id]);
    expect(done[0]).toMatchObject({ state: 'failed', error: { code: 'E_UNSAFE_PART' } });
    expect(done[0].error.message).toContain('x.bin.bgdl-part');
    expect(done[1]).toMatchObject({ state: 'failed', error: { code: 'E_UNSAFE_PART' } });
    expect(fs.readFileSync(victim, 'utf8')).toBe('precious');
    expect(fs.existsSync(notThere)).toBe(false);
    expect(fs.lstatSync(path.join(t.downloads, 'x.bin.bgdl-part')).isSymbolicLink()).toBe(true);
    expect(fs.existsSync(path.join(t.downloads, 'x.bin'))).toBe(false);
    expect(fs.existsSync(path.join(t.downloads, 'y.bin'))).toBe(false);
    // A hard link is a regular file of ours that this task did not create: never unlinked nor written
    // into; the task waits (it may be another bgdl's partial file) until the name is free.
    const waiting = await waitUntil(async () => {
      const [w] = await statusJson(t, [z.id]);
      return w.error?.code === 'E_OUTPUT_BUSY' ? w : null;
    }, 10_000, 'the task to wait for the planted file');
    expect(waiting.state).toBe('queued');
    expect(fs.statSync(victimLinked).nlink).toBe(2);
    fs.rmSync(path.join(t.downloads, 'z.bin.bgdl-part'));
    const [fin] = await waitFinal(t, [z.id]);
    expect(fin.state).toBe('completed');
    expect(fs.readFileSync(victimLinked, 'utf8')).toBe('also precious');
    expect(fs.readFileSync(path.join(t.downloads, 'z.bin')).equals(bodyFor(50_000))).toBe(true);
  });

  it('a partial file swapped for a symlink while paused is not followed on resume', async () => {
    s.route('/swap.bin', { body: { size: 1_000_000 }, etag: '"s1"', throttle: 400_000 });
    const victim = path.join(t.dir, 'victim.txt');
    fs.writeFileSync(victim, 'precious');
    const [task] = await addJson([s.url('/swap.bin'), '-o', 'swap.bin']);
    await waitUntil(async () => (await statusJson(t, [task.id]))[0].bytesReceived > 100_000, 10_000, 'some bytes');
    expect((await t.bgdl(['pause', String(task.id)])).code).toBe(0);
    const paused = await waitUntil(async () => {
      const [x] = await statusJson(t, [task.id]);
      return x.state === 'paused' ? x : null;
    }, 5000, 'the pause');
    expect(paused.bytesReceived).toBeGreaterThan(0);
    const part = path.join(t.downloads, 'swap.bin.bgdl-part');
    fs.rmSync(part);
    fs.symlinkSync(victim, part);
    expect((await t.bgdl(['resume', String(task.id)])).code).toBe(0);
    const [done] = await waitFinal(t, [task.id]);
    expect(done).toMatchObject({ state: 'failed', error: { code: 'E_UNSAFE_PART' } });
    expect(fs.readFileSync(victim, 'utf8')).toBe('precious');
    expect(fs.lstatSync(part).isSymbolicLink()).toBe(true);
    expect(fs.existsSync(path.join(t.downloads, 'swap.bin'))).toBe(false);
  });

  it('partial files are 0600 while they grow; the finished file is 0644 under umask 022', async () => {
    await withUmask(0o022, async () => {
      s.route('/m.bin', { body: { size: 300_000 }, throttle: 300_000 });
      const [task] = await addJson([s.url('/m.bin')]);
      const part = path.join(t.downloads, 'm.bin.bgdl-part');
      await waitUntil(() => fs.existsSync(part), 10_000, 'the partial file');
      expect(mode(part)).toBe(0o600);
      const [done] = await waitFinal(t, [task.id]);
      expect(done.state).toBe('completed');
      expect(mode(path.join(t.downloads, 'm.bin'))).toBe(0o644);
    });
  });

  it('BGDL_HOME is 0700, the store, the log and hook event files 0600, even under umask 000', async () => {
    const seen = path.join(t.dir, 'hook-modes');
    await withUmask(0o000, async () => {
      s.route('/h.bin', { body: 'h' });
      // The hook reports the modes of its events file and of the directory holding it.
      await t.bgdl(['session', 'create', 'modes', '--hook', `stat -c %a "$BGDL_EVENTS" "$(dirname "$BGDL_EVENTS")" > "${seen}"`]);
      const [task] = await addJson(['-s', 'modes', s.url('/h.bin')]);
      await waitFinal(t, [task.id]);
      await waitUntil(() => fs.existsSync(path.join(t.home, 'bgdl.log')) && fs.existsSync(seen) && fs.readFileSync(seen, 'utf8').endsWith('\n'), 10_000, 'the log and the hook');
    });
    expect(fs.readFileSync(seen, 'utf8').split('\n')).toEqual(['600', '700', '']);
    expect(mode(t.home)).toBe(0o700);
    for (const f of fs.readdirSync(t.home).filter((f) => f.startsWith('bgdl.'))) expect([f, mode(path.join(t.home, f))]).toEqual([f, 0o600]);
    expect(fs.readdirSync(t.home)).toEqual(expect.arrayContaining(['bgdl.db', 'bgdl.log']));
  });
});

describe('network', () => {
  it('TLS is verified by default; --insecure and --ca-file each make a self-signed server work', async () => {
    const h = await startHttpsServer();
    try {
      h.route('/tls.bin', { body: { size: 10_000 } });
      const [plain] = await addJson([h.url('/tls.bin'), '-o', 'plain.bin']);
      const [insecure] = await addJson([h.url('/tls.bin'), '-o', 'insecure.bin', '--insecure']);
      const [ca] = await addJson([h.url('/tls.bin'), '-o', 'ca.bin', '--ca-file', h.caFile]);
      const done = await waitFinal(t, [plain.id, insecure.id, ca.id]);
      expect(done[0]).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'E_TLS_CERT' } });
      expect(done[0].error.message).toMatch(/self-signed/);
      expect(done[0].error.message).toMatch(/--ca-file/);
      expect(done[0].error.message).toMatch(/--insecure/);
      expect(done[1].state).toBe('completed');
      expect(done[2].state).toBe('completed');
      expect(fs.existsSync(path.join(t.downloads, 'plain.bin'))).toBe(false);
      expect(fs.readFileSync(path.join(t.downloads, 'ca.bin')).equals(bodyFor(10_000))).toBe(true);
      expect(h.requestsTo('/tls.bin')).toHaveLength(2); // the unverified connection never sent a request
    } finally {
      await h.close();
    }
  });

  it('NODE_EXTRA_CA_CERTS is trusted as Node.js trusts it, alone or with --ca-file, though the worker starts without loading it; hooks still see it', async () => {
    const h = await startHttpsServer();
    // A CA file of another server's: --ca-file with it must not drop what NODE_EXTRA_CA_CERTS adds.
    const otherCa = path.join(t.dir, 'other-ca.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(t.dir, 'other-key.pem'), '-out', otherCa, '-subj', '/CN=other', '-days', '1'], { stdio: 'ignore' });
    try {
      h.route('/extra.bin', { body: { size: 10_000 }, delayMs: 500 });
      const seen = path.join(t.dir, 'hook-saw.txt');
      const env = { NODE_EXTRA_CA_CERTS: h.caFile };
      expect((await t.bgdl(['session', 'create', 'tls', '--hook', `printf %s "$NODE_EXTRA_CA_CERTS" > '${seen}'`], { env })).code).toBe(0);
      const [alone] = await addJson([h.url('/extra.bin'), '-o', 'alone.bin', '-s', 'tls'], env);
      // The worker was started with the variable carried aside: Node.js did not parse the file at its start.
      const pid = t.workerPid()!;
      const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      expect(environ.filter((v) => v.startsWith('NODE_EXTRA_CA_CERTS='))).toEqual([]);
      // With --ca-file too (a CA of its own for another server), the extra certificates still count.
      const [both] = await addJson([h.url('/extra.bin'), '-o', 'both.bin', '--ca-file', otherCa], env);
      const done = await waitFinal(t, [alone.id, both.id]);
      expect(done.map((d) => d.state)).toEqual(['completed', 'completed']);
      expect(fs.readFileSync(path.join(t.downloads, 'alone.bin')).equals(bodyFor(10_000))).toBe(true);
      await waitUntil(() => fs.existsSync(seen) && fs.readFileSync(seen, 'utf8') === h.caFile, 10_000);
    } finally {
      await h.close();
    }
  });

  it('`bgdl` as a command starts Node.js with NODE_EXTRA_CA_CERTS moved aside and puts it back; a PostgreSQL store over TLS starts again with it loaded', async () => {
    // A file Node.js cannot load: it warns on stderr when it tries, at its start.
    const missing = path.join(t.dir, 'no-such-ca.pem');
    const warning = /Ignoring extra certs from `[^`]*no-such-ca\.pem`/;
    const env = { NODE_EXTRA_CA_CERTS: missing };
    expect((await t.bgdl(['--version'], { env })).stderr).toMatch(warning);
    const asCommand = await t.bgdl(['--version'], { env, asCommand: true });
    expect(asCommand).toMatchObject({ code: 0, stderr: '' });
    // The variable is back for what the command starts: the worker, and the hook the worker runs.
    const seen = path.join(t.dir, 'hook-saw.txt');
    expect((await t.bgdl(['session', 'create', 'ca', '--hook', `printf %s "$NODE_EXTRA_CA_CERTS" > '${seen}'`], { env, asCommand: true })).code).toBe(0);
    s.route('/ca.bin', { body: 'x' });
    const added = await t.bgdl(['add', '--json', '-s', 'ca', s.url('/ca.bin')], { env, asCommand: true });
    expect(added).toMatchObject({ code: 0, stderr: '' });
    await waitFinal(t, [JSON.parse(added.stdout)[0].id]);
    await waitUntil(() => fs.existsSync(seen) && fs.readFileSync(seen, 'utf8') === missing, 10_000);
    // node-postgres trusts Node's own store only: over TLS the command runs again in a Node.js that
    // loaded the file (one warning), and without TLS it does not.
    const tls = await t.bgdl(['status'], { env: { ...env, BGDL_STORE: 'postgres://bgdl@127.0.0.1:1/none?sslmode=verify-full' }, asCommand: true });
    expect(tls.code).toBe(4);
    expect(tls.stderr.match(new RegExp(warning, 'g'))).toHaveLength(1);
    expect(tls.stderr).toMatch(/^bgdl: the store .* cannot be reached/m);
    const plain = await t.bgdl(['status'], { env: { ...env, BGDL_STORE: 'postgres://bgdl@127.0.0.1:1/none' }, asCommand: true });
    expect(plain.code).toBe(4);
    expect(plain.stderr).not.toMatch(warning);
  });

  it('an https → http redirect is refused (E_REDIRECT_DOWNGRADE) unless --allow-downgrade', async () => {
    const h = await startHttpsServer();
    try {
      h.route('/down', { redirect: { to: s.url('/plain.bin') } });
      s.route('/plain.bin', { body: 'plain' });
      const [refused] = await addJson([h.url('/down'), '-o', 'refused.bin', '--ca-file', h.caFile]);
      const [allowed] = await addJson([h.url('/down'), '-o', 'allowed.bin', '--ca-file', h.caFile, '--allow-downgrade', '-H', 'Authorization: Bearer x']);
      const done = await waitFinal(t, [refused.id, allowed.id]);
      expect(done[0]).toMatchObject({ state: 'failed', error: { code: 'E_REDIRECT_DOWNGRADE' } });
      expect(done[1]).toMatchObject({ state: 'completed', finalUrl: s.url('/plain.bin') });
      expect(s.requestsTo('/plain.bin')).toHaveLength(1);
      expect(h.requestsTo('/down').some((r) => r.headers.authorization === 'Bearer x')).toBe(true);
      expect(s.requestsTo('/plain.bin')[0]!.headers.authorization).toBeUndefined(); // another scheme and port: another origin
      expect(fs.existsSync(path.join(t.downloads, 'refused.bin'))).toBe(false);
    } finally {
      await h.close();
    }
  });

  it('credentials headers and URL user info go to their own origin only, and are not restored on the way back', async () => {
    const other = await startServer(); // same host, another port: another origin
    try {
      for (const p of ['/c', '/u']) {
        s.route(`${p}/start`, { redirect: { to: `${p}/same` } });
        s.route(`${p}/same`, { redirect: { to: other.url(`${p}/cross`) } });
        other.route(`${p}/cross`, { redirect: { to: s.url(`${p}/back`) } });
        s.route(`${p}/back`, { body: `done ${p}` });
      }
      const [c] = await addJson([
        s.url('/c/start'), '-o', 'c.bin',
        '-H', 'Authorization: Bearer tok', '-H', 'Cookie: sid=1', '-H', 'Proxy-Authorization: Basic cHJveHk6cHc=', '-H', 'X-Keep: yes',
      ]);
      const [u] = await addJson([s.url('/u/start').replace('http://', 'http://user:p%40ss@'), '-o', 'u.bin']);
      const done = await waitFinal(t, [c.id, u.id]);
      expect(done.map((d) => d.state)).toEqual(['completed', 'completed']);
      const creds = (h: Record<string, unknown>) => [h.authorization, h.cookie, h['proxy-authorization']];
      for (const p of ['/c/start', '/c/same']) expect(creds(s.requestsTo(p)[0]!.headers)).toEqual(['Bearer tok', 'sid=1', 'Basic cHJveHk6cHc=']);
      expect(creds(other.requestsTo('/c/cross')[0]!.headers)).toEqual([undefined, undefined, undefined]);
      expect(other.requestsTo('/c/cross')[0]!.headers['x-keep']).toBe('yes');
      expect(creds(s.requestsTo('/c/back')[0]!.headers)).toEqual([undefined, undefined, undefined]);
      const basic = `Basic ${Buffer.from('user:p@ss').toString('base64')}`;
      for (const p of ['/u/start', '/u/same']) expect(s.requestsTo(p)[0]!.headers.authorization).toBe(basic);
      expect(other.requestsTo('/u/cross')[0]!.headers.authorization).toBeUndefined();
      expect(s.requestsTo('/u/back')[0]!.headers.authorization).toBeUndefined();
    } finally {
      await other.close();
    }
  });

  it('headers with CR/LF, control characters or invalid names are refused at add: exit 2, nothing stored', async () => {
    // (test/unit/parse.test.ts has more cases; each one here is a real `bgdl add`.)
    const bad = ['X-A: b\r\nX-Injected: 1', 'X-A: b\rX-Injected: 1', 'X-A: a\x01b', 'Bad Name: v', 'X(A): v', 'Ünïcode: v', ': v'];
    for (const header of bad) {
      const r = await t.bgdl(['add', s.url('/never'), '-H', header]);
      expect(r.code, `${JSON.stringify(header)}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/^bgdl: invalid header/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stdout).toBe('');
    }
    expect(await statusJson(t)).toEqual([]);
    expect(s.requests).toEqual([]);
  });

  it('Content-Encoding is never decoded: a gzip bomb is stored as the wire bytes with Accept-Encoding: identity sent', async () => {
    s.route('/bomb.bin', { body: Buffer.alloc(10 * 1024 * 1024), gzip: true });
    const wire = s.wireBody('/bomb.bin');
    expect(wire.length).toBeLessThan(100_000);
    const [task] = await addJson([s.url('/bomb.bin')]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done).toMatchObject({ state: 'completed', bytesReceived: wire.length });
    const file = path.join(t.downloads, 'bomb.bin');
    expect(fs.statSync(file).size).toBe(wire.length);
    expect(fs.readFileSync(file).equals(wire)).toBe(true);
    expect(s.requestsTo('/bomb.bin')[0]!.headers['accept-encoding']).toBe('identity');
  });
});

describe('redaction', () => {
  it('a canary secret in user info, credential headers and secret query parameters appears in no output, only ***', async () => {
    const C = (k: string) => `Cnry${k}Q7`;
    const query = `token=${C('token')}&key=${C('key')}&sig=${C('sig')}&signature=${C('signature')}&password=${C('password')}&plain=visible`;
    const secretUrl = (p: string) => s.url(`${p}?${query}`).replace('http://', `http://${C('user')}:${C('pass')}@`);
    const headers = ['-H', `Authorization: Bearer ${C('bearer')}`, '-H', `Cookie: s=${C('cookie')}`, '-H', `Proxy-Authorization: Basic ${C('proxy')}`];
    s.route('/secret.bin', { body: 'secret body' });

    const runs = path.join(t.dir, 'hook-copy');
    fs.mkdirSync(runs);
    const hook = path.join(t.dir, 'hook.sh');
    fs.writeFileSync(hook, `#!/bin/sh\ncat "$BGDL_EVENTS" > "${runs}/file"\ncat > "${runs}/stdin"\nenv > "${runs}/env"\n`, { mode: 0o755 });
    // Launch events off until both tasks are final, so the hook sees them in one run.
    expect((await t.bgdl(['session', 'create', 'sec', '--hook', hook, '--no-launch-events'])).code).toBe(0);

    const outputs: Record<string, string> = {};
    const keep = (name: string, r: { stdout: string; stderr: string }) => {
      outputs[`${name} stdout`] = r.stdout;
      outputs[`${name} stderr`] = r.stderr;
    };
    const plainAdd = await t.bgdl(['add', '-s', 'sec', secretUrl('/secret.bin'), ...headers]);
    expect(plainAdd.code, plainAdd.stderr).toBe(0);
    keep('add', plainAdd);
    const jsonAdd = await t.bgdl(['add', '--json', '-s', 'sec', secretUrl('/missing.bin'), ...headers]);
    expect(jsonAdd.code, jsonAdd.stderr).toBe(0);
    keep('add --json', jsonAdd);
    const ok = Number(plainAdd.stdout.split('\t')[0]);
    const [{ id: bad }] = JSON.parse(jsonAdd.stdout);
    // Refused input is echoed back without the secret too.
    const refusedUrl = await t.bgdl(['add', secretUrl('/x').replace('http://', 'ftp://')]);
    expect(refusedUrl.code).toBe(2);
    keep('refused URL', refusedUrl);
    const refusedHeader = await t.bgdl(['add', s.url('/x'), '-H', `Authorization: Bearer ${C('crlf')}\r\nX-Evil: 1`]);
    expect(refusedHeader.code).toBe(2);
    keep('refused header', refusedHeader);

    const wait = await t.bgdl(['wait', String(ok), String(bad)]);
    expect(wait.code).toBe(1);
    keep('wait', wait);
    keep('wait --json', await t.bgdl(['wait', '--json', String(ok), String(bad)]));
    for (const args of [['events'], ['events', '--json']]) keep(args.join(' '), await t.bgdl(args));
    expect(JSON.parse(outputs['events --json stdout']!)).toHaveLength(2);
    expect((await t.bgdl(['session', 'set', 'sec', '--launch-events'])).code).toBe(0);
    await waitUntil(() => fs.existsSync(path.join(runs, 'env')) && fs.readFileSync(path.join(runs, 'stdin'), 'utf8').trim().split('\n').length === 2, 15_000, 'the hook');
    for (const f of ['file', 'stdin', 'env']) outputs[`hook ${f}`] = fs.readFileSync(path.join(runs, f), 'utf8');
    for (const args of [['status'], ['status', '--json'], ['status', String(ok)], ['status', String(bad)], ['log'], ['session', 'show', 'sec'], ['session', 'show', 'sec', '--json'], ['session', 'list']]) {
      const r = await t.bgdl(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      keep(args.join(' '), r);
    }

    // The canaries were real: the server saw them, and the store keeps them (it needs them to transfer).
    const seen = s.requestsTo('/secret.bin')[0]!;
    expect(seen.headers.authorization).toBe(`Bearer ${C('bearer')}`);
    expect(seen.headers.cookie).toBe(`s=${C('cookie')}`);
    expect(seen.url).toContain(`token=${C('token')}`);
    const db = new Database(path.join(t.home, 'bgdl.db'), { readonly: true });
    try {
      expect(JSON.stringify(db.prepare('SELECT url, headers FROM tasks WHERE id = ?').get(ok))).toContain(C('pass'));
    } finally {
      db.close();
    }

    for (const [name, text] of Object.entries(outputs)) expect(text.match(/Cnry\w+/g) ?? [], name).toEqual([]);
    const withUrl = ['add stdout', 'add --json stdout', 'wait stderr', 'wait --json stdout', 'hook file', 'hook stdin', 'status --json stdout', `status ${ok} stdout`, `status ${bad} stdout`, 'events stdout', 'events --json stdout', 'log stdout', 'refused URL stderr', 'refused header stderr'];
    for (const name of withUrl) expect(outputs[name], name).toContain('***');
    const redacted = `http://***:***@127.0.0.1:${new URL(s.origin).port}/secret.bin?token=***&key=***&sig=***&signature=***&password=***&plain=visible`;
    const status = JSON.parse(outputs['status --json stdout']!);
    expect(status.find((x: any) => x.id === ok)).toMatchObject({ url: redacted, headers: ['Authorization: ***', 'Cookie: ***', 'Proxy-Authorization: ***'] });
    expect(JSON.parse(outputs['hook stdin']!.split('\n')[0]!).url).toMatch(/^http:\/\/\*\*\*:\*\*\*@/);
    expect(outputs[`status ${ok} stdout`]).toContain('Authorization: ***; Cookie: ***; Proxy-Authorization: ***');
  });
});

describe('processes and input', () => {
  it('event data never reaches a shell: $(…) and backticks in a URL and a Content-Disposition name run nothing', async () => {
    const q = '?a=$(cd;touch${IFS}PWNED_URL)&b=`cd;touch${IFS}PWNED_URL_BT`';
    s.route('/evil.bin', { body: 'e', contentDisposition: 'attachment; filename="$(cd;touch PWNED_CD)`cd;touch PWNED_CD_BT`.txt"' });
    const copy = path.join(t.dir, 'hook-stdin');
    await t.bgdl(['session', 'create', 'evil', '--hook', `cat > "${copy}"; echo "$BGDL_EVENT_COUNT $BGDL_EVENTS"`]);
    const [task] = await addJson(['-s', 'evil', s.url(`/evil.bin${q}`)]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(path.basename(done.output)).toBe('$(cd;touch PWNED_CD)`cd;touch PWNED_CD_BT`.txt');
    await waitUntil(() => fs.existsSync(copy) && fs.readFileSync(copy, 'utf8').endsWith('\n'), 15_000, 'the hook');
    const event = JSON.parse(fs.readFileSync(copy, 'utf8'));
    expect(event.output).toContain('$(cd;touch PWNED_CD)');
    expect(event.url).toContain('`cd;touch${IFS}PWNED_URL_BT`');
    for (const dir of [t.dir, t.downloads, t.home, '/']) {
      expect(fs.readdirSync(dir).filter((f) => f.startsWith('PWNED')), dir).toEqual([]);
    }
  });

  it('an -i file with an over-long, non-UTF-8 or NUL line late in it is refused whole: exit 2, line number, nothing stored or created', async () => {
    const good = Array.from({ length: 1000 }, (_, i) => `${s.url(`/f${i}.bin`)}\n`).join('');
    const bad: [string, Buffer, RegExp][] = [
      ['long.txt', Buffer.from(`${s.url('/')}${'x'.repeat(64 * 1024)}\n`), /long\.txt line 1001: longer than 64 KiB/],
      ['latin1.txt', Buffer.from([0x68, 0x74, 0x74, 0x70, 0xe9, 0x0a]), /latin1\.txt line 1001: not valid UTF-8/],
      ['nul.txt', Buffer.from(`${s.url('/a')}\0b\n`), /nul\.txt line 1001: contains a NUL byte/],
    ];
    for (const [name, line, pattern] of bad) {
      fs.writeFileSync(path.join(t.downloads, name), Buffer.concat([Buffer.from(good), line, Buffer.from(good)]));
      const r = await t.bgdl(['add', '-i', name, '-d', 'never-made']);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(pattern);
      expect(r.stdout).toBe('');
    }
    expect(fs.existsSync(path.join(t.downloads, 'never-made'))).toBe(false);
    expect(await statusJson(t)).toEqual([]);
    expect(t.workerPid()).toBeNull();
  });
});

describe('the store', () => {
  it('a corrupt store exits 4 naming the file; a store from a newer bgdl exits 4 saying so and is left alone', async () => {
    expect((await t.bgdl(['status'])).code).toBe(0);
    const file = path.join(t.home, 'bgdl.db');
    const db = new Database(file);
    db.pragma('user_version = 99');
    db.close();
    for (const args of [['status'], ['add', s.url('/x.bin')]]) {
      const r = await t.bgdl(args);
      expect(r.code, r.stderr).toBe(4);
      expect(r.stderr).toMatch(/^bgdl: /);
      expect(r.stderr).toContain(file);
      expect(r.stderr).toMatch(/newer bgdl/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    const check = new Database(file, { readonly: true });
    expect(check.pragma('user_version', { simple: true })).toBe(99);
    expect(check.prepare('SELECT count(*) AS n FROM tasks').get()).toEqual({ n: 0 });
    check.close();

    // A damaged header: SQLite no longer recognises the file.
    const corruptHome = path.join(t.dir, 'corrupt-home');
    fs.mkdirSync(corruptHome, { mode: 0o700 });
    const corrupt = path.join(corruptHome, 'bgdl.db');
    fs.copyFileSync(file, corrupt);
    const fd = fs.openSync(corrupt, 'r+');
    fs.writeSync(fd, Buffer.from('NOT A DATABASE!!'), 0, 16, 0);
    fs.closeSync(fd);
    const r = await t.bgdl(['status'], { env: { BGDL_HOME: corruptHome } });
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(corrupt);
    expect(r.stderr).toMatch(/corrupt/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});
