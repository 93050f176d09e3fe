// Cron-batch decisions as pure functions: the checksums-file parser, the --if-changed conditional
// headers, the derived-name rule of --skip-existing/--if-changed, the selection of the control
// commands, and the store's filter-driven transition, lookup and prune.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { controlTarget, parseStates } from '../../src/cli/selection.js';
import { parseChecksums } from '../../src/shared/checksums.js';
import { UsageError } from '../../src/shared/errors.js';
import type { NewTask } from '../../src/shared/model.js';
import { SqliteStore as Store, type DownloadRecord } from '../../src/store/index.js';
import { conditionalHeaders, derivedDecision, expectedSha256, hasConditionalHeader } from '../../src/worker/batch.js';

const A = 'a'.repeat(64);
const B = 'B'.repeat(64);

describe('parseChecksums', () => {
  it.each([
    ['text mode', `${A}  file.iso\n`, { 'file.iso': A }],
    ['binary mode', `${A} *file.iso\n`, { 'file.iso': A }],
    ['upper-case hex is lowered', `${B}  x\n`, { x: B.toLowerCase() }],
    ['paths reduce to the base name', `${A}  ./dist/sub/pkg.tar.gz\n`, { 'pkg.tar.gz': A }],
    ['names with spaces', `${A}  my file.txt\n`, { 'my file.txt': A }],
    ['escaped names', `\\${A}  new\\nline\\\\x\n`, { 'new\nline\\x': A }],
    ['BSD tag form', `SHA256 (file.iso) = ${A}\n`, { 'file.iso': A }],
    ['comments, blank lines, CRLF', `# sums\n\n${A}  a\r\n${B}  b\r\n`, { a: A, b: B.toLowerCase() }],
    ['the same sum twice is fine', `${A}  a\n${A}  dir/a\n`, { a: A }],
  ])('%s', (_, text, expected) => {
    expect(parseChecksums(text, 'SUMS')).toEqual(expected);
  });

  it.each([
    ['a short hex', `abc  file\n`, /SUMS line 1: not a SHA-256 checksum line/],
    ['one space only after a non-binary marker', `${A}file\n`, /line 1/],
    ['an MD5 sum', `${'a'.repeat(32)}  file\n`, /line 1/],
    ['a second, different sum', `${A}  f\n${B}  f\n`, /line 2: a second, different checksum for f/],
    ['no name', `${A}  ..\n`, /line 1: no file name/],
  ])('refuses %s', (_, text, why) => {
    expect(() => parseChecksums(text, 'SUMS')).toThrow(UsageError);
    expect(() => parseChecksums(text, 'SUMS')).toThrow(why);
  });
});

describe('conditionalHeaders', () => {
  const url = 'http://h/f';
  const file = { size: 10, mtimeMs: Date.parse('2024-03-01T00:00:00.700Z') };
  const rec = (p: Partial<DownloadRecord>): DownloadRecord => ({ url, output: '/d/f', etag: null, lastModified: null, bytes: 10, finishedAt: 0, ...p });
  const mtime: [string, string] = ['If-Modified-Since', 'Fri, 01 Mar 2024 00:00:00 GMT'];
  it.each([
    ['no file: no condition', null, rec({ etag: '"e"' }), []],
    ['no record: the mtime (whole seconds)', file, null, [mtime]],
    ['a record with an ETag and Last-Modified', file, rec({ etag: '"e"', lastModified: 'Mon, 01 Jan 2024 00:00:00 GMT' }),
      [['If-None-Match', '"e"'], ['If-Modified-Since', 'Mon, 01 Jan 2024 00:00:00 GMT']]],
    ['a weak ETag is sent as it is', file, rec({ etag: 'W/"e"' }), [['If-None-Match', 'W/"e"']]],
    ['a record without validators: the mtime', file, rec({}), [mtime]],
    ['a record of another URL: the mtime', file, rec({ url: 'http://h/other', etag: '"e"' }), [mtime]],
    ['the file changed size since it was written: fetch', file, rec({ etag: '"e"', bytes: 11 }), []],
  ])('%s', (_, f, r, expected) => {
    expect(conditionalHeaders(f, r, url)).toEqual(expected);
  });

  it("the user's own conditional headers win", () => {
    expect(hasConditionalHeader([['if-none-match', '"x"']])).toBe(true);
    expect(hasConditionalHeader([['If-Modified-Since', 'x']])).toBe(true);
    expect(hasConditionalHeader([['X-If-Changed', '1']])).toBe(false);
  });
});

describe('derivedDecision', () => {
  const base = { skipExisting: false, ifChanged: false, wanted: '/d/a.txt', free: '/d/a.txt', taken: false, exists: false, hasPart: false };
  it.each([
    ['a free name is used', {}, 'use'],
    ['skip-existing: an existing name is skipped', { skipExisting: true, free: '/d/a.1.txt', exists: true }, 'skip'],
    ['if-changed: an existing name is replaced', { ifChanged: true, free: '/d/a.1.txt', exists: true }, 'use'],
    ['neither flag: numbered as always', { free: '/d/a.1.txt', exists: true }, 'numbered'],
    ['a name another live task holds: numbered', { skipExisting: true, free: '/d/a.1.txt', exists: true, taken: true }, 'numbered'],
    ['a name with a partial file: numbered', { ifChanged: true, free: '/d/a.1.txt', exists: true, hasPart: true }, 'numbered'],
    ['not a regular file (a directory): numbered', { skipExisting: true, free: '/d/a.1.txt', exists: false }, 'numbered'],
  ])('%s', (_, o, expected) => {
    expect(derivedDecision({ ...base, ...o })).toBe(expected);
  });

  it('expectedSha256: --sha256 first, then the base name in --checksums', () => {
    expect(expectedSha256({ sha256Expected: A, checksums: { 'f.bin': B } }, '/d/f.bin')).toBe(A);
    expect(expectedSha256({ sha256Expected: null, checksums: { 'f.bin': B } }, '/d/f.bin')).toBe(B);
    expect(expectedSha256({ sha256Expected: null, checksums: { 'f.bin': B } }, '/d/g.bin')).toBeNull();
    expect(expectedSha256({ sha256Expected: null, checksums: { 'f.bin': B } }, null)).toBeNull();
    expect(expectedSha256({ sha256Expected: null, checksums: { 'f.bin': B } }, '/d/constructor')).toBeNull();
  });
});

describe('selection', () => {
  it.each([
    [[1, 2], {}, [1, 2]],
    [[], { all: true }, {}],
    [[], { session: 'a' }, { session: 'a' }],
    [[], { state: 'failed,canceled' }, { states: ['failed', 'canceled'] }],
    [[], { session: 'a', state: 'QUEUED' }, { session: 'a', states: ['queued'] }],
  ])('%j %j', (ids, o, expected) => {
    expect(controlTarget('cancel', ids, o)).toEqual(expected);
  });

  it.each([
    [[1], { all: true }],
    [[1], { session: 'a' }],
    [[1], { state: 'paused' }],
    [[], {}],
    [[], { all: true, state: 'paused' }],
    [[], { state: 'nope' }],
    [[], { session: '../x' }],
  ])('refuses %j %j', (ids, o) => {
    expect(() => controlTarget('cancel', ids, o)).toThrow(UsageError);
  });

  it('parseStates limits prune to final states', () => {
    expect(parseStates('completed, failed', ['completed', 'failed', 'canceled'])).toEqual(['completed', 'failed']);
    expect(() => parseStates('queued', ['completed', 'failed', 'canceled'])).toThrow(/invalid state 'queued'/);
  });
});

describe('store: filters, lookups and prune', () => {
  const rl = { base: 10_000, max: 3_600_000 };
  const newTask = (p: Partial<NewTask> = {}): NewTask => ({
    session: 'a', kind: 'download', url: 'http://a.test/f', method: 'GET', headers: [], output: null, outputFixed: false, dir: '/d',
    beginAt: null, discretionary: null, priority: 'normal', expectSend: null, expectReceive: null, sha256Expected: null, suspended: false,
    insecure: false, caFile: null, allowDowngrade: false, fromHook: false, ...p,
  });
  let home: string;
  let store: Store;
  beforeEach(async () => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-batch-'));
    store = await Store.open(path.join(home, 'h'));
  });
  afterEach(async () => {
    await store.close();
    fs.rmSync(home, { recursive: true, force: true });
  });

  async function complete(id: number, info: Parameters<Store['finishTask']>[1], at: number) {
    const lease = (await store.takeLease(process.pid, at, 30_000, () => true))!;
    const running = (await store.markRunning(id, at, lease))!;
    expect(running).not.toBeNull();
    expect(await store.finishTask({ id, claim: running.claim }, info, at)).toBe(true);
  }

  it('a filtered transition takes only the states the action applies to', async () => {
    const [t1, t2, t3] = await store.enqueue([newTask({ suspended: true }), newTask(), newTask({ session: 'b', suspended: true })], rl);
    const r = await store.transition({ session: 'a' }, 'resume');
    expect(r.changed.map((t) => t.id)).toEqual([t1!.id]);
    expect(r.skipped).toEqual([]);
    expect(r.previous.get(t1!.id)).toBe('paused');
    const c = await store.transition({ states: ['paused', 'completed'] }, 'cancel');
    expect(c.changed.map((t) => t.id)).toEqual([t3!.id]);
    expect((await store.listTasks({ states: ['queued'] })).map((t) => t.id)).toEqual([t1!.id, t2!.id]);
  });

  it('lastDownloadOf / lastOutputOf: the latest completed download that wrote a file, not skips or 304s', async () => {
    const [t1, t2, t3] = await store.enqueue([newTask(), newTask(), newTask()], rl);
    await complete(t1!.id, { state: 'completed', output: '/d/f', bytesReceived: 5 }, 1000);
    await store.recordResponse({ id: t1!.id, claim: (await store.getTask(t1!.id))!.claim }, { etag: '"1"' });
    await complete(t2!.id, { state: 'completed', output: '/d/f', bytesReceived: 0, outcome: 'not-modified' }, 2000);
    await complete(t3!.id, { state: 'completed', output: '/d/f', bytesReceived: 0, outcome: 'skipped' }, 3000);
    expect(await store.lastDownloadOf('/d/f')).toEqual({ url: 'http://a.test/f', output: '/d/f', etag: '"1"', lastModified: null, bytes: 5, finishedAt: 1000 });
    expect(await store.lastDownloadOf('/d/g')).toBeNull();
    expect(await store.lastOutputOf('http://a.test/f', '/d')).toBe('/d/f');
    expect(await store.lastOutputOf('http://a.test/f', '/e')).toBeNull();
  });

  it('prune removes finished tasks by session, state and age with their delivered events only', async () => {
    const [t1, t2, t3, t4] = await store.enqueue([newTask(), newTask(), newTask({ session: 'b' }), newTask()], rl);
    await complete(t1!.id, { state: 'completed' }, 1000);
    await complete(t2!.id, { state: 'failed', error: { code: 'E', message: 'x' } }, 5000);
    await complete(t3!.id, { state: 'completed' }, 1000);
    const evs = await store.listEvents();
    await store.ackEvents(evs.filter((e) => e.taskId !== t3!.id).map((e) => e.id));
    expect(await store.prune({ states: ['completed'], session: 'a', finishedBefore: 500 })).toEqual({ tasks: 0, events: 0 });
    expect(await store.prune({ states: ['completed', 'queued'], session: 'a' })).toEqual({ tasks: 1, events: 1 });
    expect(await store.prune({ finishedBefore: 4000 })).toEqual({ tasks: 1, events: 0 });
    expect((await store.listTasks()).map((t) => t.id)).toEqual([t2!.id, t4!.id]);
    expect((await store.listEvents()).map((e) => e.taskId).sort()).toEqual([t2!.id, t3!.id].sort());
  });
});
