// Never a wrong file, never a wrong value: one live owner per -o destination, partial answers never
// saved as the file, no files from bodiless responses, nothing but regular files replaced, values the
// code cannot schedule refused where given, secret-named headers redacted and kept to their origin.
// Real CLI, real worker, real local servers.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { statusJson, testdir, waitFinal, waitUntil, type TestDir, addJson as addJsonIn } from '../helpers/cli.js';
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

const addJson = (args: string[], env?: NodeJS.ProcessEnv) => addJsonIn(t, args, env);

/** Tasks in the store, read directly (no CLI, so no worker is started by looking). */
function storedTasks(): number {
  const file = path.join(t.home, 'bgdl.db');
  if (!fs.existsSync(file)) return 0;
  const db = new Database(file, { readonly: true });
  try {
    return (db.prepare('SELECT count(*) AS n FROM tasks').get() as { n: number }).n;
  } catch {
    return 0;
  } finally {
    db.close();
  }
}

/** A refusal as the house rules want it: exit 2, one `bgdl: ` line matching `message`, nothing on stdout. */
function expectRefused(r: { code: number | null; stdout: string; stderr: string }, message: RegExp): void {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stderr).toMatch(/^bgdl: /);
  expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
  expect(r.stderr).toMatch(message);
  expect(r.stdout).toBe('');
}

const partFiles = (dir: string) => fs.readdirSync(dir).filter((n) => n.includes('.bgdl-part'));

describe('one live task per -o destination (within a store)', () => {
  it('a second live task for the same -o file, or the same OUTPUT twice in one -i batch, is refused naming the owner; a final task frees it', async () => {
    s.route('/a.bin', { body: 'aaa' });
    const [first] = await addJson([s.url('/a.bin'), '-o', 'same.bin', '--suspended']);
    const again = await t.bgdl(['add', s.url('/a.bin'), '-o', path.join(t.downloads, 'sub', '..', 'same.bin')]);
    expectRefused(again, new RegExp(`same\\.bin.*task ${first.id}`));
    // An -i line naming it, and two lines of one batch naming the same file.
    const list = path.join(t.dir, 'list.txt');
    fs.writeFileSync(list, `${s.url('/a.bin')} same.bin\n`);
    expectRefused(await t.bgdl(['add', '-i', list]), new RegExp(`task ${first.id}`));
    fs.writeFileSync(list, `${s.url('/a.bin')} twice.bin\n${s.url('/a.bin')} other.bin\n${s.url('/a.bin')} twice.bin\n`);
    expectRefused(await t.bgdl(['add', '-i', list]), /twice\.bin.*lines? 1 and 3/);
    expect(storedTasks()).toBe(1);

    // Once the owner is final (canceled), the file is free again.
    expect((await t.bgdl(['cancel', String(first.id)])).code).toBe(0);
    const [next] = await addJson([s.url('/a.bin'), '-o', 'same.bin']);
    const [done] = await waitFinal(t, [next.id]);
    expect(done.state).toBe('completed');
    expect(fs.readFileSync(path.join(t.downloads, 'same.bin'), 'utf8')).toBe('aaa');
  });

  it('concurrent adders for one -o file: exactly one is stored', async () => {
    s.route('/c.bin', { body: 'c' });
    const runs = await Promise.all(Array.from({ length: 6 }, () => t.bgdl(['add', '--suspended', s.url('/c.bin'), '-o', 'race.bin'])));
    const codes = runs.map((r) => r.code).sort();
    expect(codes, runs.map((r) => r.stderr).join('')).toEqual([0, 2, 2, 2, 2, 2]);
    expect(storedTasks()).toBe(1);
  });
});

describe('partial content that was not asked for', () => {
  it('a 206 to a plain GET is never saved as the file: the task fails clearly, nothing is left at the destination', async () => {
    const body = bodyFor(10_000);
    s.route('/part.bin', { body, rangeForPlainGet: { start: 0, end: 999 } });
    const [task] = await addJson([s.url('/part.bin'), '-o', 'part.bin']);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('failed');
    expect(done.error.code).toBe('E_PARTIAL_CONTENT');
    expect(done.error.message).toMatch(/206.*bytes 0-999\/10000/);
    expect(fs.existsSync(path.join(t.downloads, 'part.bin'))).toBe(false);
    expect(partFiles(t.downloads)).toEqual([]);
    expect(s.requestsTo('/part.bin')[0]!.headers.range).toBeUndefined();
  });

  it('a 206 whose Content-Range is the whole resource is taken as a 200', async () => {
    const body = bodyFor(5_000, 'whole');
    s.route('/whole.bin', { body, rangeForPlainGet: { start: 0, end: 4_999 } });
    const [task] = await addJson([s.url('/whole.bin')]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done).toMatchObject({ state: 'completed', httpStatus: 206, bytesReceived: 5_000, sha256: sha256(body) });
    expect(fs.readFileSync(path.join(t.downloads, 'whole.bin')).equals(body)).toBe(true);
  });
});

describe('responses without a body', () => {
  it('204, 205, 304 and -X HEAD complete with output null and the status, creating no file and no partial file', async () => {
    s.route('/nc', { status: 204 });
    s.route('/reset', { status: 205 });
    s.route('/nm', { status: 304 });
    s.route('/head.bin', { body: 'a body a GET would get' });
    fs.writeFileSync(path.join(t.downloads, 'kept.txt'), 'mine');
    const [a] = await addJson([s.url('/nc'), '-o', 'kept.txt']);
    const [b] = await addJson([s.url('/reset')]);
    const [c] = await addJson([s.url('/nm')]);
    const [d] = await addJson([s.url('/head.bin'), '-X', 'HEAD']);
    const done = await waitFinal(t, [a.id, b.id, c.id, d.id]);
    expect(done.map((x) => [x.state, x.output, x.httpStatus, x.outcome, x.bytesReceived])).toEqual([
      ['completed', null, 204, 'no-body', 0],
      ['completed', null, 205, 'no-body', 0],
      ['completed', null, 304, 'no-body', 0],
      ['completed', null, 200, 'no-body', 0],
    ]);
    expect(fs.readdirSync(t.downloads).sort()).toEqual(['kept.txt']);
    expect(fs.readFileSync(path.join(t.downloads, 'kept.txt'), 'utf8')).toBe('mine');
    const events = JSON.parse((await t.bgdl(['events', '--json'])).stdout);
    // Events come in the order the tasks finished, which concurrent transfers do not fix: by task.
    events.sort((x: any, y: any) => x.taskId - y.taskId);
    expect(events.map((e: any) => [e.type, e.output, e.httpStatus])).toEqual([
      ['completed', null, 204], ['completed', null, 205], ['completed', null, 304], ['completed', null, 200],
    ]);
  });
});

describe('only regular files are ever replaced', () => {
  it('-o naming a device, a FIFO, a socket, a directory or -, and an -i OUTPUT naming a FIFO, are refused at add', async () => {
    s.route('/x', { status: 404 }); // never fetched; a 404 even if it were, so nothing is ever renamed
    const fifo = path.join(t.dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const sock = path.join(t.dir, 'sock');
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      expectRefused(await t.bgdl(['add', s.url('/x'), '-o', '/dev/null']), /\/dev\/null.*character device/);
      expectRefused(await t.bgdl(['add', s.url('/x'), '-o', fifo]), /fifo.*FIFO/);
      expectRefused(await t.bgdl(['add', s.url('/x'), '-o', sock]), /sock.*socket/);
      expectRefused(await t.bgdl(['add', s.url('/x'), '-o', t.dir]), /is a directory.*-d/);
      expectRefused(await t.bgdl(['add', s.url('/x'), '-o', '-']), /writes files, not pipes/);
      expectRefused(await t.bgdl(['add', s.url('/x'), '-o', 'x.bgdl-part']), /partial file/);
      const list = path.join(t.dir, 'list.txt');
      fs.writeFileSync(list, `${s.url('/x')} ok.bin\n${s.url('/x')} ${fifo}\n`);
      expectRefused(await t.bgdl(['add', '-i', list]), /line 2.*FIFO/);
    } finally {
      server.close();
    }
    expect(storedTasks()).toBe(0);
    expect(s.requests).toEqual([]);
    expect(fs.statSync('/dev/null').isCharacterDevice()).toBe(true);
  });

  it('a FIFO that appears at the -o path after add is not replaced: the task fails clearly, before and after the body', async () => {
    s.route('/early.bin', { body: 'early' });
    const [early] = await addJson([s.url('/early.bin'), '-o', 'early.bin', '--suspended']);
    execFileSync('mkfifo', [path.join(t.downloads, 'early.bin')]);
    expect((await t.bgdl(['resume', String(early.id)])).code).toBe(0);

    let release!: () => void;
    const until = new Promise<void>((r) => (release = r));
    // Held after 2.5 MB: the part file writes in batches, so progress shows once a megabyte is in.
    s.route('/late.bin', { body: bodyFor(3_000_000), holdAfter: { bytes: 2_500_000, until } });
    const [late] = await addJson([s.url('/late.bin'), '-o', 'late.bin']);
    await waitUntil(async () => (await statusJson(t, [late.id]))[0].bytesReceived >= 1_000_000, 20_000, 'the first megabyte');
    execFileSync('mkfifo', [path.join(t.downloads, 'late.bin')]);
    release();

    const done = await waitFinal(t, [early.id, late.id]);
    for (const d of done) {
      expect(d.state).toBe('failed');
      expect(d.error.code).toBe('E_DEST');
      expect(d.error.message).toMatch(/is a FIFO.*not replaced/);
    }
    for (const name of ['early.bin', 'late.bin']) expect(fs.lstatSync(path.join(t.downloads, name)).isFIFO()).toBe(true);
  });

  it('a server-chosen name never ends in .bgdl-part', async () => {
    s.route('/cd', { body: 'cd', contentDisposition: 'attachment; filename="victim.bin.bgdl-part"' });
    s.route('/seg/other.bgdl-part', { body: 'seg' });
    const tasks = await addJson([s.url('/cd'), s.url('/seg/other.bgdl-part')]);
    const done = await waitFinal(t, tasks.map((x) => x.id));
    expect(done.map((d) => path.basename(d.output))).toEqual(['victim.bin', 'other']);
    expect(fs.readdirSync(t.downloads).sort()).toEqual(['other', 'victim.bin']);
  });
});

describe('values out of range are refused where given', () => {
  it('durations, dates and directories the code cannot use: exit 2 at once, nothing stored, status still works', async () => {
    s.route('/v', { body: 'v' });
    expectRefused(await t.bgdl(['add', s.url('/v'), '--begin-at', '999999999d']), /--begin-at|time/);
    expectRefused(await t.bgdl(['add', s.url('/v'), '-d', '/proc/1/nope'], { timeoutMs: 15_000 }), /cannot create directory \/proc\/1\/nope/);
    expectRefused(await t.bgdl(['config', 'set', 'stallTimeout', '9'.repeat(400)]), /stallTimeout/);
    expectRefused(await t.bgdl(['config', 'set', 'resourceTimeout', '999999999d']), /resourceTimeout.*at most/);
    expectRefused(await t.bgdl(['wait', '--timeout', '9'.repeat(30)]), /--timeout/);
    expectRefused(await t.bgdl(['add', s.url('/v'), '--expect-receive', '9'.repeat(400)]), /--expect-receive/);
    expect(storedTasks()).toBe(0);
    const st = await t.bgdl(['status', '--json']);
    expect(st.code, st.stderr).toBe(0);
    expect(JSON.parse(st.stdout)).toEqual([]);
  });

  it('control characters in what is echoed back are escaped, never raw', async () => {
    const r1 = await t.bgdl(['config', 'set', 'evil\x1b[2Jkey', '1']);
    const r2 = await t.bgdl(['add', 'ftp://x\x07/\x1b]0;title\x07']);
    const r3 = await t.bgdl(['add', s.url('/v'), '--begin-at', 'soon\x1b[31m']);
    for (const r of [r1, r2, r3]) {
      expect(r.code).toBe(2);
      expect(r.stderr).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f]/);
      expect(r.stderr).toMatch(/\\x1b|\\x07/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
  });

  it('hookTimeout beyond the 24.8-day timer limit does not fire at once: a slow hook runs to its end', async () => {
    t.setConfig({ hookTimeout: '30d' });
    const mark = path.join(t.dir, 'hook-done');
    expect((await t.bgdl(['session', 'create', 'slow', '--hook', `sleep 0.5; touch '${mark}'`])).code).toBe(0);
    s.route('/h', { body: 'h' });
    await addJson(['-s', 'slow', s.url('/h')]);
    const session = await waitUntil(async () => {
      const r = JSON.parse((await t.bgdl(['session', 'show', 'slow', '--json'])).stdout);
      return r.hookRuns > 0 && (r.hookLastError || fs.existsSync(mark)) ? r : null;
    }, 20_000, 'the hook to finish or fail');
    expect(session.hookLastError).toBeNull();
    expect(fs.existsSync(mark)).toBe(true);
  });
});

describe('headers named like secrets', () => {
  it('are redacted in every output and dropped on a cross-origin redirect, like Authorization', async () => {
    const C = (k: string) => `Cnry${k}Q9`;
    const secretHeaders = ['X-Api-Token', 'X-Client-Secret', 'X-Api-Key', 'X-Password', 'X-Auth-User', 'Private-Token'];
    const headerArgs = secretHeaders.flatMap((n) => ['-H', `${n}: ${C(n.replace(/-/g, ''))}`]);
    const other = await startServer();
    try {
      s.route('/start', { redirect: { to: '/same' } });
      s.route('/same', { redirect: { to: other.url('/cross') } });
      other.route('/cross', { body: 'done' });
      const hookCopy = path.join(t.dir, 'hook-events');
      expect((await t.bgdl(['session', 'create', 'sec', '--hook', `cat "$BGDL_EVENTS" > '${hookCopy}'`])).code).toBe(0);
      const add = await t.bgdl(['add', '--json', '-s', 'sec', s.url('/start'), '-o', 'r.bin', ...headerArgs, '-H', 'X-Plain: visible']);
      expect(add.code, add.stderr).toBe(0);
      const [task] = JSON.parse(add.stdout);
      const [done] = await waitFinal(t, [task.id]);
      expect(done.state).toBe('completed');
      await waitUntil(() => fs.existsSync(hookCopy), 15_000, 'the hook');

      // Sent to their origin, not beyond it; a plain header travels on.
      const lower = secretHeaders.map((n) => n.toLowerCase());
      for (const p of ['/start', '/same']) for (const n of lower) expect(s.requestsTo(p)[0]!.headers[n], `${p} ${n}`).toMatch(/^Cnry/);
      for (const n of lower) expect(other.requestsTo('/cross')[0]!.headers[n], n).toBeUndefined();
      expect(other.requestsTo('/cross')[0]!.headers['x-plain']).toBe('visible');

      const outputs: string[] = [add.stdout, add.stderr, fs.readFileSync(hookCopy, 'utf8')];
      for (const args of [['status'], ['status', '--json'], ['status', String(task.id)], ['events', '--json'], ['log']]) {
        const r = await t.bgdl(args);
        outputs.push(r.stdout, r.stderr);
      }
      const refused = await t.bgdl(['add', s.url('/x'), '-H', `X-Api-Token: ${C('crlf')}\r\nX-Evil: 1`]);
      expect(refused.code).toBe(2);
      outputs.push(refused.stderr);
      expect(outputs.join('\n').match(/Cnry\w+/g) ?? []).toEqual([]);
      const shown = (await statusJson(t, [task.id]))[0].headers;
      expect(shown).toEqual([...secretHeaders.map((n) => `${n}: ***`), 'X-Plain: visible']);
    } finally {
      await other.close();
    }
  });
});
