// The SQLite backend: the store contract, and what only a file-backed store has (modes, WAL, refusing
// foreign, damaged and newer files).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreError } from '../../src/shared/errors.js';
import { SqliteStore as Store } from '../../src/store/index.js';
import { leaseLooksLive } from '../../src/store/sqlite/lease-peek.js';
import type { Task } from '../../src/shared/model.js';
import { newTask, storeContract } from './contract.js';

storeContract('sqlite', async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-store-'));
  return {
    open: () => Store.open(path.join(home, 'h')),
    cleanup: async () => fs.rmSync(home, { recursive: true, force: true }),
  };
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

describe('sqlite store', () => {
  it('creates BGDL_HOME 0700 and the database 0600 in WAL mode', () => {
    expect(fs.statSync(path.join(home, 'h')).mode & 0o777).toBe(0o700);
    expect(fs.statSync(store.file).mode & 0o777).toBe(0o600);
    const db = new Database(store.file, { readonly: true });
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
  });

  it('writes issued together are committed at the end of the turn, before they answer; close commits what is waiting', async () => {
    const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
    const [a, b] = await store.enqueue([newTask(), newTask()], { base: 10_000, max: 3_600_000 });
    const other = await Store.open(path.join(home, 'h'));
    const [ra, rb] = (await Promise.all([a, b].map((t) => store.markRunning(t!.id, Date.now(), lease)))) as Task[];
    expect([ra!.state, rb!.state]).toEqual(['running', 'running']);
    const finished = store.finishTask({ id: a!.id, claim: ra!.claim }, { state: 'completed', sha256: 'ab' });
    // Not committed before it answers: another process still sees the task running.
    expect((await other.getTask(a!.id))!.state).toBe('running');
    const requeued = store.requeue({ id: b!.id, claim: rb!.claim }, { notBefore: null, reason: null });
    await store.close();
    expect([await finished, await requeued]).toEqual([true, true]);
    expect((await other.getTasks([a!.id, b!.id])).map((t) => t.state)).toEqual(['completed', 'queued']);
    await other.close();
    store = await Store.open(path.join(home, 'h'));
  });
});

describe('many ids at once', () => {
  it('statesOf and getTasks answer for more tasks than SQLite takes parameters in one statement', async () => {
    // `bgdl wait` asks about every task it watches: a session of 40,000 is more than 32,766 parameters.
    const tasks = await store.enqueue(Array.from({ length: 40_000 }, () => newTask()), { base: 10_000, max: 3_600_000 });
    const ids = tasks.map((t) => t.id);
    const states = await store.statesOf(ids);
    expect(states.size).toBe(40_000);
    expect(states.get(ids[39_999]!)).toEqual({ state: 'queued', claim: tasks[39_999]!.claim });
    expect((await store.getTasks(ids)).map((t) => t.id)).toEqual(ids);
  });
});

describe('group commit', () => {
  it('a write of the group that throws is refused alone: the writes beside it are committed', async () => {
    const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
    const [a, b, c] = await store.enqueue([newTask(), newTask(), newTask()], { base: 10_000, max: 3_600_000 });
    const ra = (await store.markRunning(a!.id, Date.now(), lease))!;
    // Issued in one turn: a claim, a write that cannot be bound (it throws inside the transaction), a finish.
    const claimB = store.markRunning(b!.id, Date.now(), lease);
    const bad = store.recordResponse({ id: a!.id, claim: ra.claim }, { etag: { not: 'bindable' } as never, httpStatus: 299 });
    const claimC = store.markRunning(c!.id, Date.now(), lease);
    await expect(bad).rejects.toThrow();
    expect((await claimB)?.state).toBe('running');
    expect((await claimC)?.state).toBe('running');
    const other = await Store.open(path.join(home, 'h'));
    expect((await other.getTasks([a!.id, b!.id, c!.id])).map((t) => [t.state, t.httpStatus])).toEqual([
      ['running', null],
      ['running', null],
      ['running', null],
    ]);
    await other.close();
  });
});

describe('claims ahead (previewClaim)', () => {
  it('shows the task exactly as markRunning then returns it; null once it is not queued', async () => {
    const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
    const [a, b] = await store.enqueue([newTask(), newTask()], { base: 10_000, max: 3_600_000 });
    const preview = store.previewClaim(a!.id, 5_000);
    expect(preview).toMatchObject({ state: 'running', attempts: 1, claim: a!.claim + 1, startedAt: 5_000 });
    expect(await store.markRunning(a!.id, 5_000, lease)).toEqual(preview);
    // markRunning answers with the preview: the row as written must be exactly that.
    expect(await store.getTask(a!.id)).toEqual(preview);
    expect(store.previewClaim(a!.id, 6_000)).toBeNull(); // running now
    // A second attempt keeps the first start time and counts on.
    expect(await store.requeue({ id: a!.id, claim: preview!.claim }, { notBefore: null, reason: 'retry', error: { code: 'E_X', message: 'x' } })).toBe(true);
    const again = store.previewClaim(a!.id, 7_000);
    expect(again).toMatchObject({ attempts: 2, claim: a!.claim + 2, startedAt: 5_000, waitReason: null, notBefore: null });
    expect(await store.markRunning(a!.id, 7_000, lease)).toEqual(again);
    // A command's pause between the preview and the claim: the claim is refused.
    const ahead = store.previewClaim(b!.id, 8_000);
    expect(ahead).not.toBeNull();
    await store.transition([b!.id], 'pause');
    expect(await store.markRunning(b!.id, 8_000, lease)).toBeNull();
  });

  it('a task canceled and retried between the preview and the claim is not claimed as previewed', async () => {
    const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
    const [a] = await store.enqueue([newTask()], { base: 10_000, max: 3_600_000 });
    const other = await Store.open(path.join(home, 'h'));
    const preview = store.previewClaim(a!.id, 5_000)!;
    const claim = store.markRunning(a!.id, 5_000, lease);
    // Another process, before this turn's writes commit: queued again, but under a newer claim.
    await other.transition([a!.id], 'cancel');
    await other.transition([a!.id], 'retry');
    expect((await other.getTask(a!.id))!.state).toBe('queued');
    expect(preview.claim).toBe(a!.claim + 1);
    expect(await claim).toBeNull();
    expect((await other.getTask(a!.id))!.state).toBe('queued');
    await other.close();
  });

  it("a requeue moves the queue's epoch when it is committed, not only when it is asked for", async () => {
    const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
    const [a] = await store.enqueue([newTask()], { base: 10_000, max: 3_600_000 });
    const running = (await store.markRunning(a!.id, Date.now(), lease))!;
    const requeued = store.requeue({ id: a!.id, claim: running.claim }, { notBefore: Date.now() + 60_000, reason: 'retry' });
    // The worker looks at the queue while the write waits for its group: the retry time is not there yet...
    const seen = store.changes().mine;
    expect(await store.nextWakeAt(Date.now())).toBeNull();
    await requeued;
    // ...and the epoch it saw is not the one after the commit, so it looks again and finds it.
    expect(store.changes().mine).not.toBe(seen);
    expect(await store.nextWakeAt(Date.now())).toBeGreaterThan(Date.now());
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

describe('a look at the lease without opening the store (leaseLooksLive)', () => {
  const look = (h: string, isAlive = (_pid: number) => true) => leaseLooksLive(h, Date.now(), 30_000, isAlive);

  it('no store, or a store nobody has open: no worker, and nothing is created', async () => {
    expect(look(path.join(home, 'none'))).toBe(false);
    expect(fs.existsSync(path.join(home, 'none'))).toBe(false);
    await store.close();
    expect(fs.existsSync(store.file + '-wal')).toBe(false);
    expect(look(path.join(home, 'h'))).toBe(false);
    expect(fs.existsSync(store.file + '-wal')).toBe(false);
    store = await Store.open(path.join(home, 'h'));
  });

  it('an open store: the lease as the store itself judges it', async () => {
    const h = path.join(home, 'h');
    expect(look(h)).toBe(false);
    const fence = await store.takeLease(4242, Date.now(), 30_000, () => true);
    expect(fence).not.toBeNull();
    expect(look(h)).toBe(true);
    expect(look(h, (pid) => pid !== 4242)).toBe(false);
    expect(leaseLooksLive(h, Date.now() + 60_000, 30_000, () => true)).toBe(false);
    await store.releaseLease(fence!);
    expect(look(h)).toBe(false);
  });

  it('a file it cannot read counts as a live worker (no head start)', () => {
    const h = path.join(home, 'bad');
    fs.mkdirSync(h);
    fs.writeFileSync(path.join(h, 'bgdl.db'), 'not a database');
    fs.writeFileSync(path.join(h, 'bgdl.db-wal'), '');
    expect(look(h)).toBe(true);
  });
});
