// One owner per partial file: a frozen worker that wakes up changes nothing, a crash keeps every byte
// written, cancel cleans up without a worker, and two stores never share a partial file.

import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { alive, statusJson, testdir, waitFinal, waitUntil, type TestDir } from '../helpers/cli.js';
import { bodyFor, sha256, startServer, type TestServer } from '../helpers/server.js';

let t: TestDir;
let s: TestServer;
const extra: TestDir[] = [];
beforeEach(async () => {
  t = await testdir();
  s = await startServer();
  t.setConfig({ retryBaseDelay: '100ms', retryMaxDelay: '500ms' });
});
afterEach(async () => {
  for (const pid of stopped.splice(0)) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      /* gone */
    }
  }
  for (const x of extra.splice(0)) await x.cleanup();
  await t.cleanup();
  await s.close();
});
const stopped: number[] = [];

async function addJson(dir: TestDir, args: string[]): Promise<any[]> {
  const r = await dir.bgdl(['add', '--json', ...args]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

/** Partial files in `dir` (any lineage name ends in .bgdl-part). */
const partsIn = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith('.bgdl-part'));

function eventsOf(dir: TestDir, taskId: number): { type: string }[] {
  const db = new Database(path.join(dir.home, 'bgdl.db'), { readonly: true, timeout: 5000 });
  try {
    return db.prepare('SELECT type FROM events WHERE task_id = ? ORDER BY id').all(taskId) as { type: string }[];
  } finally {
    db.close();
  }
}

describe('a frozen worker wakes up', () => {
  it('the second worker takes the task over; the first, woken, changes nothing: right file, one event, one hook run', async () => {
    const SIZE = 1_500_000;
    t.setConfig({ leaseTimeout: '3s' });
    const hookRuns = path.join(t.dir, 'hook-runs');
    expect((await t.bgdl(['session', 'create', 'fz', '--hook', `echo ran >> "${hookRuns}"`])).code).toBe(0);
    s.route('/frozen.bin', { body: { size: SIZE }, etag: '"fz1"', throttle: 300_000 });
    const [task] = await addJson(t, ['-s', 'fz', s.url('/frozen.bin'), '-o', 'frozen.bin']);
    await waitUntil(async () => (await statusJson(t, [task.id]))[0].bytesReceived > 150_000, 15_000, 'progress of the first worker');
    const first = t.workerPid()!;
    process.kill(first, 'SIGSTOP');
    stopped.push(first);
    // Any command finds the lease lapsed (the pid is alive but silent) and starts a second worker.
    const second = await waitUntil(async () => {
      await t.bgdl(['status']);
      const pid = t.workerPid();
      return pid && pid !== first ? pid : null;
    }, 15_000, 'a second worker');
    const requestsBefore = s.requestsTo('/frozen.bin').length;
    await waitUntil(() => s.requestsTo('/frozen.bin').length > requestsBefore, 10_000, 'the second worker to resume the transfer');
    const resumed = s.requestsTo('/frozen.bin').at(-1)!;
    expect(resumed.headers.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(resumed.headers['if-range']).toBe('"fz1"');
    await waitUntil(() => resumed.bytesSent > 100_000, 10_000, 'the second worker to make progress');
    // The first one wakes up with its transfer still open and bytes waiting in its socket.
    process.kill(first, 'SIGCONT');
    const [done] = await waitFinal(t, [task.id], 30_000);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(path.join(t.downloads, 'frozen.bin')))).toBe(sha256(bodyFor(SIZE)));
    expect(done.sha256).toBe(sha256(bodyFor(SIZE)));
    await waitUntil(() => !alive(first), 10_000, 'the woken worker to give up');
    await waitUntil(() => fs.existsSync(hookRuns), 10_000, 'the hook');
    await waitUntil(() => !alive(second), 15_000, 'the second worker to finish');
    expect(eventsOf(t, task.id).map((e) => e.type)).toEqual(['completed']);
    expect(fs.readFileSync(hookRuns, 'utf8')).toBe('ran\n');
    expect(partsIn(t.downloads)).toEqual([]);
    const log = (await t.bgdl(['log'])).stdout;
    expect(log).toMatch(/lost the lease/);
  }, 60_000);
});

describe('crash recovery keeps what was written', () => {
  it('kill -9 at random points: every restart resumes from at least the bytes on disk, and the file is right', async () => {
    const SIZE = 4_000_000;
    const KILLS = 20;
    s.route('/k.bin', { body: { size: SIZE }, etag: '"k1"', throttle: 250_000 });
    const [task] = await addJson(t, [s.url('/k.bin'), '-o', 'k.bin']);
    let resumes = 0;
    for (let i = 0; i < KILLS; i++) {
      await waitUntil(() => s.requestsTo('/k.bin').length > i && t.workerPid(), 10_000, 'a running transfer');
      const before = s.requestsTo('/k.bin').length;
      // A random point: anywhere from before the first byte is written to well into the body.
      await new Promise((r) => setTimeout(r, 50 + Math.floor(Math.random() * 500)));
      const pid = t.workerPid()!;
      process.kill(pid, 'SIGKILL');
      await waitUntil(() => !alive(pid), 5000, 'the worker to die');
      const onDisk = partsIn(t.downloads).reduce((n, f) => Math.max(n, fs.statSync(path.join(t.downloads, f)).size), 0);
      await t.bgdl(['status']); // any command brings a worker back
      await waitUntil(() => s.requestsTo('/k.bin').length > before, 10_000, `the transfer to restart after kill ${i + 1}`);
      const next = s.requestsTo('/k.bin').at(-1)!;
      if (onDisk > 0) {
        expect(next.headers.range, `kill ${i + 1}: ${onDisk} bytes on disk`).toMatch(/^bytes=\d+-$/);
        expect(Number(next.headers.range!.slice(6, -1)), `kill ${i + 1}`).toBeGreaterThanOrEqual(onDisk);
        expect(next.headers['if-range']).toBe('"k1"');
        resumes++;
      }
    }
    s.route('/k.bin', { body: { size: SIZE }, etag: '"k1"' });
    const [done] = await waitFinal(t, [task.id], 30_000);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(path.join(t.downloads, 'k.bin')))).toBe(sha256(bodyFor(SIZE)));
    expect(resumes).toBeGreaterThan(KILLS / 2);
    const fetched = s.requestsTo('/k.bin').reduce((n, r) => n + r.bytesSent, 0);
    console.log(`kill -9 x${KILLS}: ${resumes} resumes, ${fetched - SIZE} bytes fetched twice (of ${SIZE})`);
  }, 90_000);
});

describe('cancel after the worker died', () => {
  it('removes the partial file at once, without a worker', async () => {
    s.route('/c.bin', { body: { size: 2_000_000 }, etag: '"c"', throttle: 300_000 });
    const [task] = await addJson(t, [s.url('/c.bin'), '-o', 'c.bin']);
    await waitUntil(async () => partsIn(t.downloads).length === 1 && (await statusJson(t, [task.id]))[0].bytesReceived > 50_000, 10_000, 'progress');
    const pid = t.workerPid()!;
    process.kill(pid, 'SIGKILL');
    await waitUntil(() => !alive(pid), 5000, 'the worker to die');
    expect(partsIn(t.downloads)).toHaveLength(1);
    expect((await t.bgdl(['cancel', String(task.id)])).code).toBe(0);
    expect(partsIn(t.downloads)).toEqual([]);
    expect((await statusJson(t, [task.id]))[0].state).toBe('canceled');
  });
});

describe('cancel while the worker is frozen', () => {
  it('the partial file left to the frozen worker is removed by the next worker', async () => {
    t.setConfig({ leaseTimeout: '3s' });
    s.route('/fc.bin', { body: { size: 2_000_000 }, etag: '"fc"', throttle: 300_000 });
    s.route('/next.bin', { body: 'next' });
    const [task] = await addJson(t, [s.url('/fc.bin'), '-o', 'fc.bin']);
    await waitUntil(async () => partsIn(t.downloads).length === 1 && (await statusJson(t, [task.id]))[0].bytesReceived > 50_000, 10_000, 'progress');
    const first = t.workerPid()!;
    process.kill(first, 'SIGSTOP');
    stopped.push(first);
    // Its lease has not lapsed yet: the command leaves the partial file to that worker.
    expect((await t.bgdl(['cancel', String(task.id)])).code).toBe(0);
    expect(partsIn(t.downloads)).toEqual(['fc.bin.bgdl-part']);
    const [other] = await addJson(t, [s.url('/next.bin'), '-o', 'next.bin']);
    await waitUntil(async () => {
      await t.bgdl(['status']);
      const pid = t.workerPid();
      return pid && pid !== first ? pid : null;
    }, 15_000, 'a second worker');
    await waitUntil(() => partsIn(t.downloads).length === 0, 10_000, 'the partial file to go');
    expect((await waitFinal(t, [other.id]))[0].state).toBe('completed');
    process.kill(first, 'SIGCONT');
    await waitUntil(() => !alive(first), 10_000, 'the woken worker to give up');
    expect(partsIn(t.downloads)).toEqual([]);
    expect(fs.existsSync(path.join(t.downloads, 'fc.bin'))).toBe(false);
    expect((await statusJson(t, [task.id]))[0].state).toBe('canceled');
  }, 60_000);
});

describe('two stores, one output', () => {
  it('the second waits (E_OUTPUT_BUSY) and never touches the first one\'s partial file; both end with the right file', async () => {
    const SIZE = 1_000_000;
    const other = await testdir();
    extra.push(other);
    other.setConfig({ retryBaseDelay: '100ms', retryMaxDelay: '300ms' });
    s.route('/shared.bin', { body: { size: SIZE }, etag: '"sh"', throttle: 300_000 });
    const out = path.join(t.downloads, 'shared.bin');
    const [a] = await addJson(t, [s.url('/shared.bin'), '-o', out]);
    const part = `${out}.bgdl-part`;
    await waitUntil(() => fs.existsSync(part) && fs.statSync(part).size > 50_000, 10_000, 'the first partial file');
    const ino = fs.statSync(part).ino;
    const [b] = await addJson(other, [s.url('/shared.bin'), '-o', out]);
    const waiting = await waitUntil(async () => {
      const [x] = await statusJson(other, [b.id]);
      return x.error?.code === 'E_OUTPUT_BUSY' ? x : null;
    }, 10_000, 'the second store to wait');
    expect(waiting.state).toBe('queued');
    expect(waiting.error.message).toContain(part);
    // Still the first one's file, growing, untouched by the second store.
    expect(fs.statSync(part).ino).toBe(ino);
    const [doneA] = await waitFinal(t, [a.id], 30_000);
    expect(doneA).toMatchObject({ state: 'completed', attempts: 1, sha256: sha256(bodyFor(SIZE)) });
    const [doneB] = await waitFinal(other, [b.id], 30_000);
    expect(doneB).toMatchObject({ state: 'completed', sha256: sha256(bodyFor(SIZE)) });
    expect(sha256(fs.readFileSync(out))).toBe(sha256(bodyFor(SIZE)));
    expect(partsIn(t.downloads)).toEqual([]);
  }, 60_000);
});

describe('stores written by an older bgdl', () => {
  it('a partial file recorded by name only is resumed from its durable offset, as before', async () => {
    const SIZE = 400_000;
    s.route('/old.bin', { body: { size: SIZE }, etag: '"o"' });
    const [task] = await addJson(t, [s.url('/old.bin'), '-o', 'old.bin', '--suspended']);
    fs.writeFileSync(path.join(t.downloads, 'old.bin.bgdl-part'), bodyFor(SIZE).subarray(0, 300_000), { mode: 0o600 });
    // What an older bgdl left: an output, validators and a durable offset, no recorded partial file.
    const db = new Database(path.join(t.home, 'bgdl.db'), { timeout: 5000 });
    db.prepare("UPDATE tasks SET resume_offset = 200000, bytes_received = 200000, etag = '\"o\"' WHERE id = ?").run(task.id);
    db.close();
    expect((await t.bgdl(['resume', String(task.id)])).code).toBe(0);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(s.requestsTo('/old.bin')[0]!.headers.range).toBe('bytes=200000-');
    expect(sha256(fs.readFileSync(path.join(t.downloads, 'old.bin')))).toBe(sha256(bodyFor(SIZE)));
  });
});
