// A download never fills the disk: --max-size / maxFileSize bound any body (with or without a
// length), and minFreeSpace keeps a reserve: below it the task waits for disk-space, keeping its part.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { statusJson, testdir, waitFinal, waitUntil, type TestDir, addJson as addJsonIn } from '../helpers/cli.js';
import { bodyFor, sha256, startServer, type TestServer } from '../helpers/server.js';

let t: TestDir;
let s: TestServer;
beforeEach(async () => {
  t = await testdir();
  s = await startServer();
  t.setConfig({ retryBaseDelay: '100ms', retryMaxDelay: '500ms' });
});
afterEach(async () => {
  await t.cleanup();
  await s.close();
});

const addJson = (args: string[]) => addJsonIn(t, args);

const file = (name: string) => path.join(t.downloads, name);

describe('--max-size and maxFileSize', () => {
  it('a Content-Length over the limit fails at once (E_TOO_LARGE) and creates no file; a body within it completes', async () => {
    s.route('/big.bin', { body: { size: 300_000 } });
    t.setConfig({ maxFileSize: '200K' });
    const [flag] = await addJson([s.url('/big.bin'), '--max-size', '100K', '-o', 'flag.bin']);
    const [conf] = await addJson([s.url('/big.bin'), '-o', 'conf.bin']);
    const [fits] = await addJson([s.url('/big.bin'), '--max-size', '1MiB', '-o', 'fits.bin']);
    const done = await waitFinal(t, [flag.id, conf.id, fits.id]);
    expect(done[0]).toMatchObject({ state: 'failed', attempts: 1, httpStatus: 200, error: { code: 'E_TOO_LARGE' } });
    expect(done[0].error.message).toMatch(/300000|293 KiB/);
    expect(done[1]).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'E_TOO_LARGE' } });
    expect(done[2]).toMatchObject({ state: 'completed', sha256: sha256(bodyFor(300_000)) });
    for (const n of ['flag.bin', 'flag.bin.bgdl-part', 'conf.bin', 'conf.bin.bgdl-part']) expect(fs.existsSync(file(n)), n).toBe(false);
  });

  it('a body without a length that never ends stops at the limit, its partial removed', async () => {
    s.route('/endless', { body: { size: 256 * 1024 }, endless: true });
    const [task] = await addJson([s.url('/endless'), '--max-size', '1MiB', '-o', 'endless.bin']);
    const [done] = await waitFinal(t, [task.id], 20_000);
    expect(done).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'E_TOO_LARGE' } });
    expect(done.bytesReceived).toBeLessThanOrEqual(1024 * 1024);
    expect(fs.existsSync(file('endless.bin'))).toBe(false);
    expect(fs.existsSync(file('endless.bin.bgdl-part'))).toBe(false);
  });

  it('a chunked body just over maxFileSize fails; one at the limit completes', async () => {
    t.setConfig({ maxFileSize: '500000' });
    s.route('/over.bin', { body: { size: 500_001 }, chunked: true });
    s.route('/at.bin', { body: { size: 500_000 }, chunked: true });
    const [over] = await addJson([s.url('/over.bin')]);
    const [at] = await addJson([s.url('/at.bin')]);
    const done = await waitFinal(t, [over.id, at.id]);
    expect(done[0]).toMatchObject({ state: 'failed', error: { code: 'E_TOO_LARGE' } });
    expect(fs.readdirSync(t.downloads).filter((n) => n.startsWith('over.bin'))).toEqual([]);
    expect(done[1]).toMatchObject({ state: 'completed', bytesReceived: 500_000 });
  });

  it('a malformed --max-size is exit 2 with nothing stored', async () => {
    for (const bad of ['lots', '-5', '0']) {
      const r = await t.bgdl(['add', 'http://127.0.0.1:9/x', '--max-size', bad]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/^bgdl: .*--max-size/);
    }
    expect(await statusJson(t)).toEqual([]);
  });
});

describe('minFreeSpace', () => {
  it('a reserve above the free space holds the task (disk-space) before any request or file; lowering it starts the task', async () => {
    t.setConfig({ minFreeSpace: '100%' });
    s.route('/held.bin', { body: { size: 100_000 } });
    const [task] = await addJson([s.url('/held.bin')]);
    const waiting = await waitUntil(async () => {
      const [x] = await statusJson(t, [task.id]);
      return x.waitingFor === 'disk-space' ? x : null;
    }, 15_000, 'waitingFor disk-space');
    expect(waiting).toMatchObject({ state: 'queued', error: { code: 'E_DISK_SPACE' } });
    expect(s.hits('/held.bin')).toBe(0); // held before asking the server
    expect(waiting.error.message).toMatch(/minFreeSpace/);
    expect(fs.readdirSync(t.downloads)).toEqual([]);
    t.setConfig({ minFreeSpace: '1MiB' });
    const [done] = await waitFinal(t, [task.id], 30_000);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('held.bin')))).toBe(sha256(bodyFor(100_000)));
  });

  it('config set checks the value: sizes, percentages, both', async () => {
    for (const ok of ['5%', '2GiB', '1%,256MiB', '0']) expect((await t.bgdl(['config', 'set', 'minFreeSpace', ok])).code).toBe(0);
    for (const bad of ['150%', 'lots', '5%,', '1%,2%']) {
      const r = await t.bgdl(['config', 'set', 'minFreeSpace', bad]);
      expect(r.code, bad).toBe(2);
      expect(r.stderr).toMatch(/^bgdl: .*minFreeSpace/);
    }
  });

  it('while writing: a body without a length stops at the reserve, keeps its part and resumes when it is lowered', async (ctx) => {
    if (process.getuid?.() !== 0) {
      console.warn('NOTICE: skipping the minFreeSpace mid-transfer test: mounting a small tmpfs needs root');
      ctx.skip();
    }
    const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-freefs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt]);
    try {
      t.setConfig({ minFreeSpace: '5MiB' });
      const SIZE = 6_000_000;
      s.route('/grow.bin', { body: { size: SIZE, seed: 'g' }, etag: '"g"', chunked: true, throttle: 3_000_000 });
      const [task] = await addJson([s.url('/grow.bin'), '-o', path.join(mnt, 'grow.bin')]);
      const held = await waitUntil(async () => {
        const [x] = await statusJson(t, [task.id]);
        return x.waitingFor === 'disk-space' ? x : null;
      }, 15_000, 'the reserve to hold the task');
      expect(held.error.code).toBe('E_DISK_SPACE');
      const st = fs.statfsSync(mnt);
      // Never below the reserve (what the part file holds left at least 5 MiB free).
      expect(st.bavail * st.bsize).toBeGreaterThanOrEqual(5 * 1024 * 1024);
      expect(fs.statSync(path.join(mnt, 'grow.bin.bgdl-part')).size).toBeGreaterThan(0);
      expect(fs.existsSync(path.join(mnt, 'grow.bin'))).toBe(false);
      t.setConfig({ minFreeSpace: '0' });
      const [done] = await waitFinal(t, [task.id], 30_000);
      expect(done.state).toBe('completed');
      expect(sha256(fs.readFileSync(path.join(mnt, 'grow.bin')))).toBe(sha256(bodyFor(SIZE, 'g')));
    } finally {
      await t.cleanup().catch(() => {});
      execFileSync('umount', ['-l', mnt]);
      fs.rmSync(mnt, { recursive: true, force: true });
    }
  }, 60_000);
});
