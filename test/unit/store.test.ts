import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NotFoundError, StoreError, UsageError } from '../../src/shared/errors.js';
import type { NewTask } from '../../src/shared/model.js';
import { Store } from '../../src/store/index.js';

const rl = { base: 10_000, max: 3_600_000 };
const newTask = (p: Partial<NewTask> = {}): NewTask => ({
  session: 'default', kind: 'download', url: 'http://a.test/f', method: 'GET', headers: [], output: null, outputFixed: false, dir: '/tmp',
  beginAt: null, discretionary: null, priority: 'normal', expectSend: null, expectReceive: null, sha256Expected: null, suspended: false,
  insecure: false, caFile: null, allowDowngrade: false, fromHook: false, ...p,
});

let home: string;
let store: Store;
beforeEach(async () => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-store-'));
  store = await Store.open(path.join(home, 'h'));
});
afterEach(async () => {
  await store.close();
  fs.rmSync(home, { recursive: true, force: true });
});

describe('store', () => {
  it('creates BGDL_HOME 0700 and the database 0600 in WAL mode', () => {
    expect(fs.statSync(path.join(home, 'h')).mode & 0o777).toBe(0o700);
    expect(fs.statSync(store.file).mode & 0o777).toBe(0o600);
    const db = new Database(store.file, { readonly: true });
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
  });

  it('enqueues a batch with unique ids, creating the session', async () => {
    const tasks = await store.enqueue([newTask(), newTask({ session: 'other', suspended: true })], rl);
    expect(tasks.map((t) => t.state)).toEqual(['queued', 'paused']);
    expect(new Set(tasks.map((t) => t.id)).size).toBe(2);
    expect((await store.listSessions()).map((s) => s.name)).toEqual(['default', 'other']);
  });

  it('hook-added tasks are discretionary and take the rate-limit delay of the streak', async () => {
    await store.createSession('s', {});
    await store.recordHookStart('s', 1000, rl);
    await store.recordHookStart('s', 2000, rl);
    const [t] = await store.enqueue([newTask({ session: 's', fromHook: true })], rl, 3000);
    expect(t!.discretionary).toBe(true);
    expect(t!.waitReason).toBe('rate-limit');
    expect(t!.notBefore).toBe(3000 + rl.base);
    const [n] = await store.enqueue([newTask({ session: 's', fromHook: true, discretionary: false })], rl, 3000);
    expect(n!.discretionary).toBe(false);
    await store.resetRateLimit('s');
    const [r] = await store.enqueue([newTask({ session: 's', fromHook: true })], rl, 3000);
    expect(r!.notBefore).toBeNull();
  });

  it('pause, resume, cancel and retry follow the state rules; cancel records its event', async () => {
    const [a, b] = await store.enqueue([newTask(), newTask()], rl);
    expect((await store.transition([a!.id], 'pause')).changed[0]!.state).toBe('paused');
    expect((await store.transition([a!.id], 'pause')).skipped[0]!.reason).toBe('already paused');
    expect((await store.transition([a!.id], 'resume')).changed[0]!.state).toBe('queued');
    expect((await store.transition([b!.id], 'retry')).skipped[0]!.reason).toMatch(/only failed or canceled/);
    expect((await store.transition([b!.id], 'cancel')).changed[0]!.state).toBe('canceled');
    const events = await store.listEvents({ undeliveredOnly: true });
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ taskId: b!.id, type: 'canceled' });
    expect((await store.transition([b!.id], 'retry')).changed[0]!.state).toBe('queued');
  });

  it('an unknown id changes nothing and is NotFound', async () => {
    const [a] = await store.enqueue([newTask()], rl);
    await expect(store.transition([a!.id, 999], 'pause')).rejects.toBeInstanceOf(NotFoundError);
    expect((await store.getTask(a!.id))!.state).toBe('queued');
  });

  it('finishing a task records exactly one event, redacted, and only from running', async () => {
    const [a] = await store.enqueue([newTask({ url: 'http://user:pw@a.test/f?token=s3cret&x=1' })], rl);
    expect(await store.finishTask(a!.id, { state: 'completed', sha256: 'ab' })).toBe(false);
    await store.markRunning(a!.id, Date.now());
    expect(await store.finishTask(a!.id, { state: 'completed', sha256: 'ab', bytesReceived: 5 })).toBe(true);
    expect(await store.finishTask(a!.id, { state: 'completed', sha256: 'ab' })).toBe(false);
    const events = await store.listEvents({});
    expect(events).toHaveLength(1);
    expect(events[0]!.url).toBe('http://***:***@a.test/f?token=***&x=1');
    expect(events[0]).toMatchObject({ type: 'completed', bytes: 5, sha256: 'ab' });
  });

  it('orphaned running tasks go back to the queue at their durable offset', async () => {
    const [a] = await store.enqueue([newTask()], rl);
    await store.markRunning(a!.id, Date.now());
    await store.recordProgress([{ id: a!.id, bytesReceived: 900, resumeOffset: 512 }]);
    const orphans = await store.requeueOrphans();
    expect(orphans.map((t) => t.id)).toEqual([a!.id]);
    const t = (await store.getTask(a!.id))!;
    expect(t.state).toBe('queued');
    expect(t.bytesReceived).toBe(512);
  });

  it('the lease goes to one holder; a dead pid or a lapsed heartbeat frees it', async () => {
    const alive = (pid: number) => pid === 100 || pid === 200;
    expect(await store.takeLease(100, 1000, 60_000, alive)).toBe(true);
    expect(await store.takeLease(200, 2000, 60_000, alive)).toBe(false);
    expect(await store.takeLease(200, 62_000, 60_000, alive)).toBe(true); // heartbeat lapsed
    expect(await store.takeLease(300, 63_000, 60_000, (pid) => pid === 300)).toBe(true); // 200 is dead
  });

  it('runnable candidates skip future begin-at and retry times', async () => {
    const now = Date.now();
    const [a, b, c] = await store.enqueue([newTask({ beginAt: now + 60_000 }), newTask(), newTask({ priority: 'high' })], rl);
    expect((await store.runnableCandidates(now, 10)).map((t) => t.id)).toEqual([c!.id, b!.id]);
    expect(await store.nextWakeAt(now)).toBe(a!.beginAt);
  });

  it('refuses a session rm while tasks are unfinished', async () => {
    await store.enqueue([newTask({ session: 'x' })], rl);
    await expect(store.removeSession('x')).rejects.toBeInstanceOf(UsageError);
    await expect(store.removeSession('nope')).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('store files', () => {
  it('a corrupt file is a StoreError naming the file', async () => {
    const h = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-bad-'));
    fs.writeFileSync(path.join(h, 'bgdl.db'), 'this is not a database at all'.repeat(200));
    await expect(Store.open(h)).rejects.toThrow(StoreError);
    await expect(Store.open(h)).rejects.toThrow(path.join(h, 'bgdl.db'));
  });
  it('a store from a newer bgdl is refused', async () => {
    const h = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-new-'));
    (await Store.open(h)).close();
    const db = new Database(path.join(h, 'bgdl.db'));
    db.pragma('user_version = 99');
    db.close();
    await expect(Store.open(h)).rejects.toThrow(/newer bgdl/);
  });
  it('a foreign SQLite database is refused', async () => {
    const h = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-foreign-'));
    const db = new Database(path.join(h, 'bgdl.db'));
    db.exec('CREATE TABLE photos (id INTEGER)');
    db.close();
    await expect(Store.open(h)).rejects.toThrow(/not a bgdl store/);
  });
});
