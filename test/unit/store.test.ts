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
    const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
    const [a] = await store.enqueue([newTask({ url: 'http://user:pw@a.test/f?token=s3cret&x=1' })], rl);
    expect(await store.finishTask({ id: a!.id, claim: a!.claim }, { state: 'completed', sha256: 'ab' })).toBe(false);
    const running = (await store.markRunning(a!.id, Date.now(), lease))!;
    const fence = { id: a!.id, claim: running.claim };
    expect(await store.finishTask(fence, { state: 'completed', sha256: 'ab', bytesReceived: 5 })).toBe(true);
    expect(await store.finishTask(fence, { state: 'completed', sha256: 'ab' })).toBe(false);
    const events = await store.listEvents({});
    expect(events).toHaveLength(1);
    expect(events[0]!.url).toBe('http://***:***@a.test/f?token=***&x=1');
    expect(events[0]).toMatchObject({ type: 'completed', bytes: 5, sha256: 'ab' });
  });

  it('orphaned running tasks go back to the queue at their durable offset', async () => {
    const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
    const [a] = await store.enqueue([newTask()], rl);
    const running = (await store.markRunning(a!.id, Date.now(), lease))!;
    expect(await store.recordProgress([{ id: a!.id, claim: running.claim, bytesReceived: 900, resumeOffset: 512 }])).toEqual([]);
    const orphans = (await store.requeueOrphans(lease))!;
    expect(orphans.map((t) => t.id)).toEqual([a!.id]);
    const t = (await store.getTask(a!.id))!;
    expect(t.state).toBe('queued');
    expect(t.bytesReceived).toBe(512);
  });

  it('the lease goes to one holder; a dead pid or a lapsed heartbeat frees it', async () => {
    const alive = (pid: number) => pid === 100 || pid === 200;
    expect(await store.takeLease(100, 1000, 60_000, alive)).toEqual({ pid: 100, token: 1 });
    expect(await store.takeLease(200, 2000, 60_000, alive)).toBeNull();
    expect(await store.takeLease(200, 62_000, 60_000, alive)).toEqual({ pid: 200, token: 2 }); // heartbeat lapsed
    expect(await store.takeLease(300, 63_000, 60_000, (pid) => pid === 300)).toEqual({ pid: 300, token: 3 }); // 200 is dead
    // Released, the lease is free, and the next holder's token still grows.
    await store.releaseLease({ pid: 300, token: 3 });
    expect(await store.readLease()).toBeNull();
    expect(await store.takeLease(400, 64_000, 60_000, () => true)).toEqual({ pid: 400, token: 4 });
  });
});

describe('store fencing', () => {
  const alive = () => true;

  it('a worker that lost its lease (same pid, older token) changes nothing', async () => {
    const stale = (await store.takeLease(process.pid, 1000, 5000, alive))!;
    const [a, b] = await store.enqueue([newTask(), newTask()], rl);
    const running = (await store.markRunning(a!.id, 1000, stale))!;
    // Frozen past its lease: another worker takes it over.
    const fresh = (await store.takeLease(process.pid + 1, 10_000, 5000, alive))!;
    expect(fresh.token).toBeGreaterThan(stale.token);
    expect(await store.heartbeat(stale, 10_001)).toBe(false);
    expect(await store.markRunning(b!.id, 10_001, stale)).toBeNull();
    expect(await store.requeueOrphans(stale)).toBeNull();
    expect(await store.setHeld([{ id: b!.id, reason: 'conditions', detail: null }], [], stale)).toBe(false);
    expect(await store.recordHookStart('default', 10_001, rl, stale)).toBe(false);
    expect(await store.recordHookResult('default', [], { ok: true }, 10_001, stale)).toBe(false);
    expect(await store.expireTask(b!.id, stale, { state: 'failed' })).toBe(false);
    expect((await store.getTask(b!.id))!.state).toBe('queued');
    // The new worker re-queues the orphan with a new claim: the old attempt's writes are all refused.
    expect((await store.requeueOrphans(fresh))!.map((t) => t.id)).toEqual([a!.id]);
    const old = { id: a!.id, claim: running.claim };
    const claimed = (await store.markRunning(a!.id, 10_002, fresh))!;
    expect(claimed.claim).toBeGreaterThan(old.claim);
    expect(await store.recordProgress([{ id: a!.id, claim: old.claim, bytesReceived: 5, resumeOffset: 5 }])).toEqual([a!.id]);
    expect(await store.recordResponse(old, { etag: '"old"', partPath: '/x.bgdl-part', partId: '1:2' })).toBe(false);
    expect(await store.requeue(old, { notBefore: null, reason: null })).toBe(false);
    expect(await store.holdsClaim(old)).toBe(false);
    expect(await store.finishTask(old, { state: 'completed', sha256: 'bad' })).toBe(false);
    const now = (await store.getTask(a!.id))!;
    expect(now).toMatchObject({ state: 'running', etag: null, partPath: null, resumeOffset: 0, sha256: null });
    // The current attempt's writes apply.
    const cur = { id: a!.id, claim: claimed.claim };
    expect(await store.recordResponse(cur, { etag: '"new"', partPath: '/x.bgdl-part', partId: '1:3', partBoot: 'b/1' })).toBe(true);
    expect(await store.holdsClaim(cur)).toBe(true);
    expect(await store.finishTask(cur, { state: 'completed', sha256: 'good' })).toBe(true);
    expect((await store.listEvents({})).filter((e) => e.taskId === a!.id).map((e) => e.sha256)).toEqual(['good']);
  });

  it('canceled tasks with a recorded partial file are listed for removal, and forgotten only under the lease', async () => {
    const lease = (await store.takeLease(process.pid, 1000, 5000, alive))!;
    const [a] = await store.enqueue([newTask()], rl);
    const running = (await store.markRunning(a!.id, 1000, lease))!;
    expect(await store.recordResponse({ id: a!.id, claim: running.claim }, { partPath: '/d/f.bgdl-part', partId: '1:2' })).toBe(true);
    expect(await store.canceledParts()).toEqual([]);
    await store.transition([a!.id], 'cancel');
    expect(await store.canceledParts()).toEqual([{ id: a!.id, session: 'default', partPath: '/d/f.bgdl-part', partId: '1:2' }]);
    const next = (await store.takeLease(process.pid + 1, 10_000, 5000, alive))!;
    expect(await store.forgetParts([a!.id], lease)).toBe(false);
    expect(await store.canceledParts()).toHaveLength(1);
    expect(await store.forgetParts([a!.id], next)).toBe(true);
    expect(await store.canceledParts()).toEqual([]);
  });

  it('pause keeps the claim (the stopping attempt records its offset); cancel moves it on', async () => {
    const lease = (await store.takeLease(process.pid, Date.now(), 30_000, alive))!;
    const [a] = await store.enqueue([newTask()], rl);
    const running = (await store.markRunning(a!.id, Date.now(), lease))!;
    const fence = { id: a!.id, claim: running.claim };
    const paused = await store.transition([a!.id], 'pause');
    expect(paused.previous.get(a!.id)).toBe('running');
    expect(await store.recordStopped(fence, { resumeOffset: 100, bytesReceived: 120 })).toBe(true);
    expect((await store.getTask(a!.id))!.resumeOffset).toBe(100);
    await store.transition([a!.id], 'cancel');
    expect(await store.recordStopped(fence, { resumeOffset: 200, bytesReceived: 200 })).toBe(false);
    expect((await store.getTask(a!.id))!.claim).toBeGreaterThan(fence.claim);
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
