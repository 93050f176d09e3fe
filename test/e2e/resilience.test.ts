// Transfers that survive: pause and resume, retries, stalls, crashes, full disks, verification.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { alive, statusJson, testdir, waitFinal, waitUntil, type TestDir, addJson as addJsonIn } from '../helpers/cli.js';
import { bodyFor, sha256, startServer, type TestServer } from '../helpers/server.js';

let t: TestDir;
let s: TestServer;
beforeEach(async () => {
  t = await testdir();
  s = await startServer();
  // Small backoffs so retries happen within a test.
  t.setConfig({ retryBaseDelay: '100ms' });
  t.setConfig({ retryMaxDelay: '500ms' });
});
afterEach(async () => {
  await t.cleanup();
  await s.close();
});

const addJson = (args: string[]) => addJsonIn(t, args);

const file = (name: string) => path.join(t.downloads, name);
const SIZE = 2_000_000;

/**
 * Add a task for `route` (served slowly), let 200 KB arrive, and pause it: paused in the store at once,
 * and stopped once the worker has recorded where the file stands.
 */
async function pausedPartWay(route: string): Promise<{ id: number }> {
  const [task] = await addJson([s.url(route)]);
  await waitUntil(async () => (await statusJson(t, [task.id]))[0].bytesReceived > 200_000, 15_000, 'some bytes');
  expect((await t.bgdl(['pause', String(task.id)])).code).toBe(0);
  await waitUntil(async () => (await t.bgdl(['log'])).stdout.includes(`task ${task.id}: paused at byte`), 5000, 'the worker to stop the transfer');
  return task;
}

describe('resume', () => {
  it('pause holds (no bytes arrive) and resume continues with Range + If-Range', async () => {
    s.route('/big.bin', { body: { size: SIZE }, etag: '"v1"', throttle: 400_000 });
    const task = await pausedPartWay('/big.bin');
    const paused = await waitUntil(async () => {
      const [x] = await statusJson(t, [task.id]);
      return x.state === 'paused' && x.speed === null ? x : null;
    }, 5000, 'the pause');
    const requestsBefore = s.requestsTo('/big.bin').length;
    const sizeBefore = fs.statSync(file('big.bin.bgdl-part')).size;
    await new Promise((r) => setTimeout(r, 1200)); // a pause must hold: nothing may arrive meanwhile
    expect(fs.statSync(file('big.bin.bgdl-part')).size).toBe(sizeBefore);
    expect(s.requestsTo('/big.bin').length).toBe(requestsBefore);
    expect(paused.bytesReceived).toBeGreaterThan(0);
    expect((await t.bgdl(['resume', String(task.id)])).code).toBe(0);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('big.bin')))).toBe(sha256(bodyFor(SIZE)));
    const second = s.requestsTo('/big.bin').at(-1)!;
    expect(second.headers.range).toMatch(/^bytes=\d+-$/);
    expect(Number(second.headers.range!.slice(6, -1))).toBeGreaterThan(0);
    expect(second.headers['if-range']).toBe('"v1"');
  });

  it('after kill -9 of the worker mid-transfer, the next command resumes byte-identical', async () => {
    s.route('/crash.bin', { body: { size: SIZE }, etag: '"c1"', throttle: 500_000 });
    const [task] = await addJson([s.url('/crash.bin')]);
    // Wait until a resume point is durable (the worker fsyncs about once a second).
    await waitUntil(async () => fs.existsSync(file('crash.bin.bgdl-part')) && (await statusJson(t, [task.id]))[0].bytesReceived > 600_000, 15_000, 'progress');
    await new Promise((r) => setTimeout(r, 1100));
    const pid = t.workerPid()!;
    process.kill(pid, 'SIGKILL');
    await waitUntil(() => !alive(pid), 5000, 'the worker to die');
    await statusJson(t, [task.id]); // any command re-attaches a worker
    const next = await waitUntil(() => (t.workerPid() !== pid ? t.workerPid() : null), 5000, 'a new worker');
    expect(alive(next)).toBe(true);
    const [done] = await waitFinal(t, [task.id], 30_000);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('crash.bin')))).toBe(sha256(bodyFor(SIZE)));
    const resumed = s.requestsTo('/crash.bin').at(-1)!;
    expect(resumed.headers.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(resumed.headers['if-range']).toBe('"c1"');
    expect(done.attempts).toBe(2);
  });

  it('a large file written with direct I/O: after kill -9 the next worker resumes from the fsync\'d offset, byte-identical', async () => {
    const BIG = 40 * 1024 * 1024; // over TUNING.directMinBytes
    s.route('/large.bin', { body: { size: BIG, seed: 'L' }, etag: '"L1"', throttle: 10_000_000 });
    const [task] = await addJson([s.url('/large.bin')]);
    await waitUntil(async () => (await statusJson(t, [task.id]))[0].bytesReceived > 8_000_000, 15_000, 'progress');
    await new Promise((r) => setTimeout(r, 1100)); // a background fsync recorded a resume point
    const pid = t.workerPid()!;
    process.kill(pid, 'SIGKILL');
    await waitUntil(() => !alive(pid), 5000, 'the worker to die');
    await statusJson(t, [task.id]);
    const [done] = await waitFinal(t, [task.id], 60_000);
    expect(done.state).toBe('completed');
    expect(done.sha256).toBe(sha256(bodyFor(BIG, 'L')));
    expect(sha256(fs.readFileSync(file('large.bin')))).toBe(sha256(bodyFor(BIG, 'L')));
    const resumed = s.requestsTo('/large.bin').at(-1)!;
    expect(resumed.headers.range).toMatch(/^bytes=[1-9]\d*-$/);
    // Its writes could finish in any order: only the fsync'd offset is trusted, not the file's length.
    expect((await t.bgdl(['log'])).stdout).toMatch(new RegExp(`task ${task.id}: resuming from byte [1-9]\\d* of`));
  }, 60_000);

  it('a large file written with direct I/O: pause part-way, resume in the same worker from every byte kept, byte-identical', async () => {
    const BIG = 40 * 1024 * 1024;
    // 7 MB/s in pieces the server cuts: the pause lands at an offset no block boundary promises.
    s.route('/large2.bin', { body: { size: BIG, seed: 'P' }, etag: '"P1"', throttle: 7_000_000 });
    const [task] = await addJson([s.url('/large2.bin')]);
    await waitUntil(async () => (await statusJson(t, [task.id]))[0].bytesReceived > 5_000_000, 15_000, 'progress');
    expect((await t.bgdl(['pause', String(task.id)])).code).toBe(0);
    const log = await waitUntil(async () => {
      const out = (await t.bgdl(['log'])).stdout;
      return out.includes(`task ${task.id}: paused at byte`) ? out : null;
    }, 5000, 'the worker to stop the transfer');
    const kept = Number(new RegExp(`task ${task.id}: paused at byte (\\d+)`).exec(log)![1]);
    expect(fs.statSync(file('large2.bin.bgdl-part')).size).toBe(kept);
    expect(bodyFor(BIG, 'P').subarray(0, kept).equals(fs.readFileSync(file('large2.bin.bgdl-part')))).toBe(true);
    expect((await t.bgdl(['resume', String(task.id)])).code).toBe(0);
    const [done] = await waitFinal(t, [task.id], 60_000);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('large2.bin')))).toBe(sha256(bodyFor(BIG, 'P')));
    expect(s.requestsTo('/large2.bin').at(-1)!.headers.range).toBe(`bytes=${kept}-`);
  }, 60_000);

  it('SIGTERM stops the worker cleanly (exit 0) and the next worker resumes', async () => {
    s.route('/term.bin', { body: { size: SIZE }, lastModified: 'Tue, 01 Sep 2026 10:00:00 GMT', throttle: 500_000 });
    const [task] = await addJson([s.url('/term.bin')]);
    await waitUntil(async () => (await statusJson(t, [task.id]))[0].bytesReceived > 300_000, 15_000, 'progress');
    const pid = t.workerPid()!;
    process.kill(pid, 'SIGTERM');
    await waitUntil(() => !alive(pid), 5000, 'the worker to stop');
    const log = (await t.bgdl(['log'])).stdout;
    expect(log).toMatch(/stopped by worker shutdown at byte \d+/);
    const [done] = await waitFinal(t, [task.id], 30_000);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('term.bin')))).toBe(sha256(bodyFor(SIZE)));
    expect(s.requestsTo('/term.bin').at(-1)!.headers['if-range']).toBe('Tue, 01 Sep 2026 10:00:00 GMT');
  });

  it('bgdl worker in the foreground exits 0 on SIGTERM with the offset recorded', async () => {
    s.route('/fg.bin', { body: { size: SIZE }, etag: '"fg"', throttle: 500_000 });
    const [task] = await addJson([s.url('/fg.bin'), '--suspended']);
    const { spawn } = await import('node:child_process');
    const { BIN } = await import('../helpers/cli.js');
    const fg = spawn(process.execPath, [BIN, 'worker'], { env: t.env, cwd: t.downloads, stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => fg.on('exit', (code) => resolve(code)));
    await waitUntil(() => t.workerPid() === fg.pid, 5000, 'the foreground worker to hold the lease');
    await t.bgdl(['resume', String(task.id)]);
    await waitUntil(async () => (await statusJson(t, [task.id]))[0].bytesReceived > 200_000, 15_000, 'progress');
    fg.kill('SIGTERM');
    expect(await exited).toBe(0);
    const [after] = await statusJson(t, [task.id]);
    expect(after.state).toBe('queued');
    expect(after.bytesReceived).toBeGreaterThan(0);
    expect(fs.statSync(file('fg.bin.bgdl-part')).size).toBeGreaterThanOrEqual(after.bytesReceived);
    await t.bgdl(['cancel', String(task.id)]);
  });

  it('a resumed task answered with no body (204) completes without a file and leaves no partial file behind', async () => {
    s.route('/gone.bin', { body: { size: SIZE }, etag: '"g1"', throttle: 400_000 });
    const task = await pausedPartWay('/gone.bin');
    expect(fs.existsSync(file('gone.bin.bgdl-part'))).toBe(true);
    s.route('/gone.bin', { status: 204 });
    expect((await t.bgdl(['resume', String(task.id)])).code).toBe(0);
    const [done] = await waitFinal(t, [task.id]);
    expect(done).toMatchObject({ state: 'completed', httpStatus: 204, output: null });
    expect(s.requestsTo('/gone.bin').at(-1)!.headers.range).toMatch(/^bytes=\d+-$/);
    expect(fs.readdirSync(t.downloads)).toEqual([]);
  });

  it('a server that ignores Range makes the download start over, never splicing', async () => {
    s.route('/norange.bin', { body: { size: 500_000 }, etag: '"n1"', ranges: false, dropAfter: { bytes: 200_000, times: 1 } });
    const [task] = await addJson([s.url('/norange.bin')]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('norange.bin')))).toBe(sha256(bodyFor(500_000)));
  });

  it('a changed ETag restarts the transfer instead of appending', async () => {
    s.route('/changing.bin', { body: { size: 500_000 }, etag: 'per-request', dropAfter: { bytes: 200_000, times: 1 } });
    const [task] = await addJson([s.url('/changing.bin')]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('changing.bin')))).toBe(sha256(bodyFor(500_000)));
    const reqs = s.requestsTo('/changing.bin');
    expect(reqs.length).toBeGreaterThanOrEqual(2);
  });

  it('cancel removes the partial file; retry queues the task again', async () => {
    s.route('/c.bin', { body: { size: SIZE }, throttle: 300_000 });
    const [task] = await addJson([s.url('/c.bin')]);
    await waitUntil(() => fs.existsSync(file('c.bin.bgdl-part')), 10_000, 'the partial file');
    expect((await t.bgdl(['cancel', String(task.id)])).code).toBe(0);
    await waitUntil(() => !fs.existsSync(file('c.bin.bgdl-part')), 5000, 'the partial file to go');
    expect((await statusJson(t, [task.id]))[0].state).toBe('canceled');
    s.route('/c.bin', { body: { size: SIZE } });
    expect((await t.bgdl(['retry', String(task.id)])).code).toBe(0);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(fs.readFileSync(file('c.bin')).equals(bodyFor(SIZE))).toBe(true);
  });
});

describe('retries and failure classification', () => {
  it('a dropped connection is retried and resumed', async () => {
    s.route('/drop.bin', { body: { size: 800_000 }, etag: '"d"', dropAfter: { bytes: 300_000, times: 2 } });
    const [task] = await addJson([s.url('/drop.bin')]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(done.attempts).toBe(3);
    expect(sha256(fs.readFileSync(file('drop.bin')))).toBe(sha256(bodyFor(800_000)));
  });

  it('a short body is transient', async () => {
    s.route('/short.bin', { body: { size: 100_000 }, shortBody: { bytes: 40_000, times: 1 } });
    const [task] = await addJson([s.url('/short.bin')]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done).toMatchObject({ state: 'completed', attempts: 2, bytesReceived: 100_000 });
  });

  it('503 with Retry-After waits that long, shown as waitingFor retry with the last error', async () => {
    s.route('/busy.bin', { body: 'ok', status503: { times: 1, retryAfter: '2' } });
    const [task] = await addJson([s.url('/busy.bin')]);
    const waiting = await waitUntil(async () => {
      const [x] = await statusJson(t, [task.id]);
      return x.waitingFor === 'retry' ? x : null;
    }, 10_000, 'the retry wait');
    expect(waiting.error).toMatchObject({ code: 'E_HTTP_STATUS' });
    expect(waiting.attempts).toBe(1);
    const first = Date.now();
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(done.error).toBeNull();
    const times = s.requests.filter((r) => r.path === '/busy.bin');
    expect(times).toHaveLength(2);
    expect(Date.now() - first).toBeGreaterThan(500);
  });

  it('a stall aborts the attempt after stallTimeout and the retry completes', async () => {
    t.setConfig({ stallTimeout: '500ms' });
    s.route('/stall.bin', { body: { size: 200_000 }, etag: '"s"', stallAfter: { bytes: 50_000, ms: 5000, times: 1 } });
    const [task] = await addJson([s.url('/stall.bin')]);
    const [done] = await waitFinal(t, [task.id], 20_000);
    expect(done).toMatchObject({ state: 'completed', attempts: 2 });
    const log = (await t.bgdl(['log'])).stdout;
    expect(log).toMatch(/E_STALL/);
  });

  it('a 403 fails at once; a connection refused is retried', async () => {
    s.route('/forbidden', { status: 403, body: 'no' });
    const [a] = await addJson([s.url('/forbidden')]);
    const [done] = await waitFinal(t, [a.id]);
    expect(done).toMatchObject({ state: 'failed', attempts: 1, httpStatus: 403, error: { code: 'E_HTTP_STATUS' } });
    const [b] = await addJson(['http://127.0.0.1:9/refused.bin']);
    const waiting = await waitUntil(async () => {
      const [x] = await statusJson(t, [b.id]);
      return x.attempts >= 2 ? x : null;
    }, 10_000, 'two attempts');
    expect(waiting.error.code).toBe('E_CONNECTION');
    await t.bgdl(['cancel', String(b.id)]);
  });

  it('resourceTimeout fails a task that cannot finish', async () => {
    t.setConfig({ resourceTimeout: '1s' });
    const [task] = await addJson(['http://127.0.0.1:9/never.bin']);
    const [done] = await waitFinal(t, [task.id], 20_000);
    expect(done).toMatchObject({ state: 'failed', error: { code: 'E_RESOURCE_TIMEOUT' } });
  });
});

describe('verification and disk', () => {
  it('--sha256 mismatch fails and leaves nothing at the destination', async () => {
    s.route('/v.bin', { body: { size: 10_000 } });
    const [bad] = await addJson([s.url('/v.bin'), '--sha256', 'a'.repeat(64), '-o', 'bad.bin']);
    const [good] = await addJson([s.url('/v.bin'), '--sha256', sha256(bodyFor(10_000)), '-o', 'good.bin']);
    const done = await waitFinal(t, [bad.id, good.id]);
    expect(done[0]).toMatchObject({ state: 'failed', error: { code: 'E_CHECKSUM' } });
    expect(fs.existsSync(file('bad.bin'))).toBe(false);
    expect(fs.existsSync(file('bad.bin.bgdl-part'))).toBe(false);
    expect(done[1]).toMatchObject({ state: 'completed', sha256: sha256(bodyFor(10_000)) });
  });

  it('a full disk keeps the partial file, waits for disk-space, then resumes when space appears', async () => {
    const mnt = path.join(t.dir, 'small');
    fs.mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    try {
      const filler = path.join(mnt, 'filler');
      fs.writeFileSync(filler, Buffer.alloc(700 * 1024));
      s.route('/fill.bin', { body: { size: 600_000 }, etag: '"f"' });
      const [task] = await addJson([s.url('/fill.bin'), '-o', path.join(mnt, 'fill.bin')]);
      const waiting = await waitUntil(async () => {
        const [x] = await statusJson(t, [task.id]);
        return x.waitingFor === 'disk-space' ? x : null;
      }, 15_000, 'waitingFor disk-space');
      expect(waiting.state).toBe('queued');
      expect(fs.existsSync(path.join(mnt, 'fill.bin'))).toBe(false);
      fs.rmSync(filler);
      const [done] = await waitFinal(t, [task.id], 30_000);
      expect(done.state).toBe('completed');
      expect(sha256(fs.readFileSync(path.join(mnt, 'fill.bin')))).toBe(sha256(bodyFor(600_000)));

      // Without a Content-Length nothing can be checked up front: ENOSPC strikes mid-transfer.
      fs.rmSync(path.join(mnt, 'fill.bin'));
      fs.writeFileSync(filler, Buffer.alloc(700 * 1024));
      s.route('/chunked.bin', { body: { size: 600_000, seed: 'c' }, etag: '"ch"', chunked: true });
      const [mid] = await addJson([s.url('/chunked.bin'), '-o', path.join(mnt, 'chunked.bin')]);
      const held = await waitUntil(async () => {
        const [x] = await statusJson(t, [mid.id]);
        return x.waitingFor === 'disk-space' ? x : null;
      }, 15_000, 'ENOSPC to hold the task');
      expect(held.error.code).toBe('E_DISK_SPACE');
      expect(fs.existsSync(path.join(mnt, 'chunked.bin'))).toBe(false);
      fs.rmSync(filler);
      const [fin] = await waitFinal(t, [mid.id], 30_000);
      expect(fin.state).toBe('completed');
      expect(sha256(fs.readFileSync(path.join(mnt, 'chunked.bin')))).toBe(sha256(bodyFor(600_000, 'c')));
    } finally {
      await t.cleanup().catch(() => {});
      execFileSync('umount', ['-l', mnt]);
    }
  }, 60_000);
});
