// The PostgreSQL backend: the store contract, and what only a store shared by many workers has
// (per-task leases that lapse, perHost across workers, one hook run per batch, schema versions).

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreError } from '../../src/shared/errors.js';
import { PgStore } from '../../src/store/postgres/store.js';
import { freshSchema, pgQuery, withPostgres } from '../helpers/pg.js';
import { newTask, storeContract } from './contract.js';

const rl = { base: 10_000, max: 3_600_000 };
const alive = () => true;

withPostgres('postgres store', (base) => {
  storeContract('postgres', async () => {
    const s = freshSchema(base);
    return { open: () => PgStore.open(s.url, { home: '/test/home', staleMs: 30_000 }), cleanup: s.drop };
  });

  describe('postgres: many workers on one store', () => {
    let s: ReturnType<typeof freshSchema>;
    const opened: PgStore[] = [];
    const open = async (home: string, staleMs = 5_000) => {
      const st = await PgStore.open(s.url, { home, staleMs });
      opened.push(st);
      return st;
    };
    beforeEach(() => {
      s = freshSchema(base);
    });
    afterEach(async () => {
      for (const st of opened.splice(0)) await st.close();
      await s.drop();
    });

    it('each home has its own worker lease; both workers claim tasks', async () => {
      const a = await open('/hosts/a');
      const b = await open('/hosts/b');
      const la = (await a.takeLease(1001, Date.now(), 5_000, alive))!;
      const lb = (await b.takeLease(1002, Date.now(), 5_000, alive))!;
      expect(la).toBeTruthy();
      expect(lb).toBeTruthy();
      const [t1, t2] = await a.enqueue([newTask({ url: 'http://one.test/a' }), newTask({ url: 'http://two.test/b' })], rl);
      expect(await a.markRunning(t1!.id, Date.now(), la)).toMatchObject({ state: 'running' });
      // Claimed already: the other worker gets nothing.
      expect(await b.markRunning(t1!.id, Date.now(), lb)).toBeNull();
      expect(await b.markRunning(t2!.id, Date.now(), lb)).toMatchObject({ state: 'running' });
    });

    /** Two hosts' workers, each holding its lease, and tasks to these URLs. */
    const twoWorkers = async (urls: string[]) => {
      const a = await open('/hosts/a');
      const b = await open('/hosts/b');
      const la = (await a.takeLease(1001, Date.now(), 5_000, alive))!;
      const lb = (await b.takeLease(1002, Date.now(), 5_000, alive))!;
      const tasks = await a.enqueue(urls.map((url) => newTask({ url })), rl);
      return { a, b, la, lb, tasks };
    };

    it('perHost counts the running tasks of every worker', async () => {
      const { a, b, la, lb, tasks: [t1, t2, t3] } = await twoWorkers(['http://same.test/1', 'http://same.test/2', 'http://other.test/3']);
      expect(await a.markRunning(t1!.id, Date.now(), la, { perHost: 1 })).not.toBeNull();
      expect(await b.markRunning(t2!.id, Date.now(), lb, { perHost: 1 })).toBeNull();
      expect(await b.markRunning(t3!.id, Date.now(), lb, { perHost: 1 })).not.toBeNull();
      expect(await b.markRunning(t2!.id, Date.now(), lb, { perHost: 2 })).not.toBeNull();
    });

    it("a split download's extra connections count against perHost on every worker, until given back or the task is claimed again", async () => {
      const { a, b, la, lb, tasks: [t1, t2, t3] } = await twoWorkers(['http://same.test/1', 'http://same.test/2', 'http://same.test/3']);
      const r1 = (await a.markRunning(t1!.id, Date.now(), la, { perHost: 3 }))!;
      const r2 = (await b.markRunning(t2!.id, Date.now(), lb, { perHost: 3 }))!;
      const f1 = { id: r1.id, claim: r1.claim };
      const f2 = { id: r2.id, claim: r2.claim };
      // Two tasks run; a's split download takes the third connection, so b's cannot.
      expect(await a.takeExtraConnection(f1, 3)).toBe(true);
      expect(await b.takeExtraConnection(f2, 3)).toBe(false);
      // Nor can a third task start on either worker.
      expect(await b.markRunning(t3!.id, Date.now(), lb, { perHost: 3 })).toBeNull();
      await a.giveBackExtraConnection(f1);
      expect(await b.takeExtraConnection(f2, 3)).toBe(true);
      // A claim that moved on takes nothing, and its task's connections go with the attempt.
      expect(await a.takeExtraConnection({ id: f1.id, claim: f1.claim + 1 }, 10)).toBe(false);
      expect(await b.requeue(f2, { notBefore: null, reason: 'retry', error: null })).toBe(true);
      const again = (await b.markRunning(t2!.id, Date.now(), lb, { perHost: 3 }))!;
      expect(again.claim).toBe(f2.claim + 1);
      expect(await b.markRunning(t3!.id, Date.now(), lb, { perHost: 3 })).not.toBeNull();
    });

    it("a silent worker's tasks return to the queue at another's heartbeat, with a new claim that fences the old attempt", async () => {
      const a = await open('/hosts/a', 2_000);
      const b = await open('/hosts/b', 2_000);
      const t0 = Date.now();
      const la = (await a.takeLease(1001, t0, 2_000, alive))!;
      const lb = (await b.takeLease(1002, t0, 2_000, alive))!;
      const [t] = await a.enqueue([newTask()], rl);
      const run = (await a.markRunning(t!.id, t0, la))!;
      await a.recordProgress([{ id: t!.id, claim: run.claim, bytesReceived: 700, resumeOffset: 512 }]);
      // Within leaseTimeout nothing moves.
      expect(await b.heartbeat(lb, t0 + 1_000)).toBe(true);
      expect((await b.getTask(t!.id))!.state).toBe('running');
      // a stays silent past it (its heartbeat was at t0); b's heartbeat returns the task.
      expect(await b.heartbeat(lb, t0 + 5_000)).toBe(true);
      const back = (await b.getTask(t!.id))!;
      expect(back).toMatchObject({ state: 'queued', bytesReceived: 512, resumeOffset: 512 });
      expect(back.claim).toBeGreaterThan(run.claim);
      const again = (await b.markRunning(t!.id, t0 + 5_001, lb))!;
      // The old attempt, woken, changes nothing; its worker's lease is still its own (one per home).
      expect(await a.recordProgress([{ id: t!.id, claim: run.claim, bytesReceived: 9 }])).toEqual([t!.id]);
      expect(await a.finishTask({ id: t!.id, claim: run.claim }, { state: 'completed', sha256: 'stale' })).toBe(false);
      expect(await b.finishTask({ id: t!.id, claim: again.claim }, { state: 'completed', sha256: 'good' })).toBe(true);
      expect((await a.listEvents({})).map((e) => e.sha256)).toEqual(['good']);
    });

    it('a task one worker leaves (it cannot write the directory) goes to the others, not back to it', async () => {
      const a = await open('/hosts/a');
      const b = await open('/hosts/b');
      const now = Date.now();
      const la = (await a.takeLease(1001, now, 5_000, alive))!;
      const lb = (await b.takeLease(1002, now, 5_000, alive))!;
      const [t] = await a.enqueue([newTask()], rl, now);
      const run = (await a.markRunning(t!.id, now, la))!;
      expect(await a.requeue({ id: t!.id, claim: run.claim }, { notBefore: null, reason: 'retry', error: { code: 'E_DEST', message: 'cannot write' }, leave: true })).toBe(true);
      expect(await a.runnableCandidates(now, 10)).toEqual([]);
      expect(await a.markRunning(t!.id, now, la)).toBeNull();
      expect((await b.runnableCandidates(now, 10)).map((c) => c.id)).toEqual([t!.id]);
      expect(await b.markRunning(t!.id, now, lb)).toMatchObject({ state: 'running' });
    });

    it("a session's hook runs on one worker per batch", async () => {
      const a = await open('/hosts/a');
      const b = await open('/hosts/b');
      const now = Date.now();
      const la = (await a.takeLease(1001, now, 5_000, alive))!;
      const lb = (await b.takeLease(1002, now, 5_000, alive))!;
      await a.createSession('h', { hook: 'true' });
      const [t] = await a.enqueue([newTask({ session: 'h' })], rl);
      await a.transition([t!.id], 'cancel');
      const ids = (await a.listEvents({ undeliveredOnly: true })).map((e) => e.id);
      expect(await a.recordHookStart('h', now, rl, la, ids)).toBe('run');
      expect(await b.recordHookStart('h', now, rl, lb, ids)).toBe('busy');
      expect(await a.recordHookResult('h', ids, { ok: true }, now, la)).toBe(true);
      expect(await b.recordHookStart('h', now, rl, lb, ids)).toBe('busy'); // delivered meanwhile
      expect((await a.getSession('h'))!.hookRuns).toBe(1);
    });

    it('a schema from a newer bgdl is refused, naming the store without its password', async () => {
      (await open('/hosts/a')).close();
      opened.length = 0;
      await pgQuery(base, s.schema, "UPDATE bgdl_meta SET value = '99' WHERE key = 'schema_version'");
      const withPw = new URL(s.url);
      withPw.password = 'sekrit';
      const err = await PgStore.open(withPw.toString(), { home: '/h', staleMs: 5_000 }).catch((e) => e);
      expect(err).toBeInstanceOf(StoreError);
      expect(err.message).toMatch(/newer bgdl/);
      expect(err.message).not.toMatch(/sekrit/);
    });

    it('an unreachable server is a StoreError that says so', async () => {
      const err = await PgStore.open('postgres://nobody@127.0.0.1:1/none', { home: '/h', staleMs: 5_000 }).catch((e) => e);
      expect(err).toBeInstanceOf(StoreError);
      expect(err.code).toBe('E_STORE_UNREACHABLE');
      expect(err.message).toMatch(/cannot be reached/);
    });
  });
});
