// When a task may start (begin-at, discretionary conditions, expected sizes), uploads from files,
// and `worker --ensure` for cron and reboots.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BIN, statusJson, stopWorker, testdir, waitFinal, waitUntil, type TestDir } from '../helpers/cli.js';
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

async function addJson(args: string[], cmd = 'add'): Promise<any[]> {
  const r = await t.bgdl([cmd, '--json', ...args]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

function powerSupply(state: 'battery' | 'mains'): void {
  const dir = t.env.BGDL_POWER_SUPPLY_DIR!;
  fs.mkdirSync(path.join(dir, 'BAT0'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'AC'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'BAT0', 'type'), 'Battery\n');
  fs.writeFileSync(path.join(dir, 'BAT0', 'status'), state === 'battery' ? 'Discharging\n' : 'Charging\n');
  fs.writeFileSync(path.join(dir, 'AC', 'type'), 'Mains\n');
  fs.writeFileSync(path.join(dir, 'AC', 'online'), state === 'battery' ? '0\n' : '1\n');
}

describe('begin-at', () => {
  it('never starts a task before its time; the worker sleeps until then', async () => {
    s.route('/later.bin', { body: { size: 1000 } });
    const [task] = await addJson([s.url('/later.bin'), '--begin-at', '2s']);
    const beginAt = new Date(task.beginAt).getTime();
    const delay = beginAt - new Date(task.createdAt).getTime();
    expect(delay).toBeGreaterThan(1800);
    expect(delay).toBeLessThanOrEqual(2000);
    const [waiting] = await statusJson(t, [task.id]);
    expect(waiting).toMatchObject({ state: 'queued', waitingFor: 'begin-at' });
    expect(t.workerPid()).toBeTruthy(); // a future task keeps a worker alive, sleeping
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(new Date(done.startedAt).getTime()).toBeGreaterThanOrEqual(beginAt);
    expect(s.hits('/later.bin')).toBe(1);
  });

  it('accepts an ISO 8601 time and shows it', async () => {
    const [task] = await addJson(['http://127.0.0.1:9/x', '--begin-at', '2099-01-02T03:04:05Z']);
    expect(task.beginAt).toBe('2099-01-02T03:04:05.000Z');
    expect(task.waitingFor).toBe('begin-at');
  });
});

describe('discretionary tasks', () => {
  it('wait on battery power, say why, and start on mains', async () => {
    powerSupply('battery');
    s.route('/disc.bin', { body: { size: 5000 } });
    const [task] = await addJson([s.url('/disc.bin'), '--discretionary']);
    expect(task.discretionary).toBe(true);
    const held = await waitUntil(async () => {
      const [x] = await statusJson(t, [task.id]);
      return x.waitingFor === 'conditions' ? x : null;
    }, 10_000, 'waitingFor conditions');
    expect(held.waitDetail).toBe('on battery power');
    expect((await t.bgdl(['status'])).stdout).toMatch(/conditions: on battery power/);
    expect(s.hits('/disc.bin')).toBe(0);
    powerSupply('mains');
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
  });

  it('wait while the machine is busy (load at or above discretionaryMaxLoad)', async () => {
    // The test environment pins the load average at 0 (BGDL_LOADAVG); this one says 3.
    await t.cleanup();
    t = await testdir({ BGDL_LOADAVG: '3' });
    t.setConfig({ discretionaryMaxLoad: '1.5' });
    s.route('/busy.bin', { body: 'b' });
    const [busy] = await addJson([s.url('/busy.bin'), '--discretionary']);
    const held = await waitUntil(async () => {
      const [x] = await statusJson(t, [busy.id]);
      return x.waitingFor === 'conditions' ? x : null;
    }, 10_000, 'waitingFor conditions');
    expect(held.waitDetail).toMatch(/machine busy \(load 3\.00 >= 1\.5\)/);
    expect(s.hits('/busy.bin')).toBe(0);
  });

  it('a session default makes its tasks discretionary; --no-discretionary overrides', async () => {
    await t.bgdl(['session', 'create', 'bg', '--discretionary']);
    const [a] = await addJson(['http://127.0.0.1:9/a', '-s', 'bg', '--suspended']);
    const [b] = await addJson(['http://127.0.0.1:9/b', '-s', 'bg', '--suspended', '--no-discretionary']);
    expect([a.discretionary, b.discretionary]).toEqual([true, false]);
  });

  it('tasks added from a hook (BGDL_HOOK=1) are discretionary unless --no-discretionary', async () => {
    const a = JSON.parse((await t.bgdl(['add', '--json', '--suspended', 'http://127.0.0.1:9/a'], { env: { BGDL_HOOK: '1' } })).stdout)[0];
    const b = JSON.parse((await t.bgdl(['add', '--json', '--suspended', '--no-discretionary', 'http://127.0.0.1:9/b'], { env: { BGDL_HOOK: '1' } })).stdout)[0];
    expect([a.discretionary, b.discretionary]).toEqual([true, false]);
  });
});

describe('expected sizes', () => {
  it('--expect-receive is the progress total until the server says otherwise, and is kept', async () => {
    s.route('/chunked.bin', { body: { size: 300_000 }, chunked: true, throttle: 200_000 });
    const [task] = await addJson([s.url('/chunked.bin'), '--expect-receive', '100K']);
    expect(task).toMatchObject({ expectReceive: 100_000, bytesExpected: 100_000 });
    const [done] = await waitFinal(t, [task.id]);
    expect(done).toMatchObject({ state: 'completed', bytesReceived: 300_000, expectReceive: 100_000 });
    const log = (await t.bgdl(['log'])).stdout;
    expect(log).toMatch(/more than twice the expected 100000/);
  });
});

describe('uploads', () => {
  function makeFile(name: string, size: number): string {
    const p = path.join(t.downloads, name);
    fs.writeFileSync(p, bodyFor(size, name));
    return p;
  }

  it.each(['PUT', 'POST'])('%s streams the file byte-identical and keeps the response body', async (method) => {
    const file = makeFile(`up-${method}.bin`, 250_000);
    s.route('/upload', { upload: { status: 201, body: `stored ${method}\n` } });
    const [task] = await addJson([path.basename(file), s.url('/upload'), '-X', method], 'upload');
    expect(task).toMatchObject({ kind: 'upload', method, uploadFile: file });
    const [done] = await waitFinal(t, [task.id]);
    expect(done).toMatchObject({ state: 'completed', httpStatus: 201, bytesSent: 250_000, responseBody: `stored ${method}\n` });
    const req = s.requestsTo('/upload')[0]!;
    expect(req.method).toBe(method);
    expect(req.bodyLength).toBe(250_000);
    expect(req.bodySha256).toBe(sha256(fs.readFileSync(file)));
    expect(req.headers['content-length']).toBe('250000');
    const detail = (await t.bgdl(['status', String(task.id)])).stdout;
    expect(detail).toMatch(/response body:\nstored/);
    const events = JSON.parse((await t.bgdl(['events', '--json'])).stdout);
    expect(events[0]).toMatchObject({ type: 'completed', responseBody: `stored ${method}\n`, bytes: 250_000 });
  });

  it('a dropped upload is retried from the start of the file', async () => {
    t.setConfig({ retryBaseDelay: '100ms' });
    const file = makeFile('drop.bin', 300_000);
    s.route('/flaky-up', { upload: true, failTimes: { status: 503, times: 1 } });
    const [task] = await addJson([file, s.url('/flaky-up')], 'upload');
    const [done] = await waitFinal(t, [task.id]);
    expect(done).toMatchObject({ state: 'completed', attempts: 2 });
    const reqs = s.requestsTo('/flaky-up');
    expect(reqs.at(-1)!.bodySha256).toBe(sha256(fs.readFileSync(file)));
  });

  it('307 re-sends the file; 303 follows with GET', async () => {
    const file = makeFile('redir.bin', 10_000);
    s.route('/up-307', { redirect: { to: '/up-final', status: 307 } });
    s.route('/up-303', { redirect: { to: '/up-get', status: 303 } });
    s.route('/up-final', { upload: true });
    s.route('/up-get', { body: 'done' });
    const [a] = await addJson([file, s.url('/up-307')], 'upload');
    const [b] = await addJson([file, s.url('/up-303'), '-X', 'POST'], 'upload');
    const done = await waitFinal(t, [a.id, b.id]);
    expect(done[0]).toMatchObject({ state: 'completed', finalUrl: s.url('/up-final') });
    expect(s.requestsTo('/up-final')[0]).toMatchObject({ method: 'PUT', bodyLength: 10_000 });
    expect(done[1]).toMatchObject({ state: 'completed', finalUrl: s.url('/up-get'), responseBody: 'done' });
    expect(s.requestsTo('/up-get')[0]!.method).toBe('GET');
  });

  it('a file that changed size since bgdl upload fails with a clear error', async () => {
    const file = makeFile('grow.bin', 1000);
    s.route('/u', { upload: true });
    const [task] = await addJson([file, s.url('/u'), '--suspended'], 'upload');
    fs.appendFileSync(file, 'more');
    await t.bgdl(['resume', String(task.id)]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done).toMatchObject({ state: 'failed', error: { code: 'E_UPLOAD_SOURCE' } });
    expect(done.error.message).toMatch(/changed size/);
    expect(s.hits('/u')).toBe(0);
  });
});

describe('worker --ensure', () => {
  it('starts exactly one worker when there is work, and none when there is not', async () => {
    const idle = await t.bgdl(['worker', '--ensure']);
    expect(idle).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(workerPids(t.home)).toEqual([]);
    // Work left behind with no worker (as after a reboot): the queue holds a task for later.
    await addJson(['http://127.0.0.1:9/x', '--begin-at', '1h']);
    const first = await waitUntil(() => t.workerPid(), 5000, 'a worker');
    process.kill(first, 'SIGKILL');
    await waitUntil(() => workerPids(t.home).length === 0, 5000, 'no worker');
    const runs = await Promise.all(Array.from({ length: 5 }, () => t.bgdl(['worker', '--ensure'])));
    for (const r of runs) expect(r).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const pids = await waitUntil(() => {
      const p = workerPids(t.home);
      return p.length === 1 && p[0] === t.workerPid() ? p : null;
    }, 10_000, 'exactly one worker');
    expect(pids).toHaveLength(1);
  });
});

describe("add's head start: a held worker", () => {
  it('becomes the one worker, started once, and leaves nothing of itself to the hooks it runs', async () => {
    s.route('/a.bin', { body: { size: 5000 } });
    const envFile = path.join(t.dir, 'hook-env');
    expect((await t.bgdl(['session', 'create', 'h', '--hook', `env > '${envFile}'`])).code).toBe(0);
    const [task] = await addJson(['-s', 'h', s.url('/a.bin')]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    const env = await waitUntil(() => fs.existsSync(envFile) && fs.readFileSync(envFile, 'utf8'), 10_000, 'the hook');
    expect(env).toMatch(/^BGDL_SESSION=h$/m);
    expect(env).not.toMatch(/BGDL_WORKER_HELD/);
    const log = fs.readFileSync(path.join(t.home, 'bgdl.log'), 'utf8');
    expect(log.match(/\[worker\] started \(pid/g)).toHaveLength(1);
    expect(log).not.toMatch(/not starting/);
  });

  it('add and upload start their worker held; status starts one the usual way', async () => {
    // The environment a process was started with stays readable in /proc after it takes the variable out.
    const startedHeld = (pid: number) => fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes('BGDL_WORKER_HELD=1');
    fs.writeFileSync(path.join(t.downloads, 'up.bin'), 'x'.repeat(1000));
    const commands = [
      ['add', 'http://127.0.0.1:9/later', '--begin-at', '1h'],
      ['upload', 'up.bin', 'http://127.0.0.1:9/up', '--begin-at', '1h'],
    ];
    for (const args of commands) {
      expect((await t.bgdl(args)).code).toBe(0);
      const pid = await waitUntil(() => t.workerPid(), 5000, `the worker of ${args[0]}`);
      expect(startedHeld(pid), args[0]).toBe(true);
      await stopWorker(t.home);
    }
    expect((await t.bgdl(['status'])).code).toBe(0);
    const pid = await waitUntil(() => t.workerPid(), 5000, 'the worker of status');
    expect(startedHeld(pid)).toBe(false);
  });

  it('is not started while a live worker holds the lease', async () => {
    await addJson(['http://127.0.0.1:9/later', '--begin-at', '1h']);
    const worker = await waitUntil(() => t.workerPid(), 5000, 'a worker');
    let most = 0;
    const adding = t.bgdl(['add', '--begin-at', '1h', ...Array.from({ length: 5 }, (_, i) => `http://127.0.0.1:9/more${i}`)]);
    let finished = false;
    void adding.then(() => (finished = true));
    while (!finished) {
      most = Math.max(most, workerPids(t.home).length);
      await new Promise((r) => setTimeout(r, 2));
    }
    expect((await adding).code).toBe(0);
    expect(most).toBe(1);
    expect(workerPids(t.home)).toEqual([worker]);
  });

  it('touches nothing and exits when its add fails or dies before the go', async () => {
    // Refused input: no home, and the held worker is gone soon after.
    const r = await t.bgdl(['add', 'http://127.0.0.1:9/x', '--sha256', 'abc']);
    expect(r.code).toBe(2);
    await waitUntil(() => workerPids(t.home).length === 0, 5000, 'no held worker');
    expect(fs.existsSync(t.home)).toBe(false);
    // An add reading its URLs from stdin, killed while it reads: its held worker waits, then goes.
    const add = spawn(process.execPath, [BIN, 'add', '-i', '-'], { env: t.env, cwd: t.downloads, stdio: ['pipe', 'ignore', 'ignore'] });
    add.stdin.write('http://127.0.0.1:9/y\n');
    const [held] = await waitUntil(() => (workerPids(t.home).length === 1 ? workerPids(t.home) : null), 5000, 'the held worker');
    add.kill('SIGKILL');
    await waitUntil(() => workerPids(t.home).length === 0, 5000, `held worker ${held} to exit`);
    expect(fs.existsSync(t.home)).toBe(false);
  });
});
