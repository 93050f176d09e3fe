// The walking product: `bgdl add` returns at once, a detached worker downloads, `status` and `wait`
// show the result. Real CLI, real worker, real local HTTP servers.

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { alive, statusJson, testdir, waitFinal, waitUntil, type TestDir } from '../helpers/cli.js';
import { workerPids } from '../helpers/procs.js';
import { bodyFor, sha256, startServer, type TestServer } from '../helpers/server.js';

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

async function add(args: string[]): Promise<any[]> {
  const r = await t.bgdl(['add', '--json', ...args]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

describe('add → worker → completed', () => {
  it('downloads a file byte-identical and records its sha256 and fields', async () => {
    s.route('/data/file.bin', { body: { size: 300_000 }, etag: '"v1"' });
    const [task] = await add([s.url('/data/file.bin')]);
    expect(task).toMatchObject({ state: 'queued', session: 'default', method: 'GET', url: s.url('/data/file.bin') });
    const [done] = await waitFinal(t, [task.id]);
    const file = path.join(t.downloads, 'file.bin');
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file))).toBe(sha256(bodyFor(300_000)));
    expect(done).toMatchObject({
      id: task.id, output: file, finalUrl: s.url('/data/file.bin'), bytesReceived: 300_000, bytesExpected: 300_000,
      httpStatus: 200, attempts: 1, error: null, waitingFor: null, discretionary: false, priority: 'normal', sha256: sha256(bodyFor(300_000)),
    });
    for (const k of ['createdAt', 'startedAt', 'finishedAt']) expect(new Date(done[k]).toISOString()).toBe(done[k]);
    expect(done.beginAt).toBeNull();
    expect(fs.existsSync(`${file}.bgdl-part`)).toBe(false);
    expect(s.requestsTo('/data/file.bin')[0]!.headers['accept-encoding']).toBe('identity');
  });

  it('add returns at once while the detached worker goes on transferring', async () => {
    s.route('/slow.bin', { body: { size: 400_000 }, throttle: 200_000 });
    const started = Date.now();
    const [task] = await add([s.url('/slow.bin')]);
    expect(Date.now() - started).toBeLessThan(1500 + 1000); // node start-up, not the 2 s transfer
    const running = await waitUntil(async () => (await statusJson(t, [task.id]))[0].state === 'running', 10_000, 'the task to run');
    expect(running).toBe(true);
    const pid = t.workerPid();
    expect(pid).toBeTruthy();
    expect(workerPids(t.home)).toEqual([pid]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(fs.readFileSync(path.join(t.downloads, 'slow.bin')).equals(bodyFor(400_000))).toBe(true);
    // With nothing left to do the worker exits by itself.
    await waitUntil(() => !alive(pid!), 10_000, 'the idle worker to exit');
  });

  it('add --wait exits 0 on success and 1 when the server answers 404', async () => {
    s.route('/ok.txt', { body: 'hello\n' });
    const ok = await t.bgdl(['add', '--wait', s.url('/ok.txt')]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/task \d+ completed/);
    const missing = await t.bgdl(['add', '--wait', s.url('/missing.txt')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/E_HTTP_STATUS/);
    const tasks = await statusJson(t);
    expect(tasks[1]).toMatchObject({ state: 'failed', httpStatus: 404, error: { code: 'E_HTTP_STATUS' } });
    expect(tasks[1].error.message).toMatch(/404/);
    expect(fs.existsSync(path.join(t.downloads, 'missing.txt'))).toBe(false);
  });

  it('wait sees a task retried after it failed, and waits for its new end', async () => {
    // A look reads only the tasks not final at the last look: one that a command puts back in the
    // queue must still be seen, here while the other task is held running.
    s.route('/flip.txt', { body: 'second time\n', failTimes: { status: 404, times: 1 } });
    let release!: (v?: unknown) => void;
    s.route('/held.bin', { body: { size: 100_000 }, holdAfter: { bytes: 50_000, until: new Promise((r) => (release = r)) } });
    const [a, b] = await add([s.url('/flip.txt'), s.url('/held.bin')]);
    const waiting = t.bgdl(['wait', String(a.id), String(b.id)]);
    await waitUntil(async () => (await statusJson(t, [a.id]))[0].state === 'failed', 15_000, 'the first attempt to fail');
    await waitUntil(async () => (await statusJson(t, [b.id]))[0].bytesReceived > 0, 15_000, 'the other task to be under way');
    const retried = await t.bgdl(['retry', String(a.id)]);
    expect(retried.code, retried.stderr).toBe(0);
    await waitUntil(async () => (await statusJson(t, [a.id]))[0].state === 'completed', 15_000, 'the retried task');
    release();
    const w = await waiting;
    expect(w.code, w.stderr).toBe(0);
    expect(w.stderr).toContain(`task ${a.id} failed: E_HTTP_STATUS`);
    expect(w.stderr).toContain(`task ${a.id} completed: ${path.join(t.downloads, 'flip.txt')}`);
    expect(w.stderr).toMatch(/2 tasks: 2 completed, 0 failed, 0 canceled/);
  });

  it('add --wait draws progress bars with bytes, speed and ETA on a terminal, plain lines otherwise', async () => {
    s.route('/tty.bin', { body: { size: 1_500_000 }, throttle: 1_000_000 });
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    const { BIN } = await import('../helpers/cli.js');
    const env: NodeJS.ProcessEnv = { ...t.env, NO_COLOR: '1' };
    delete env.CI; // bars never show under CI
    // Asynchronously: the test server runs in this process and must keep answering.
    let screen = '';
    try {
      const child = promisify(execFile)('script', ['-qec', `stty cols 120 rows 40; ${process.execPath} ${BIN} add --wait ${s.url('/tty.bin')}`, '/dev/null'], {
      env, cwd: t.downloads, encoding: 'utf8', timeout: 30_000,
      });
      child.child.stdin?.end();
      screen = (await child).stdout;
    } catch (e) {
      throw new Error(`script failed: ${(e as Error).message}\n${JSON.stringify(String((e as { stdout?: string }).stdout).slice(-2000))}`);
    }
    expect(screen).toMatch(/tty\.bin +[#-]+ +\d+% [\d.]+ (KiB|MiB)\/1\.4 MiB [\d.]+ (B|KiB|MiB)\/s ETA/);
    expect(screen).toMatch(/\u2714 task \d+ completed: .*tty\.bin \(1\.4 MiB\)/);
    // Not a terminal: one plain line per state change, no escape sequences.
    const plain = await t.bgdl(['add', '--wait', s.url('/tty.bin'), '-o', 'plain.bin']);
    expect(plain.stderr).toMatch(/^bgdl: task \d+ completed: .*plain\.bin \(1\.4 MiB\)$/m);
    expect(plain.stderr).not.toMatch(/\x1b\[/);
  });

  it('status shows a readable table', async () => {
    s.route('/a.bin', { body: { size: 1000 } });
    const [task] = await add([s.url('/a.bin')]);
    await waitFinal(t, [task.id]);
    const r = await t.bgdl(['status']);
    expect(r.code).toBe(0);
    const [head, row] = r.stdout.trim().split('\n');
    expect(head).toMatch(/^ID\s+SESSION\s+STATE\s+PROGRESS\s+SIZE\s+SPEED\/INFO\s+DESTINATION$/);
    expect(row).toMatch(new RegExp(`^${task.id}\\s+default\\s+completed\\s+100%\\s+1000 B\\s+.*${path.join(t.downloads, 'a.bin')}$`));
    const detail = await t.bgdl(['status', String(task.id)]);
    expect(detail.stdout).toMatch(/^state:\s+completed$/m);
    expect(detail.stdout).toMatch(/^sha256:\s+[0-9a-f]{64}$/m);
  });
});

describe('many files to one host', () => {
  /**
   * `n` files of `size` bytes (seeded by their names), each answered after 20 ms so that a connection
   * is busy when the next request may go behind it; all added with one `add -i` and waited for.
   */
  async function batch(name: string, n: number, size: number): Promise<any[]> {
    const urls = Array.from({ length: n }, (_, i) => {
      s.route(`/${name}${i}.bin`, { body: { size, seed: `${name}${i}` }, delayMs: 20 });
      return s.url(`/${name}${i}.bin`);
    });
    const list = path.join(t.dir, `${name}.txt`);
    fs.writeFileSync(list, `${urls.join('\n')}\n`);
    const added = await add(['-i', list, '-d', path.join(t.dir, name)]);
    return waitFinal(t, added.map((x) => x.id), 60_000);
  }

  it('at the defaults, requests wait behind others on the 6 connections (pipelining): every file right, no seventh connection, none asked twice', async () => {
    const done = await batch('p', 60, 3000);
    for (const [i, x] of done.entries()) {
      expect(x.state).toBe('completed');
      expect(fs.readFileSync(x.output).equals(bodyFor(3000, `p${i}`))).toBe(true);
      expect(x.sha256).toBe(sha256(bodyFor(3000, `p${i}`)));
    }
    expect(s.requests).toHaveLength(60);
    expect(new Set(s.requests.map((r) => r.remotePort)).size).toBeLessThanOrEqual(6);
    expect(s.requests.filter((r) => r.behindAnother).length).toBeGreaterThan(0);
  });

  it('pause --all in the middle of a pipelined batch, then resume --all: every file right', async () => {
    // Long enough that the pause finds it running: 6 connections with four requests waiting behind
    // each take 30 files a round.
    const urls = Array.from({ length: 150 }, (_, i) => {
      s.route(`/r${i}.bin`, { body: { size: 2000, seed: `r${i}` }, delayMs: 200 });
      return s.url(`/r${i}.bin`);
    });
    const list = path.join(t.dir, 'r.txt');
    fs.writeFileSync(list, `${urls.join('\n')}\n`);
    const added = await add(['-i', list, '-d', path.join(t.dir, 'r')]);
    const ids = added.map((x) => x.id);
    await waitUntil(async () => s.requests.some((r) => r.behindAnother) && s.requests.length >= 20, 20_000, 'requests behind others');
    const paused = await t.bgdl(['pause', '--all']);
    expect(paused.code).toBe(0);
    expect(paused.stdout).toMatch(/\tpaused/); // the batch was not over yet
    await waitUntil(async () => (await statusJson(t, ids)).every((x) => x.state !== 'running'), 20_000, 'nothing running');
    expect((await t.bgdl(['resume', '--all'])).code).toBe(0);
    const done = await waitFinal(t, ids, 60_000);
    for (const [i, x] of done.entries()) {
      expect(x.state).toBe('completed');
      expect(fs.readFileSync(x.output).equals(bodyFor(2000, `r${i}`))).toBe(true);
    }
  });

  it('config pipelining off: every request waits for a connection of its own', async () => {
    expect((await t.bgdl(['config', 'set', 'pipelining', 'maybe'])).code).toBe(2);
    expect((await t.bgdl(['config', 'set', 'pipelining', 'off'])).code).toBe(0);
    const done = await batch('q', 30, 1000);
    expect(done.every((x) => x.state === 'completed')).toBe(true);
    expect(s.requests.filter((r) => r.behindAnother)).toEqual([]);
  });
});

describe('redirects', () => {
  it('follows redirects, records finalUrl, and drops credentials when the origin changes', async () => {
    const other = await startServer();
    try {
      other.route('/final.bin', { body: { size: 5000 } });
      s.route('/start', { redirect: { to: '/hop', status: 301 } });
      s.route('/hop', { redirect: { to: other.url('/final.bin'), status: 302 } });
      const [task] = await add([s.url('/start'), '-H', 'Authorization: Bearer sekrit', '-H', 'Cookie: id=42', '-H', 'X-Trace: keep-me']);
      const [done] = await waitFinal(t, [task.id]);
      expect(done.state).toBe('completed');
      expect(done.finalUrl).toBe(other.url('/final.bin'));
      expect(done.output).toBe(path.join(t.downloads, 'final.bin'));
      const same = s.requestsTo('/hop')[0]!.headers;
      expect(same.authorization).toBe('Bearer sekrit');
      expect(same.cookie).toBe('id=42');
      const cross = other.requestsTo('/final.bin')[0]!.headers;
      expect(cross.authorization).toBeUndefined();
      expect(cross.cookie).toBeUndefined();
      expect(cross['x-trace']).toBe('keep-me');
    } finally {
      await other.close();
    }
  });

  it('fails a redirect to another scheme and a redirect loop', async () => {
    s.route('/to-ftp', { redirect: { to: 'ftp://127.0.0.1/file' } });
    s.route('/loop', { redirect: { to: '/loop' } });
    const [a, b] = await add([s.url('/to-ftp'), s.url('/loop')]);
    const done = await waitFinal(t, [a.id, b.id]);
    expect(done[0]).toMatchObject({ state: 'failed', error: { code: 'E_REDIRECT_SCHEME' } });
    expect(done[1]).toMatchObject({ state: 'failed', error: { code: 'E_TOO_MANY_REDIRECTS' } });
    expect(s.hits('/loop')).toBe(21);
  });
});

describe('destination names', () => {
  const hostile: [string, string][] = [
    ['attachment; filename="../../escape.txt"', 'escape.txt'],
    ['attachment; filename="/etc/passwd"', 'passwd'],
    ['attachment; filename=".bashrc"', 'bashrc'],
    ["attachment; filename*=UTF-8''..%2F..%2Fenc.txt", 'enc.txt'],
    ['attachment; filename="..\\\\..\\\\win.txt"', 'win.txt'],
    ['attachment; filename="CON"', '_CON'],
    ['attachment; filename=".."', 'cd-6'],
  ];
  it.each(hostile.map(([h, n], i) => [i, h, n] as const))('hostile Content-Disposition %i: %s → %s', async (i, header, expected) => {
    s.route(`/cd-${i}`, { body: `body ${i}`, contentDisposition: header });
    const [task] = await add([s.url(`/cd-${i}`), '-d', 'out']);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    const dir = path.join(t.downloads, 'out');
    expect(done.output).toBe(path.join(dir, expected));
    expect(fs.readdirSync(dir)).toEqual([expected]);
    expect(fs.readFileSync(done.output, 'utf8')).toBe(`body ${i}`);
    expect(fs.readdirSync(t.dir).filter((n) => !['config', 'downloads', 'home'].includes(n))).toEqual([]);
  });

  it('never clobbers an existing file for a derived name; -o replaces', async () => {
    s.route('/report.pdf', { body: 'new content' });
    fs.writeFileSync(path.join(t.downloads, 'report.pdf'), 'precious');
    const [a] = await add([s.url('/report.pdf')]);
    const [b] = await add([s.url('/report.pdf')]);
    const done = await waitFinal(t, [a.id, b.id]);
    const outputs = done.map((d) => path.basename(d.output)).sort();
    expect(outputs).toEqual(['report.1.pdf', 'report.2.pdf']);
    expect(fs.readFileSync(path.join(t.downloads, 'report.pdf'), 'utf8')).toBe('precious');
    const [c] = await add([s.url('/report.pdf'), '-o', 'report.pdf']);
    await waitFinal(t, [c.id]);
    expect(fs.readFileSync(path.join(t.downloads, 'report.pdf'), 'utf8')).toBe('new content');
  });

  it('uses the URL segment, then index.html, and creates -d directories', async () => {
    s.route('/', { body: 'root' });
    s.route('/dir/some%20file.txt', { body: 'seg' });
    const [a, b] = await add([s.url('/'), s.url('/dir/some%20file.txt'), '-d', 'new/sub']);
    const done = await waitFinal(t, [a.id, b.id]);
    expect(done.map((d) => path.relative(t.downloads, d.output))).toEqual(['new/sub/index.html', 'new/sub/some file.txt']);
  });
});

describe('sessions, config and the worker', () => {
  it('tasks go to named sessions; session list counts them', async () => {
    s.route('/x', { body: 'x' });
    const [a] = await add([s.url('/x'), '-s', 'nightly', '-o', 'x1']);
    const [b] = await add([s.url('/x'), '-o', 'x2'], );
    await waitFinal(t, [a.id, b.id]);
    const r = await t.bgdl(['session', 'list', '--json']);
    const list = JSON.parse(r.stdout);
    expect(list.map((x: any) => [x.name, x.counts.completed])).toEqual([['default', 1], ['nightly', 1]]);
    const only = await t.bgdl(['status', '-s', 'nightly', '--json']);
    expect(JSON.parse(only.stdout).map((x: any) => x.id)).toEqual([a.id]);
  });

  it('config set/get/list validates keys and values', async () => {
    expect((await t.bgdl(['config', 'set', 'maxConcurrent', '3'])).code).toBe(0);
    expect((await t.bgdl(['config', 'get', 'maxConcurrent'])).stdout).toBe('3\n');
    expect((await t.bgdl(['config', 'set', 'stallTimeout', '90s'])).code).toBe(0);
    const list = JSON.parse((await t.bgdl(['config', 'list', '--json'])).stdout);
    expect(list).toMatchObject({ maxConcurrent: '3', perHost: '6', stallTimeout: '90s', resourceTimeout: '7d' });
    expect((await t.bgdl(['config', 'set', 'maxConcurrent', 'default'])).code).toBe(0);
    expect((await t.bgdl(['config', 'get', 'maxConcurrent'])).stdout).toBe('8\n');
  });

  it('a --suspended task waits for resume', async () => {
    s.route('/later.bin', { body: { size: 2000 } });
    const [task] = await add([s.url('/later.bin'), '--suspended']);
    expect(task.state).toBe('paused');
    expect(t.workerPid()).toBeNull();
    expect(s.hits('/later.bin')).toBe(0);
    const r = await t.bgdl(['resume', String(task.id)]);
    expect(r.code).toBe(0);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
  });

  it('status starts a worker when work was left behind by a dead one', async () => {
    s.route('/later.bin', { body: { size: 2000 } });
    const [task] = await add([s.url('/later.bin'), '--begin-at', '2s']);
    const pid = await waitUntil(() => t.workerPid(), 5000, 'a worker');
    process.kill(pid, 'SIGKILL');
    await waitUntil(() => !alive(pid), 5000, 'the worker to die');
    await waitUntil(() => Date.now() > new Date(task.beginAt).getTime(), 5000, 'begin-at');
    expect(s.hits('/later.bin')).toBe(0);
    await t.bgdl(['status']);
    const next = await waitUntil(() => t.workerPid() !== pid && t.workerPid(), 5000, 'a new worker');
    expect(next).not.toBe(pid);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
  });
});
