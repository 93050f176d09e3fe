// --split from the real CLI against a server that limits each connection: the file comes over several
// concurrent range requests (counted at the server) with the right checksum; a server without ranges
// gets one connection and the log says so; kill -9 mid-split resumes every segment from its durable
// offset; a validator change restarts the whole file; perHost caps the connections of all tasks.
// No timing is asserted here: the speed-up is measured by the bench (npm run bench -- --only=split).

import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { alive, statusJson, testdir, waitFinal, waitUntil, type TestDir } from '../helpers/cli.js';
import { bodyFor, sha256, startServer, type TestServer } from '../helpers/server.js';

let t: TestDir;
let s: TestServer;
beforeEach(async () => {
  t = await testdir();
  s = await startServer();
  // Small segments, so small files split; fsync'd progress is recorded twice a second anyway.
  t.setConfig({ minSplitSize: '64KiB' });
});
afterEach(async () => {
  await t.cleanup();
  await s.close();
});

const SIZE = 1_000_000;
const file = (name: string) => path.join(t.downloads, name);

async function addJson(args: string[]): Promise<any[]> {
  const r = await t.bgdl(['add', '--json', ...args]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

/** The first byte each GET of `p` asked for (null: no Range). */
const rangeStarts = (p: string, from = 0): Array<number | null> =>
  s.requestsTo(p).slice(from).map((r) => (r.headers.range ? Number(/^bytes=(\d+)-/.exec(String(r.headers.range))![1]) : null));

/** The segment table the store holds for a task ([start, end, durable end] each). */
function storedSegments(id: number): Array<[number, number, number]> | null {
  const db = new Database(path.join(t.home, 'bgdl.db'), { readonly: true, timeout: 5000 });
  try {
    const row = db.prepare('SELECT segments FROM tasks WHERE id = ?').get(id) as { segments: string | null };
    return row.segments ? JSON.parse(row.segments).segs : null;
  } finally {
    db.close();
  }
}

describe('--split', () => {
  it('fetches one file over N concurrent range requests, and the checksum is right', async () => {
    const BIG = 2_000_000;
    s.route('/four.bin', { body: { size: BIG }, etag: '"f1"', connectionRate: 200_000 });
    const [task] = await addJson([s.url('/four.bin'), '--split', '4', '-o', 'four.bin']);
    expect(task.split).toBe(4);
    // While it runs, status shows its segments.
    const detail = await waitUntil(async () => {
      const r = await t.bgdl(['status', String(task.id)]);
      return /segments:\s+4 \(\d running/.test(r.stdout) ? r.stdout : null;
    }, 15_000, 'status to show the segments');
    expect(detail).toMatch(/split:\s+4/);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(done.sha256).toBe(sha256(bodyFor(BIG)));
    expect(sha256(fs.readFileSync(file('four.bin')))).toBe(sha256(bodyFor(BIG)));
    expect(s.peakInFlight()).toBe(4);
    // The first request asks for the first minSplitSize bytes (ranges? length?), the next three for
    // their segments, then the first connection goes on with the rest of its segment.
    const starts = rangeStarts('/four.bin');
    expect(s.requestsTo('/four.bin')[0]!.headers.range).toBe('bytes=0-65535');
    expect(new Set(starts.slice(0, 5))).toEqual(new Set([0, 500_000, 1_000_000, 1_500_000, 65_536]));
    expect(s.requestsTo('/four.bin').slice(1).every((r) => r.headers['if-range'] === '"f1"')).toBe(true);
    expect(fs.readdirSync(t.downloads)).toEqual(['four.bin']);
    const log = (await t.bgdl(['log'])).stdout;
    expect(log).toContain(`task ${task.id}: split into 4 segments`);
  });

  it('a connection that finishes its segment takes the second half of the largest one still running', async () => {
    // The first connection stalls early in its segment; the second finishes its own and splits the first's rest.
    s.route('/slow-start.bin', { body: { size: SIZE }, etag: '"s1"', connectionRate: 1_000_000, stallAfter: { bytes: 32_768, ms: 2500, times: 1 } });
    const [task] = await addJson([s.url('/slow-start.bin'), '--split', '2']);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('slow-start.bin')))).toBe(sha256(bodyFor(SIZE)));
    const starts = rangeStarts('/slow-start.bin');
    // 0 (the first minSplitSize bytes), 500,000 (the second segment), then a cut inside the first
    // segment's rest, at the middle of what it had left.
    expect(starts.slice(0, 2)).toEqual([0, 500_000]);
    const cut = starts.find((x) => x != null && x > 65_536 && x < 500_000);
    expect(cut).toBeDefined();
    expect(Math.abs(cut! - (32_768 + (500_000 - 32_768) / 2))).toBeLessThan(65_536);
    expect(s.peakInFlight()).toBeLessThanOrEqual(2);
  });

  it('config split applies to tasks without --split; auto takes as many as perHost allows', async () => {
    t.setConfig({ split: 'auto', perHost: '3' });
    s.route('/auto.bin', { body: { size: SIZE }, connectionRate: 400_000 });
    const [task] = await addJson([s.url('/auto.bin')]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('auto.bin')))).toBe(sha256(bodyFor(SIZE)));
    expect(s.peakInFlight()).toBe(3);
  });

  it('falls back to one connection against a server without ranges, and says so in the log', async () => {
    s.route('/plain.bin', { body: { size: SIZE }, ranges: false, connectionRate: 2_000_000 });
    const [task] = await addJson([s.url('/plain.bin'), '--split', '4']);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('plain.bin')))).toBe(sha256(bodyFor(SIZE)));
    expect(s.peakInFlight()).toBe(1);
    // The whole file that answered the first range request is the download: it is not asked for twice.
    expect(s.hits('/plain.bin')).toBe(1);
    const log = (await t.bgdl(['log'])).stdout;
    expect(log).toMatch(new RegExp(`task ${task.id}: split: the server cannot split this file \\(HTTP 200 to a range request: no ranges\\); using one connection`));
  });

  it('after kill -9 mid-split, every segment resumes from its durable offset and the checksum is right', async () => {
    const BIG = 2_000_000;
    s.route('/crash.bin', { body: { size: BIG }, etag: '"c1"', connectionRate: 150_000 });
    const [task] = await addJson([s.url('/crash.bin'), '--split', '4']);
    // Durable progress in every segment (the table is recorded after each fsync).
    await waitUntil(() => {
      const segs = storedSegments(task.id);
      return segs && segs.length === 4 && segs.every(([start, , done]) => done > start) ? segs : null;
    }, 20_000, 'durable progress in every segment');
    const pid = t.workerPid()!;
    process.kill(pid, 'SIGKILL');
    await waitUntil(() => !alive(pid), 5000, 'the worker to die');
    const table = storedSegments(task.id)!;
    const before = s.requestsTo('/crash.bin').length;
    // The rest comes fast: the next worker resumes (any command starts it).
    s.route('/crash.bin', { body: { size: BIG }, etag: '"c1"' });
    const [done] = await waitFinal(t, [task.id], 30_000);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('crash.bin')))).toBe(sha256(bodyFor(BIG)));
    const starts = rangeStarts('/crash.bin', before);
    expect(starts.length).toBeGreaterThan(0);
    for (const start of starts) {
      expect(start).not.toBeNull();
      // Never inside bytes a segment had made durable: those are kept, not fetched again.
      for (const [segStart, , durable] of table) expect(start! >= segStart && start! < durable).toBe(false);
    }
    // Every unfinished segment was asked for from exactly its durable offset.
    for (const [, end, durable] of table) if (durable < end) expect(starts).toContain(durable);
    expect(s.requestsTo('/crash.bin').slice(before).every((r) => r.headers['if-range'] === '"c1"')).toBe(true);
    expect(fs.readdirSync(t.downloads)).toEqual(['crash.bin']);
  });

  it('a validator change mid-split restarts the whole file, and it ends right', async () => {
    s.route('/moving.bin', { body: { size: SIZE, seed: 'v1' }, etag: '"v1"', connectionRate: 100_000 });
    const [task] = await addJson([s.url('/moving.bin'), '--split', '4']);
    await waitUntil(() => storedSegments(task.id)?.some(([start, , done]) => done > start), 20_000, 'durable progress');
    expect((await t.bgdl(['pause', String(task.id)])).code).toBe(0);
    // Paused in the store at once; stopped and recorded by the worker a moment later.
    await waitUntil(async () => (await t.bgdl(['log'])).stdout.includes(`task ${task.id}: paused at byte`), 10_000, 'the worker to stop the transfer');
    const [paused] = await statusJson(t, [task.id]);
    expect(paused.state).toBe('paused');
    // What every segment keeps counts as received, not only the first segment's bytes.
    const table = storedSegments(task.id)!;
    expect(paused.bytesReceived).toBe(table.reduce((n, [start, , done]) => n + done - start, 0));
    expect(paused.segments).toEqual({ count: 4, running: 0, done: 0 });
    // The file changes on the server while the split download is paused.
    const before = s.requestsTo('/moving.bin').length;
    s.route('/moving.bin', { body: { size: SIZE, seed: 'v2' }, etag: '"v2"' });
    expect((await t.bgdl(['resume', String(task.id)])).code).toBe(0);
    const [done] = await waitFinal(t, [task.id], 30_000);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('moving.bin')))).toBe(sha256(bodyFor(SIZE, 'v2')));
    expect(done.sha256).toBe(sha256(bodyFor(SIZE, 'v2')));
    const after = s.requestsTo('/moving.bin');
    // The resume asked with the old validator, got the whole new file, and started over from 0.
    expect(after[before]!.headers['if-range']).toBe('"v1"');
    expect(rangeStarts('/moving.bin', before)).toContain(0);
    const log = (await t.bgdl(['log'])).stdout;
    expect(log).toMatch(new RegExp(`task ${task.id}: .*starting the whole file over`));
    expect(fs.readdirSync(t.downloads)).toEqual(['moving.bin']);
  });

  it('a file that changes between the requests of one split (a new validator each time) ends on one connection', async () => {
    s.route('/flaky.bin', { body: { size: SIZE }, etag: 'per-request', connectionRate: 2_000_000 });
    const [task] = await addJson([s.url('/flaky.bin'), '--split', '4']);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(sha256(fs.readFileSync(file('flaky.bin')))).toBe(sha256(bodyFor(SIZE)));
    // Segment requests carried the first answer's validator and got 200s: started over, then one connection.
    const reqs = s.requestsTo('/flaky.bin');
    expect(reqs[1]!.headers['if-range']).toBe('"r1"');
    expect(reqs.at(-1)!.headers.range).toBeUndefined();
    const log = (await t.bgdl(['log'])).stdout;
    expect(log).toMatch(new RegExp(`task ${task.id}: the server sent HTTP 200 to a range request; starting the whole file over`));
    expect(log).toMatch(new RegExp(`task ${task.id}: .*looks different on every request; using one connection`));
    expect(fs.readdirSync(t.downloads)).toEqual(['flaky.bin']);
  });

  it('an error answer to the first range request fails the task as it would on one connection, asked once', async () => {
    const [task] = await addJson([s.url('/missing.bin'), '--split', '4']);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('failed');
    expect(done.error.code).toBe('E_HTTP_STATUS');
    expect(done.httpStatus).toBe(404);
    expect(s.hits('/missing.bin')).toBe(1);
  });

  it('an empty file (416 to the first range request) completes over one connection', async () => {
    s.route('/empty.bin', { body: '' });
    const [task] = await addJson([s.url('/empty.bin'), '--split', '4']);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('completed');
    expect(fs.readFileSync(file('empty.bin')).length).toBe(0);
    expect(s.requestsTo('/empty.bin').map((r) => r.headers.range)).toEqual(['bytes=0-65535', undefined]);
  });

  it('a split file that fails its --sha256 is removed and the task fails for good', async () => {
    s.route('/wrong.bin', { body: { size: SIZE }, etag: '"w1"' });
    const [task] = await addJson([s.url('/wrong.bin'), '--split', '4', '--sha256', 'a'.repeat(64)]);
    const [done] = await waitFinal(t, [task.id]);
    expect(done.state).toBe('failed');
    expect(done.error.code).toBe('E_CHECKSUM');
    expect(done.error.message).toContain(sha256(bodyFor(SIZE)));
    expect(s.hits('/wrong.bin')).toBeGreaterThan(1);
    expect(fs.readdirSync(t.downloads)).toEqual([]);
  });

  it('perHost caps the connections to one origin across all tasks', async () => {
    // Segments too large to split again: no connection is ever cut short (a cut one would still count
    // at the server for a moment after the client let it go).
    t.setConfig({ perHost: '3', minSplitSize: '256KiB' });
    s.route('/a.bin', { body: { size: SIZE, seed: 'a' }, connectionRate: 300_000 });
    s.route('/b.bin', { body: { size: SIZE, seed: 'b' }, connectionRate: 300_000 });
    const tasks = await addJson([s.url('/a.bin'), s.url('/b.bin'), '--split', '4']);
    const done = await waitFinal(t, tasks.map((x) => x.id), 30_000);
    expect(done.map((x) => x.state)).toEqual(['completed', 'completed']);
    expect(sha256(fs.readFileSync(file('a.bin')))).toBe(sha256(bodyFor(SIZE, 'a')));
    expect(sha256(fs.readFileSync(file('b.bin')))).toBe(sha256(bodyFor(SIZE, 'b')));
    expect(s.peakInFlight()).toBeLessThanOrEqual(3);
    // The split did open extra connections (within the cap).
    expect(s.hits('/a.bin') + s.hits('/b.bin')).toBeGreaterThan(2);
  });

  it('refuses a bad --split and a bad split config value (exit 2, nothing stored)', async () => {
    for (const bad of ['0', '17', 'two', '-1']) {
      const r = await t.bgdl(['add', s.url('/x'), '--split', bad]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^bgdl: invalid value .* for --split: use a whole number from 1 to 16, or auto\n$/);
    }
    expect((await t.bgdl(['config', 'set', 'split', '20'])).code).toBe(2);
    expect((await t.bgdl(['config', 'set', 'minSplitSize', '100'])).code).toBe(2);
    expect((await t.bgdl(['config', 'set', 'split', 'auto'])).code).toBe(0);
    expect((await t.bgdl(['status', '--json'])).stdout.trim()).toBe('[]');
  });
});
