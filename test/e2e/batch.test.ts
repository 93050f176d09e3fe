// Cron batches from the real CLI: --skip-existing, --if-changed (conditional requests and 304),
// --checksums FILE and --max-attempts, and the same `add -i` batch run twice without copies.

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { testdir, type TestDir } from '../helpers/cli.js';
import { bodyFor, sha256, startServer, type TestServer } from '../helpers/server.js';

let t: TestDir;
let s: TestServer;
beforeEach(async () => {
  t = await testdir();
  s = await startServer();
  t.setConfig({ retryBaseDelay: '50ms', retryMaxDelay: '100ms' });
});
afterEach(async () => {
  await t.cleanup();
  await s.close();
});

/** `bgdl add … --wait --json`: the final tasks. */
async function addWait(args: string[], expectCode = 0): Promise<any[]> {
  const r = await t.bgdl(['add', ...args, '--wait', '--json']);
  expect(r.code, r.stderr).toBe(expectCode);
  return JSON.parse(r.stdout);
}

async function events(): Promise<any[]> {
  const r = await t.bgdl(['events', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

const files = (dir = t.downloads) => fs.readdirSync(dir).sort();

describe('--skip-existing', () => {
  it('does not fetch an -o destination that exists: completed, outcome skipped, event says so', async () => {
    s.route('/a.bin', { body: { size: 1000 } });
    fs.writeFileSync(path.join(t.downloads, 'mine.bin'), 'keep me');
    const [task] = await addWait([s.url('/a.bin'), '-o', 'mine.bin', '--skip-existing']);
    expect(task).toMatchObject({ state: 'completed', outcome: 'skipped', output: path.join(t.downloads, 'mine.bin') });
    expect(fs.readFileSync(path.join(t.downloads, 'mine.bin'), 'utf8')).toBe('keep me');
    expect(s.hits('/a.bin')).toBe(0);
    const [ev] = await events();
    expect(ev).toMatchObject({ taskId: task.id, type: 'completed', outcome: 'skipped' });
    expect((await t.bgdl(['events'])).stdout).toMatch(/completed \(skipped\)/);
    expect((await t.bgdl(['status', String(task.id)])).stdout).toMatch(/^outcome:\s+skipped$/m);
    // Without the file, the same command fetches it.
    const [again] = await addWait([s.url('/a.bin'), '-o', 'other.bin', '--skip-existing']);
    expect(again).toMatchObject({ state: 'completed', outcome: null });
    expect(sha256(fs.readFileSync(path.join(t.downloads, 'other.bin')))).toBe(sha256(bodyFor(1000)));
  });

  it('running the same add -i batch twice skips derived names instead of making name.1.ext copies', async () => {
    s.route('/dl/a.txt', { body: 'alpha' });
    s.route('/get', { body: 'beta', contentDisposition: 'attachment; filename="b.dat"' });
    const list = path.join(t.dir, 'list.txt');
    fs.writeFileSync(list, `${s.url('/dl/a.txt')}\n${s.url('/get?id=2')}\n`);
    const first = await addWait(['-i', list, '--skip-existing']);
    expect(first.map((x) => x.outcome)).toEqual([null, null]);
    expect(files()).toEqual(['a.txt', 'b.dat']);
    fs.writeFileSync(path.join(t.downloads, 'a.txt'), 'local edit');
    const second = await addWait(['-i', list, '--skip-existing']);
    expect(second.map((x) => [x.state, x.outcome, path.basename(x.output)])).toEqual([
      ['completed', 'skipped', 'a.txt'],
      ['completed', 'skipped', 'b.dat'],
    ]);
    expect(files()).toEqual(['a.txt', 'b.dat']);
    expect(fs.readFileSync(path.join(t.downloads, 'a.txt'), 'utf8')).toBe('local edit');
    // --if-changed on the same batch: the server has no validators, so both are fetched again, in place.
    const third = await addWait(['-i', list, '--if-changed']);
    expect(third.map((x) => [x.state, x.outcome, path.basename(x.output)])).toEqual([
      ['completed', null, 'a.txt'],
      ['completed', null, 'b.dat'],
    ]);
    expect(files()).toEqual(['a.txt', 'b.dat']);
    expect(fs.readFileSync(path.join(t.downloads, 'a.txt'), 'utf8')).toBe('alpha');
    // Without the flag a derived name still never replaces a file: today's numbered copy.
    const [plain] = await addWait([s.url('/dl/a.txt')]);
    expect(path.basename(plain.output)).toBe('a.1.txt');
  });
});

describe('--if-changed', () => {
  it('sends the recorded ETag; 304 leaves the file; a changed resource replaces it (derived name, no copies)', async () => {
    s.route('/data.json', { body: '{"v":1}', etag: '"v1"', lastModified: 'Mon, 01 Jan 2024 00:00:00 GMT', conditional: true });
    const file = path.join(t.downloads, 'data.json');
    const [first] = await addWait([s.url('/data.json'), '--if-changed']);
    expect(first).toMatchObject({ state: 'completed', outcome: null, output: file });
    expect(s.requestsTo('/data.json')[0]!.headers['if-none-match']).toBeUndefined();
    const before = fs.statSync(file);

    const [second] = await addWait([s.url('/data.json'), '--if-changed']);
    const req = s.requestsTo('/data.json')[1]!;
    expect(req.headers['if-none-match']).toBe('"v1"');
    expect(req.headers['if-modified-since']).toBe('Mon, 01 Jan 2024 00:00:00 GMT');
    expect(second).toMatchObject({ state: 'completed', outcome: 'not-modified', httpStatus: 304, output: file });
    expect(fs.statSync(file).ino).toBe(before.ino);
    expect(fs.statSync(file).mtimeMs).toBe(before.mtimeMs);
    expect((await events()).find((e) => e.taskId === second.id)).toMatchObject({ type: 'completed', outcome: 'not-modified' });

    s.route('/data.json', { body: '{"v":2}', etag: '"v2"', conditional: true });
    const [third] = await addWait([s.url('/data.json'), '--if-changed']);
    expect(s.requestsTo('/data.json')[2]!.headers['if-none-match']).toBe('"v1"');
    expect(third).toMatchObject({ state: 'completed', outcome: null, output: file, httpStatus: 200 });
    expect(fs.readFileSync(file, 'utf8')).toBe('{"v":2}');
    expect(files()).toEqual(['data.json']);
  });

  it("uses a file's mtime when the store has no record (If-Modified-Since, -o), and fetches when the server is newer", async () => {
    const file = path.join(t.downloads, 'page.html');
    fs.writeFileSync(file, 'old copy');
    fs.utimesSync(file, new Date('2024-03-01T00:00:00Z'), new Date('2024-03-01T00:00:00Z'));
    s.route('/page.html', { body: 'new copy', lastModified: 'Thu, 01 Feb 2024 00:00:00 GMT', conditional: true });
    const [same] = await addWait([s.url('/page.html'), '-o', file, '--if-changed']);
    expect(s.requestsTo('/page.html')[0]!.headers['if-modified-since']).toBe('Fri, 01 Mar 2024 00:00:00 GMT');
    expect(same).toMatchObject({ outcome: 'not-modified', state: 'completed' });
    expect(fs.readFileSync(file, 'utf8')).toBe('old copy');

    s.route('/page.html', { body: 'new copy', lastModified: 'Fri, 01 Mar 2024 12:00:00 GMT', conditional: true });
    const [changed] = await addWait([s.url('/page.html'), '-o', file, '--if-changed']);
    expect(changed).toMatchObject({ outcome: null, state: 'completed', httpStatus: 200 });
    expect(fs.readFileSync(file, 'utf8')).toBe('new copy');
  });

  it('sends the recorded Last-Modified when the server gave no ETag', async () => {
    s.route('/r.txt', { body: 'one', lastModified: 'Tue, 02 Jan 2024 00:00:00 GMT', conditional: true });
    await addWait([s.url('/r.txt'), '-o', 'r.txt', '--if-changed']);
    // The file's mtime is now (later than Last-Modified): the recorded validator is what must be sent.
    const [second] = await addWait([s.url('/r.txt'), '-o', 'r.txt', '--if-changed']);
    expect(s.requestsTo('/r.txt')[1]!.headers['if-modified-since']).toBe('Tue, 02 Jan 2024 00:00:00 GMT');
    expect(second.outcome).toBe('not-modified');
  });
});

describe('--checksums FILE', () => {
  it('verifies each task whose destination name is listed (derived names and -o), in both sha256sum forms', async () => {
    s.route('/good.bin', { body: { size: 3000, seed: 'g' } });
    s.route('/bad.bin', { body: { size: 3000, seed: 'b' } });
    s.route('/other.bin', { body: { size: 10 } });
    const sums = path.join(t.dir, 'SHA256SUMS');
    fs.writeFileSync(sums, [
      `${sha256(bodyFor(3000, 'g'))}  good.bin`,
      `${sha256('something else')} *bad.bin`,
      `${sha256(bodyFor(3000, 'g'))}  ./sub/renamed.bin`,
    ].join('\n') + '\n');
    const list = path.join(t.dir, 'list.txt');
    fs.writeFileSync(list, `${s.url('/good.bin')}\n${s.url('/bad.bin')}\n${s.url('/other.bin')}\n${s.url('/good.bin')} renamed.bin\n`);
    const tasks = await addWait(['-i', list, '--checksums', sums], 1);
    expect(tasks.map((x) => [path.basename(x.output), x.state, x.error?.code ?? null])).toEqual([
      ['good.bin', 'completed', null],
      ['bad.bin', 'failed', 'E_CHECKSUM'],
      ['other.bin', 'completed', null],
      ['renamed.bin', 'completed', null],
    ]);
    expect(tasks[3].expectedSha256).toBe(sha256(bodyFor(3000, 'g')));
    expect(tasks[0].expectedSha256).toBe(sha256(bodyFor(3000, 'g')));
    expect(tasks[1].error.message).toContain(`expected ${sha256('something else')}`);
    expect(tasks[2].expectedSha256).toBeNull();
    expect(fs.existsSync(path.join(t.downloads, 'bad.bin'))).toBe(false);
    expect(files()).toEqual(['good.bin', 'other.bin', 'renamed.bin']);
  });

  it('refuses a malformed checksums file with exit 2, adding nothing', async () => {
    const sums = path.join(t.dir, 'SUMS');
    fs.writeFileSync(sums, 'not a checksum line\n');
    const r = await t.bgdl(['add', s.url('/x'), '--checksums', sums]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^bgdl: .*SUMS line 1: not a SHA-256 checksum line/);
    expect((await t.bgdl(['status', '--json'])).stdout.trim()).toBe('[]');
  });
});

describe('--max-attempts and maxAttempts', () => {
  it('fails after N attempts with the last error; config maxAttempts applies when the flag is absent', async () => {
    s.route('/flaky', { failTimes: { status: 503, times: 100 } });
    s.route('/flaky2', { failTimes: { status: 502, times: 100 } });
    t.setConfig({ maxAttempts: '1' });
    const tasks = await addWait([s.url('/flaky'), '-o', 'f1', '--max-attempts', '3'], 1);
    expect(tasks[0]).toMatchObject({ state: 'failed', attempts: 3, httpStatus: 503, error: { code: 'E_HTTP_STATUS' } });
    expect(s.hits('/flaky')).toBe(3);
    const [other] = await addWait([s.url('/flaky2'), '-o', 'f2'], 1);
    expect(other).toMatchObject({ state: 'failed', attempts: 1, httpStatus: 502 });
    expect(other.error.message).toMatch(/HTTP 502/);
    expect(s.hits('/flaky2')).toBe(1);
  });

  it('refuses a bad count and both skip flags together (exit 2)', async () => {
    for (const [args, why] of [
      [['--max-attempts', '0'], /invalid value '0' for --max-attempts: use a whole number of at least 1/],
      [['--max-attempts', 'many'], /invalid value 'many' for --max-attempts/],
      [['--skip-existing', '--if-changed'], /--skip-existing and --if-changed cannot be used together/],
    ] as const) {
      const r = await t.bgdl(['add', s.url('/x'), ...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^bgdl: /);
      expect(r.stderr).toMatch(why);
    }
    expect((await t.bgdl(['status', '--json'])).stdout.trim()).toBe('[]');
  });
});
