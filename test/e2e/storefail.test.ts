// The store's own failures: a damaged database, a full disk under BGDL_HOME. Every command ends with
// exit 4 and one `bgdl: ` line naming the file and what to do; a worker facing a store it can no
// longer write stops its transfers and exits, and nothing stored is lost once space is back.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { alive, BIN, statusJson, testdir, waitFinal, waitUntil, type RunResult, type TestDir } from '../helpers/cli.js';
import { bodyFor, sha256, startServer, type TestServer } from '../helpers/server.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(extraEnv: NodeJS.ProcessEnv = {}): Promise<{ t: TestDir; s: TestServer }> {
  const t = await testdir(extraEnv);
  const s = await startServer();
  cleanups.push(() => s.close(), () => t.cleanup());
  return { t, s };
}

/** One line on stderr, starting `bgdl: `, naming the file; never an internal error or a stack. */
function expectStoreLine(r: RunResult, file: string, advice: RegExp): void {
  expect(r.code, r.stderr).toBe(4);
  const lines = r.stderr.split('\n').filter(Boolean);
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^bgdl: /);
  expect(lines[0]).toContain(file);
  expect(lines[0]).toMatch(advice);
  expect(lines[0]).not.toMatch(/internal error/);
}

describe('a damaged store', () => {
  it('status, add, events and pause exit 4 with one line when the pages are garbage (the failure comes mid-command)', async () => {
    const { t } = await setup();
    const r = await t.bgdl(['add', '--suspended', 'http://127.0.0.1:9/a.bin', 'http://127.0.0.1:9/b.bin']);
    expect(r.code, r.stderr).toBe(0);
    const file = path.join(t.home, 'bgdl.db');
    // Keep page 1 (the header and the schema, so opening succeeds) and garble every other page.
    const size = fs.statSync(file).size;
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.alloc(size - 4096, 0xa5), 0, size - 4096, 4096);
    fs.closeSync(fd);
    for (const args of [['status'], ['status', '--json'], ['add', 'http://127.0.0.1:9/c.bin'], ['events'], ['pause', '1']]) {
      expectStoreLine(await t.bgdl(args), file, /damaged.*move it aside/);
    }
  });

  it('a main file that is not a database, or a WAL that cannot be opened, exits 4 with one line', async () => {
    const { t } = await setup();
    expect((await t.bgdl(['add', '--suspended', 'http://127.0.0.1:9/a.bin'])).code).toBe(0);
    const file = path.join(t.home, 'bgdl.db');
    // A WAL of garbage is what a torn write leaves: SQLite ignores frames that fail their checksums.
    fs.writeFileSync(file + '-wal', Buffer.alloc(64 * 1024, 0x5a));
    const intact = await t.bgdl(['status', '--json']);
    expect(intact.code, intact.stderr).toBe(0);
    expect(JSON.parse(intact.stdout)).toHaveLength(1);
    fs.rmSync(file + '-wal', { force: true });
    fs.mkdirSync(file + '-wal');
    expectStoreLine(await t.bgdl(['status']), file, /BGDL_HOME|move it aside/);
    fs.rmdirSync(file + '-wal');
    fs.writeFileSync(file, Buffer.alloc(8192, 0x5a));
    expectStoreLine(await t.bgdl(['events']), file, /move it aside/);
  });
});

function resumeOffset(home: string, id: number): number {
  const db = new Database(path.join(home, 'bgdl.db'), { readonly: true, timeout: 5000 });
  try {
    return (db.prepare('SELECT resume_offset FROM tasks WHERE id = ?').get(id) as { resume_offset: number }).resume_offset;
  } finally {
    db.close();
  }
}

/** Fill the filesystem of `filler` to the last byte (appending to it). */
function fill(filler: string): void {
  const fd = fs.openSync(filler, 'a');
  try {
    for (const size of [1 << 20, 4096, 1]) {
      const chunk = Buffer.alloc(size);
      for (;;) {
        try {
          fs.writeSync(fd, chunk);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
          break;
        }
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

describe('a full disk under BGDL_HOME', () => {
  it('stops the worker (exit 4, one line), refuses commands with exit 4, and loses nothing once space is back', async (ctx) => {
    if (process.getuid?.() !== 0) {
      console.warn('NOTICE: skipping the full-BGDL_HOME test: mounting a small tmpfs needs root');
      ctx.skip();
    }
    const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-homefs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
    cleanups.push(() => {
      execFileSync('umount', ['-l', mnt]);
      fs.rmSync(mnt, { recursive: true, force: true });
    });
    const home = path.join(mnt, 'home');
    const { t, s } = await setup({ BGDL_HOME: home });
    const SIZE = 3_000_000;
    s.route('/big.bin', { body: { size: SIZE }, etag: '"b"', throttle: 400_000 });
    const added = await t.bgdl(['add', '--json', '--suspended', s.url('/big.bin')]);
    expect(added.code, added.stderr).toBe(0);
    const [task] = JSON.parse(added.stdout);

    // A foreground worker, so its exit status and its last words can be seen.
    const fg = spawn(process.execPath, [BIN, 'worker'], { env: t.env, cwd: '/', stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    fg.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    let exitCode: number | null | undefined;
    fg.on('exit', (code) => (exitCode = code));
    cleanups.push(() => void (alive(fg.pid!) && fg.kill('SIGKILL')));
    await waitUntil(() => t.workerPid() === fg.pid, 5000, 'the foreground worker to hold the lease');
    expect((await t.bgdl(['resume', String(task.id)])).code).toBe(0);
    // Until a durable offset is recorded (the store is the only record of where to resume).
    await waitUntil(() => resumeOffset(home, task.id) > 0, 15_000, 'a durable offset in the store');

    const filler = path.join(mnt, 'filler');
    fill(filler);
    // The worker's next progress write fails: it stops its transfer and exits 4 with one line.
    await waitUntil(() => exitCode !== undefined, 20_000, 'the worker to exit');
    expect(exitCode, stderr).toBe(4);
    const lines = stderr.split('\n').filter(Boolean);
    expect(lines, stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^bgdl: .*bgdl\.db.*no space left.*free space under BGDL_HOME/);
    const part = path.join(t.downloads, 'big.bin.bgdl-part');
    const partSize = fs.statSync(part).size;
    expect(partSize).toBeLessThan(SIZE);

    // Commands that must write say why, in one line, and store nothing. (The worker's last
    // connection may have checkpointed and removed the WAL, which frees space: fill that too.)
    fill(filler);
    const list = path.join(t.dir, 'urls.txt');
    fs.writeFileSync(list, Array.from({ length: 300 }, (_, i) => `${s.url(`/n${i}.bin`)}\n`).join(''));
    expectStoreLine(await t.bgdl(['add', '-i', list]), path.join(home, 'bgdl.db'), /no space left.*free space under BGDL_HOME/);
    expectStoreLine(await t.bgdl(['status']), path.join(home, 'bgdl.db'), /no space left.*free space under BGDL_HOME/);

    // Space is back: the next command starts a worker, which resumes the task from its partial file.
    fs.rmSync(filler);
    const tasks = await statusJson(t);
    expect(tasks.map((x) => x.id)).toEqual([task.id]);
    const [done] = await waitFinal(t, [task.id], 30_000);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(path.join(t.downloads, 'big.bin')))).toBe(sha256(bodyFor(SIZE)));
    const resumed = s.requestsTo('/big.bin').at(-1)!;
    expect(resumed.headers.range).toMatch(/^bytes=[1-9]\d*-$/);
  }, 60_000);
});
