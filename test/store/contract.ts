// The store contract: what every backend of TaskStore must do, whatever its engine. A backend's test
// file calls `storeContract` with a factory that makes an empty store (and can open a second
// handle on it, as another process would); see docs/ARCHITECTURE.md ("The store").

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NotFoundError, UsageError } from '../../src/shared/errors.js';
import type { NewTask, Task } from '../../src/shared/model.js';
import type { TaskStore } from '../../src/store/index.js';
import { isCandidate, isRunnableNow } from '../../src/store/rules/runnable.js';

export interface StoreFixture {
  /** Another handle on the same store (another process, or another host). */
  open(): Promise<TaskStore>;
  /** Drop everything the fixture made. */
  cleanup(): Promise<void>;
}

const rl = { base: 10_000, max: 3_600_000 };
export const newTask = (p: Partial<NewTask> = {}): NewTask => ({
  session: 'default', kind: 'download', url: 'http://a.test/f', method: 'GET', headers: [], output: null, outputFixed: false, dir: '/tmp',
  beginAt: null, discretionary: null, priority: 'normal', expectSend: null, expectReceive: null, sha256Expected: null, suspended: false,
  insecure: false, caFile: null, allowDowngrade: false, fromHook: false, ...p,
});
const fixed = (output: string) => newTask({ output, outputFixed: true, dir: output.slice(0, output.lastIndexOf('/')) });

export function storeContract(name: string, makeFixture: () => Promise<StoreFixture>): void {
  describe(`store contract: ${name}`, () => {
  let fixture: StoreFixture;
  let store: TaskStore;
  const others: TaskStore[] = [];
  const second = async () => {
    const s = await fixture.open();
    others.push(s);
    return s;
  };
  beforeEach(async () => {
    fixture = await makeFixture();
    store = await fixture.open();
  });
  afterEach(async () => {
    for (const s of others.splice(0)) await s.close();
    await store.close();
    await fixture.cleanup();
  });

  describe('store', () => {
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

    it('worker writes issued together (a store may commit them as one) each take effect and answer for themselves', async () => {
      const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
      const [a, b, c, d] = await store.enqueue([newTask(), newTask(), newTask(), newTask()], rl);
      await store.transition([d!.id], 'pause');
      // Claims asked for together: the paused task is refused, the others claimed, each with its own claim.
      const claimed = await Promise.all([a, b, c, d].map((t) => store.markRunning(t!.id, Date.now(), lease)));
      expect(claimed.map((t) => t?.state ?? null)).toEqual(['running', 'running', 'running', null]);
      const [ra, rb, rc] = claimed as Task[];
      const [done, stale, part, requeued] = await Promise.all([
        store.finishTask({ id: a!.id, claim: ra!.claim }, { state: 'completed', sha256: 'ab', bytesReceived: 7 }),
        store.finishTask({ id: b!.id, claim: rb!.claim - 1 }, { state: 'completed', sha256: 'cd' }),
        store.recordResponse({ id: c!.id, claim: rc!.claim }, { partPath: '/tmp/c.bgdl-part', partId: '1:2', resumeOffset: 0 }),
        store.requeue({ id: c!.id, claim: rc!.claim }, { notBefore: null, reason: null, resumeOffset: 0, bytesReceived: 0 }),
      ]);
      expect([done, stale, part, requeued]).toEqual([true, false, true, true]);
      // Once answered, each is what another handle (another process) reads.
      const other = await second();
      const [ta, tb, tc] = await other.getTasks([a!.id, b!.id, c!.id]);
      expect(ta).toMatchObject({ state: 'completed', sha256: 'ab', bytesReceived: 7 });
      expect(tb!.state).toBe('running');
      expect(tc).toMatchObject({ state: 'queued', partPath: '/tmp/c.bgdl-part', partId: '1:2' });
      expect((await other.listEvents({})).map((e) => [e.taskId, e.type])).toEqual([[a!.id, 'completed']]);
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
      expect(await store.recordHookStart('default', 10_001, rl, stale)).toBe('lease-lost');
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

  describe('one live task per output', () => {
    it('refuses a fixed output a live task has, naming it, and stores nothing of that batch', async () => {
      const [a] = await store.enqueue([fixed('/d/a.bin')], rl);
      await expect(store.enqueue([fixed('/d/b.bin'), fixed('/d/a.bin')], rl)).rejects.toThrow(new RegExp(`/d/a\\.bin is already the output of task ${a!.id} \\(queued\\)`));
      await expect(store.enqueue([fixed('/d/c.bin'), fixed('/d/c.bin')], rl)).rejects.toThrow(UsageError);
      expect((await store.listTasks()).map((t) => t.output)).toEqual(['/d/a.bin']);
    });

    it('counts paused tasks and derived outputs already chosen; derived tasks without a name yet do not conflict', async () => {
      const [p] = await store.enqueue([fixed('/d/p.bin'), newTask(), newTask()], rl).then((ts) => [ts[0]!]);
      await store.transition([p!.id], 'pause');
      await expect(store.enqueue([fixed('/d/p.bin')], rl)).rejects.toThrow(/\(paused\)/);
      const [d] = await store.enqueue([newTask({ dir: '/d' })], rl);
      await store.recordResponse({ id: d!.id, claim: d!.claim }, { output: '/d/derived.bin' });
      await expect(store.enqueue([fixed('/d/derived.bin')], rl)).rejects.toThrow(new RegExp(`task ${d!.id}`));
    });

    it('a final task frees its output; retry leaves a task alone whose output was taken since', async () => {
      const [a] = await store.enqueue([fixed('/d/a.bin')], rl);
      await store.transition([a!.id], 'cancel');
      const [b] = await store.enqueue([fixed('/d/a.bin')], rl);
      const r = await store.transition([a!.id], 'retry');
      expect(r.changed).toEqual([]);
      expect(r.skipped[0]!.reason).toMatch(new RegExp(`now the output of task ${b!.id}`));
      await store.transition([b!.id], 'cancel');
      expect((await store.transition([a!.id], 'retry')).changed.map((t) => t.id)).toEqual([a!.id]);
    });

    it('of two canceled tasks with one output, one retry call requeues only the first', async () => {
      const [a] = await store.enqueue([fixed('/d/x.bin')], rl);
      await store.transition([a!.id], 'cancel');
      const [b] = await store.enqueue([fixed('/d/x.bin')], rl);
      await store.transition([b!.id], 'cancel');
      const r = await store.transition([a!.id, b!.id], 'retry');
      expect(r.changed.map((t) => t.id)).toEqual([a!.id]);
      expect(r.skipped.map((s) => s.task.id)).toEqual([b!.id]);
    });
  });

  describe('runnable, change signal, hooks', () => {
    it('candidates are exactly the queued tasks isCandidate accepts, best first', async () => {
      const now = Date.now();
      const made = await store.enqueue(
        [newTask(), newTask({ beginAt: now + 60_000 }), newTask({ suspended: true }), newTask({ priority: 'low' }), newTask({ priority: 'high', beginAt: now - 1 })],
        rl, now,
      );
      const expected = made.filter((t) => isCandidate(t, now)).sort((a, b) => prio(b) - prio(a) || a.id - b.id).map((t) => t.id);
      const got = await store.runnableCandidates(now, 100);
      expect(got.map((t) => t.id)).toEqual(expected);
      expect(got[0]).toMatchObject({ priority: 'high', kind: 'download', state: 'queued', discretionary: false });
      expect((await store.runnableCandidates(now, 1)).map((t) => t.id)).toEqual(expected.slice(0, 1));
    });

    it('a session is awaiting its hook with its running and runnable counts (isRunnableNow)', async () => {
      await store.createSession('h', { hook: 'true' });
      const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
      const now = Date.now();
      const [a, b] = await store.enqueue([newTask({ session: 'h' }), newTask({ session: 'h', beginAt: now + 60_000 }), newTask({ session: 'h' })], rl, now);
      expect(await store.sessionsAwaitingHook(now)).toEqual([]);
      const ra = (await store.markRunning(a!.id, now, lease))!;
      await store.finishTask({ id: a!.id, claim: ra.claim }, { state: 'completed' }, now);
      await store.setHeld([{ id: b!.id + 1, reason: 'conditions', detail: 'on battery' }], [], lease);
      const all = await store.listTasks({ session: 'h' });
      const [w] = await store.sessionsAwaitingHook(now);
      expect(w!.session.name).toBe('h');
      expect(w!.active).toBe(0);
      expect(w!.runnable).toBe(all.filter((t) => isRunnableNow(t, now)).length);
      expect(w!.runnable).toBe(0);
      expect(await store.workSummary(now)).toEqual({ queued: 2, running: 0, pendingHooks: 1 });
    });

    it('the hook result delivers its events, or schedules the next try', async () => {
      await store.createSession('h', { hook: 'true' });
      const [a] = await store.enqueue([newTask({ session: 'h' })], rl);
      await store.transition([a!.id], 'cancel');
      const events = await store.listEvents({ session: 'h', undeliveredOnly: true });
      expect(await store.recordHookStart('h', 1000, rl, undefined, events.map((e) => e.id))).toBe('run');
      expect(await store.recordHookResult('h', [], { ok: false, error: 'exit 1', nextAt: 5000 })).toBe(true);
      expect(await store.getSession('h')).toMatchObject({ hookFailures: 1, hookNextAt: 5000, hookLastError: 'exit 1', hookRuns: 1, rateLimitCount: 1 });
      expect(await store.recordHookResult('h', events.map((e) => e.id), { ok: true })).toBe(true);
      expect(await store.listEvents({ undeliveredOnly: true })).toEqual([]);
      expect(await store.getSession('h')).toMatchObject({ hookFailures: 0, hookNextAt: null });
      // A worker that listed the same events before they were delivered does not run the hook again.
      expect(await store.recordHookStart('h', 2000, rl, undefined, events.map((e) => e.id))).toBe('busy');
      expect(await store.lastEventId()).toBe(events[0]!.id);
    });

    it("another handle's commit moves the change token and ends a wait; our own queue writes move `mine`", async () => {
      const other = await second();
      const before = store.changes();
      const waiting = store.waitForChange(before, 20_000);
      await other.enqueue([newTask()], rl);
      await waiting;
      expect(store.changes().others).not.toBe(before.others);
      const mid = store.changes();
      const [t] = await store.enqueue([newTask()], rl);
      await store.transition([t!.id], 'pause');
      expect(store.changes().mine).not.toBe(mid.mine);
      // An aborted wait returns at once.
      const ac = new AbortController();
      const w = store.waitForChange(store.changes(), 20_000, ac.signal);
      ac.abort();
      await w;
    });

    it('progress for many tasks in one call; a moved claim is reported back', async () => {
      const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
      const [a, b] = await store.enqueue([newTask(), newTask()], rl);
      const ra = (await store.markRunning(a!.id, Date.now(), lease))!;
      const rb = (await store.markRunning(b!.id, Date.now(), lease))!;
      await store.transition([b!.id], 'cancel');
      const refused = await store.recordProgress([
        { id: a!.id, claim: ra.claim, bytesReceived: 10, bytesExpected: 100, resumeOffset: 8, speed: 5 },
        { id: b!.id, claim: rb.claim, bytesReceived: 10 },
      ]);
      expect(refused).toEqual([b!.id]);
      expect(await store.getTask(a!.id)).toMatchObject({ bytesReceived: 10, bytesExpected: 100, resumeOffset: 8, speed: 5 });
      expect((await store.statesOf([a!.id, b!.id])).get(b!.id)).toEqual({ state: 'canceled', claim: rb.claim + 1 });
      const [totals] = await store.taskTotals({});
      expect(totals).toMatchObject({ session: 'default', bytesDone: 10, speed: 5 });
      expect(totals!.counts).toMatchObject({ running: 1, canceled: 1 });
    });

    it('status rows: brief projections and pages', async () => {
      const made = await store.enqueue([newTask(), newTask({ priority: 'high' }), newTask({ suspended: true })], rl);
      const brief = await store.listBriefTasks({});
      expect(brief.map((t) => t.id)).toEqual(made.map((t) => t.id));
      expect(brief[0]).toMatchObject({ id: made[0]!.id, state: 'queued', session: 'default', dir: '/tmp', error: null });
      const page = await store.briefTasksPage({ state: 'queued', limit: 1 });
      expect(page.map((t) => t.id)).toEqual([made[1]!.id]);
      expect((await store.listTasks({ states: ['paused'] })).map((t) => t.id)).toEqual([made[2]!.id]);
      await expect(store.getTasks([made[0]!.id, 424242])).rejects.toBeInstanceOf(NotFoundError);
    });

    it('prune removes finished tasks and only delivered events', async () => {
      const [a, b] = await store.enqueue([newTask(), newTask()], rl);
      await store.transition([a!.id, b!.id], 'cancel');
      const [ev] = await store.listEvents({ undeliveredOnly: true });
      await store.ackEvents([ev!.id]);
      expect(await store.prune({})).toEqual({ tasks: 2, events: 1 });
      expect(await store.listTasks()).toEqual([]);
      expect((await store.listEvents({})).map((e) => e.taskId)).toEqual([b!.id]);
    });

    it('a lapsed or expired task fails with one event under the lease', async () => {
      const lease = (await store.takeLease(process.pid, 1000, 30_000, () => true))!;
      const [a] = await store.enqueue([newTask()], rl, 1000);
      expect((await store.expiredTasks(5000, 10_000)).map((t) => t.id)).toEqual([]);
      expect((await store.expiredTasks(20_000, 10_000)).map((t) => t.id)).toEqual([a!.id]);
      expect(await store.expireTask(a!.id, lease, { state: 'failed', error: { code: 'E_TIMEOUT', message: 'late' } }, 20_000)).toBe(true);
      expect(await store.expireTask(a!.id, lease, { state: 'failed' }, 20_000)).toBe(false);
      expect((await store.listEvents({})).map((e) => e.type)).toEqual(['failed']);
    });

    it('sessions: create, update, list with counts, limits by task', async () => {
      await store.createSession('s', { hook: 'echo', limitRate: 1000 });
      await expect(store.createSession('s', {})).rejects.toBeInstanceOf(UsageError);
      await expect(store.updateSession('nope', {})).rejects.toBeInstanceOf(NotFoundError);
      expect(await store.updateSession('s', { launchEvents: false, discretionary: true })).toMatchObject({ hook: 'echo', launchEvents: false, discretionary: true, limitRate: 1000 });
      const [t] = await store.enqueue([newTask({ session: 's' })], rl);
      expect(await store.sessionLimits([t!.id])).toEqual(new Map([[t!.id, 1000]]));
      const [s] = await store.listSessions();
      expect(s).toMatchObject({ name: 's', undeliveredEvents: 0 });
      expect(s!.counts.queued).toBe(1);
      expect(t!.discretionary).toBe(true);
    });

    it('outputs in use: derived names of other live tasks in one directory', async () => {
      const [a, b] = await store.enqueue([newTask({ dir: '/d' }), newTask({ dir: '/d' })], rl);
      await store.recordResponse({ id: a!.id, claim: a!.claim }, { output: '/d/x.bin' });
      expect((await store.outputsInUse('/d', b!.id)).has('/d/x.bin')).toBe(true);
      expect((await store.outputsInUse('/d', a!.id)).has('/d/x.bin')).toBe(false);
      expect((await store.outputsInUse('/e', b!.id)).has('/d/x.bin')).toBe(false);
      expect((await store.outputsInUse('/d', b!.id)).has('/d/y.bin')).toBe(false);
      // A second name for the same task replaces the first.
      await store.recordResponse({ id: a!.id, claim: a!.claim }, { output: '/d/y.bin' });
      expect((await store.outputsInUse('/d', b!.id)).has('/d/x.bin')).toBe(false);
      expect((await store.outputsInUse('/d', b!.id)).has('/d/y.bin')).toBe(true);
      const other = await second();
      await other.transition([a!.id], 'cancel');
      expect((await store.outputsInUse('/d', b!.id)).has('/d/y.bin')).toBe(false);
    });
  });
  });
}

const prio = (t: Task) => ({ low: 0, normal: 1, high: 2 })[t.priority];
