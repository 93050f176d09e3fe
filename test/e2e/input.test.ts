// Bad input is refused with exit 2 and changes nothing; unknown ids exit 3; a bad store exits 4;
// big and concurrent batches are stored exactly once.

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { statusJson, testdir, waitUntil, type TestDir } from '../helpers/cli.js';
import { workerPids } from '../helpers/procs.js';

let t: TestDir;
beforeEach(async () => {
  t = await testdir();
});
afterEach(async () => {
  await t.cleanup();
});

const URL_OK = 'http://127.0.0.1:9/file.bin';

async function expectRefused(args: string[], pattern: RegExp, input?: string | Buffer) {
  const r = await t.bgdl(args, { input });
  expect(r.code, r.stderr).toBe(2);
  expect(r.stderr).toMatch(/^bgdl: /);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(pattern);
  expect(r.stdout).toBe('');
}

describe('bad input: exit 2, one line, nothing stored', () => {
  it.each([
    [['add', 'ftp://example.com/x'], /only http and https/],
    [['add', 'not a url'], /invalid URL/],
    [['add', 'http://'], /invalid URL/],
    [['add', URL_OK, '-H', 'NoColon'], /invalid header/],
    [['add', URL_OK, '-H', 'X-A: b\r\nX-Injected: 1'], /CR, LF/],
    [['add', URL_OK, '-H', 'Bad Name: v'], /invalid header/],
    [['add', URL_OK, '--priority', 'urgent'], /unknown priority/],
    [['add', URL_OK, '--expect-receive', '12 parsecs'], /invalid --expect-receive/],
    [['add', URL_OK, '--begin-at', 'someday'], /invalid time/],
    [['add', URL_OK, '--sha256', 'abc'], /invalid --sha256/],
    [['add', URL_OK, '--bogus'], /unknown option '--bogus'/],
    [['add'], /no URL given/],
    [['add', URL_OK, URL_OK, '-o', 'x'], /-o names one file/],
    [['add', URL_OK, '-o', 'x', '-d', 'y'], /cannot be used together/],
    [['add', URL_OK, '-s', '../evil'], /invalid session name/],
    [['add', URL_OK, '-X', 'GE T'], /invalid method/],
    [['add', '-i', 'missing.txt'], /cannot read input file/],
    [['status', 'abc'], /invalid task id/],
    [['wait', '--timeout', 'forever'], /invalid --timeout/],
    [['config', 'set', 'maxConcurrent', 'lots'], /invalid value 'lots' for maxConcurrent/],
    [['config', 'set', 'noSuchKey', '1'], /unknown config key/],
    [['config', 'set', 'stallTimeout', '5 fortnights'], /invalid value/],
    [['upload', '-', 'http://127.0.0.1:9/up'], /not from stdin/],
    [['upload', 'nofile', 'http://127.0.0.1:9/up'], /no such file/],
  ])('%j', async (args, pattern) => {
    await expectRefused(args as string[], pattern);
    expect(await statusJson(t)).toEqual([]);
    expect(fs.existsSync(path.join(t.dir, 'config', 'bgdl', 'config.json'))).toBe(false);
  });

  it('a bad line in -i refuses the whole file with its line number', async () => {
    const list = [URL_OK, '# comment', '', 'gopher://x/y', URL_OK].join('\n');
    await expectRefused(['add', '-i', '-'], /stdin line 4: unsupported URL scheme 'gopher'/, list);
    fs.writeFileSync(path.join(t.downloads, 'nul.txt'), `${URL_OK}\nhttp://a.test/\0x\n`);
    await expectRefused(['add', '-i', 'nul.txt'], /nul.txt line 2: contains a NUL byte/);
    fs.writeFileSync(path.join(t.downloads, 'latin1.txt'), Buffer.concat([Buffer.from(`${URL_OK}\n`), Buffer.from([0x68, 0x74, 0xff, 0xfe, 0x0a])]));
    await expectRefused(['add', '-i', 'latin1.txt'], /latin1.txt line 2: not valid UTF-8/);
    fs.writeFileSync(path.join(t.downloads, 'long.txt'), `${URL_OK}\nhttp://a.test/${'x'.repeat(70 * 1024)}\n`);
    await expectRefused(['add', '-i', 'long.txt'], /long.txt line 2: longer than 64 KiB/);
    expect(await statusJson(t)).toEqual([]);
  });
});

describe('unknown ids and sessions: exit 3', () => {
  it.each([
    [['status', '42']], [['pause', '42']], [['resume', '42']], [['cancel', '42']], [['retry', '42']], [['wait', '42']],
    [['status', '-s', 'nosuch']], [['session', 'show', 'nosuch']], [['session', 'set', 'nosuch', '--no-hook']], [['session', 'rm', 'nosuch']],
    [['events', '-s', 'nosuch']],
  ])('%j', async (args) => {
    const r = await t.bgdl(args);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/^bgdl: no (task|session)/);
  });

  it('one unknown id among known ones changes nothing', async () => {
    const added = JSON.parse((await t.bgdl(['add', '--suspended', '--json', URL_OK])).stdout);
    const r = await t.bgdl(['resume', String(added[0].id), '999']);
    expect(r.code).toBe(3);
    expect((await statusJson(t))[0].state).toBe('paused');
  });
});

describe('a store that cannot be opened: exit 4', () => {
  it('corrupt file', async () => {
    fs.mkdirSync(t.home, { recursive: true });
    fs.writeFileSync(path.join(t.home, 'bgdl.db'), Buffer.alloc(8192, 0x41));
    const r = await t.bgdl(['status']);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain(path.join(t.home, 'bgdl.db'));
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
  it('unreadable home', async () => {
    fs.writeFileSync(path.join(t.dir, 'file'), 'x');
    const r = await t.bgdl(['status'], { env: { BGDL_HOME: path.join(t.dir, 'file', 'sub') } });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^bgdl: cannot create .*file\/sub/);
  });
});

describe('batches', () => {
  it('-i with 100,000 lines is stored in one go', async () => {
    const lines = Array.from({ length: 100_000 }, (_, i) => `http://127.0.0.1:9/f${i}.bin`).join('\n');
    const r = await t.bgdl(['add', '-i', '-', '--suspended', '--json'], { input: lines, timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    const added = JSON.parse(r.stdout);
    expect(added).toHaveLength(100_000);
    expect(new Set(added.map((x: { id: number }) => x.id)).size).toBe(100_000);
  }, 90_000);

  it('50 concurrent adders of 20 URLs store exactly 1,000 tasks and start one worker', async () => {
    const runs = Array.from({ length: 50 }, (_, p) => {
      const list = Array.from({ length: 20 }, (_, i) => `http://127.0.0.1:9/p${p}/f${i}.bin`).join('\n');
      return t.bgdl(['add', '-i', '-', '--begin-at', '1h', '--json'], { input: list, timeoutMs: 60_000 });
    });
    const results = await Promise.all(runs);
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    const tasks = await statusJson(t);
    expect(tasks).toHaveLength(1000);
    expect(new Set(tasks.map((x) => x.id)).size).toBe(1000);
    expect(new Set(tasks.map((x) => x.url)).size).toBe(1000);
    expect(tasks.every((x) => x.waitingFor === 'begin-at')).toBe(true);
    const pids = await waitUntil(() => {
      const p = workerPids(t.home);
      return p.length === 1 && t.workerPid() === p[0] ? p : null;
    }, 15_000, 'exactly one live worker');
    expect(pids).toHaveLength(1);
  }, 120_000);
});
