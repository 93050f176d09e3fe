// The PostgreSQL backend of the store: one database shared by the workers and commands of many hosts,
// each host with its own BGDL_HOME. It implements TaskStore (../types.ts) with the shared rules
// (../rules/); every operation is one transaction. What a shared store adds (docs/ARCHITECTURE.md):
// - the worker lease is per home (`workers` row keyed by host and BGDL_HOME): one worker per home;
// - a claim (`markRunning`) locks its row with FOR UPDATE SKIP LOCKED and records the owner (the
//   worker's row) and the worker's token; the worker's heartbeat renews all its claims at once, and
//   returns the running tasks of workers whose heartbeat lapsed (leaseTimeout) to the queue, each with
//   a new claim so the old attempt's writes are refused;
// - `perHost` is counted over the running tasks of every worker (an advisory lock per origin);
// - a session's hook lease (`hook_owner`) lets one worker run its hook per batch;
// - LISTEN/NOTIFY wakes the workers instead of polling.

import os from 'node:os';
import pg from 'pg';
import { NotFoundError, StoreError, UsageError } from '../../shared/errors.js';
import { bootId } from '../../shared/boot.js';
import { FINAL_STATES, isFinal, PRIORITIES, type BgdlEvent, type EventType, type NewTask, type Session, type Task, type TaskState, type WaitingFor } from '../../shared/model.js';
import { BRIEF_COLUMNS, briefTaskFrom, CANDIDATE_COLUMNS, candidateFrom, emptyCounts, indexOf, RESPONSE_COLUMNS, rowToEvent, rowToSession, taskFrom } from '../rows.js';
import { eventFor } from '../rules/events.js';
import { leaseIsStale, nextToken } from '../rules/leases.js';
import { enqueueDelay, hookRunStep } from '../rules/ratelimit.js';
import { ACTION_FROM, finishedTask, refuseSharedOutputs, retryOutputRefusal, transitionRefusal, type TaskAction } from '../rules/transitions.js';
import type {
  CanceledPart,
  Candidate,
  ChangeToken,
  ClaimLimits,
  DownloadRecord,
  EventQuery,
  FinishInfo,
  HookResult,
  HookStart,
  IsAlive,
  Lease,
  LeaseFence,
  OutputsInUse,
  ProgressUpdate,
  RateLimitConfig,
  RequeueInfo,
  ResponseInfo,
  SessionPatch,
  SessionSummary,
  TaskBrief,
  TaskControl,
  TaskFence,
  TaskFilter,
  TaskStore,
  TaskTotals,
  TransitionResult,
  WorkSummary,
} from '../types.js';
import { guardPg, pgFailure } from './failure.js';
import { PG_MIGRATIONS, PG_SCHEMA_VERSION } from './schema.js';

type Row = Record<string, any>;
type Db = pg.PoolClient;

/** The channel every committed change is announced on (payload: the writer's tag, so it can ignore its own). */
const CHANNEL = 'bgdl_changes';
/** Advisory lock keys (first int: bgdl's, second: what it guards). */
const LOCK_NS = 0x6267646c; // "bgdl"
const LOCK_SCHEMA = 1;
const LOCK_OUTPUTS = 2;
const LOCK_ORIGIN = 3;
const LOCK_LEASE = 4;

/** bigint and numeric as numbers: ids, epoch milliseconds and byte counts all fit in 2^53. */
const types = {
  getTypeParser(oid: number, format?: any): any {
    if (oid === 20 || oid === 1700) return (v: string) => (v === null ? null : Number(v));
    return pg.types.getTypeParser(oid, format);
  },
};

export interface PgOptions {
  /** The BGDL_HOME this process belongs to: the worker lease is one per home. */
  home: string;
  /** leaseTimeout: a worker silent this long loses its running tasks. */
  staleMs: number;
}

/** sslmode values node-postgres 8 treats as verify-full (see describeUrl). */
const ALIASES_OF_VERIFY_FULL = new Set(['prefer', 'require', 'verify-ca']);

/** The URL without its password, for messages; the `schema` query parameter names the PostgreSQL schema (default bgdl). */
export function describeUrl(url: string): { location: string; schema: string; connectionString: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new StoreError(`BGDL_STORE '${url.replace(/:[^:@/]*@/, ':***@')}' is not a URL: use postgres://USER@HOST:PORT/DB`);
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
    throw new StoreError(`BGDL_STORE must be a postgres:// URL (got ${u.protocol}): use postgres://USER@HOST:PORT/DB, or unset it for the local store`);
  }
  const schema = u.searchParams.get('schema') ?? 'bgdl';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new StoreError(`BGDL_STORE: schema '${schema}' is not a plain lower-case name`);
  u.searchParams.delete('schema');
  const location = new URL(u);
  if (location.password) location.password = '***';
  // node-postgres 8 takes sslmode prefer, require and verify-ca as verify-full (the certificate and the
  // host name are verified), and says so in a 9-line warning on stderr at every start. Asked for by
  // that name, the same connection comes without the warning; libpq's weaker meanings stay opt-in
  // (uselibpqcompat=true, as node-postgres documents).
  const mode = u.searchParams.get('sslmode');
  if (mode && ALIASES_OF_VERIFY_FULL.has(mode) && u.searchParams.get('uselibpqcompat') !== 'true') u.searchParams.set('sslmode', 'verify-full');
  return { location: location.toString(), schema, connectionString: u.toString() };
}

function whereOf(filter: TaskFilter, args: unknown[]): string {
  const where: string[] = [];
  const p = (v: unknown) => `$${args.push(v)}`;
  if (filter.session) where.push(`session = ${p(filter.session)}`);
  if (filter.states) where.push(filter.states.length ? `state = ANY(${p([...filter.states])})` : 'false');
  if (filter.finishedBefore !== undefined) where.push(`finished_at <= ${p(filter.finishedBefore)}`);
  return where.length ? `WHERE ${where.join(' AND ')}` : '';
}

/** The origin a task's URL connects to, as the scheduler counts it for perHost. */
function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}

export class PgStore implements TaskStore {
  /** Announces our own commits, so our listener can tell them from other processes'. */
  private readonly tag = `${os.hostname()}:${process.pid}:${Math.random().toString(36).slice(2)}`;
  /** This process's worker-lease row. */
  private readonly workerId: string;
  private queueEpoch = 0;
  private others = 0;
  private listener: pg.Client | null = null;
  private listening: Promise<void> | null = null;
  private readonly waiters = new Set<() => void>();
  private closed = false;
  readonly shared = true;

  private constructor(
    private readonly pool: pg.Pool,
    readonly location: string,
    private readonly connectionString: string,
    private readonly schema: string,
    private readonly opts: PgOptions,
  ) {
    this.workerId = `${os.hostname()}:${opts.home}`;
  }

  /** Connect, create or migrate the schema under an advisory lock, refuse a newer one. Throws StoreError. */
  static async open(url: string, opts: PgOptions): Promise<PgStore> {
    const { location, schema, connectionString } = describeUrl(url);
    const pool = new pg.Pool({ connectionString, max: 4, types, options: `-c search_path=${schema}`, connectionTimeoutMillis: 10_000 });
    // An idle client's connection dropping must not crash the process; the next query reports it.
    pool.on('error', () => {});
    const store = new PgStore(pool, location, connectionString, schema, opts);
    try {
      await store.migrate();
    } catch (err) {
      await pool.end().catch(() => {});
      throw pgFailure(err, location);
    }
    return store;
  }

  private async migrate(): Promise<void> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      await c.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_NS, LOCK_SCHEMA]);
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${this.schema}`);
      await c.query('CREATE TABLE IF NOT EXISTS bgdl_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)');
      const r = await c.query("SELECT value FROM bgdl_meta WHERE key = 'schema_version'");
      const version = r.rows.length ? Number(r.rows[0].value) : 0;
      if (version > PG_SCHEMA_VERSION) {
        throw new StoreError(
          `the store ${this.location} was written by a newer bgdl (schema ${version}, this bgdl knows ${PG_SCHEMA_VERSION}): upgrade bgdl on every host; it does not downgrade stores`,
        );
      }
      for (let v = version; v < PG_SCHEMA_VERSION; v++) await c.query(PG_MIGRATIONS[v]!);
      if (version < PG_SCHEMA_VERSION) {
        await c.query("INSERT INTO bgdl_meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", [String(PG_SCHEMA_VERSION)]);
      }
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      c.release();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of [...this.waiters]) w();
    await this.listener?.end().catch(() => {});
    this.listener = null;
    await this.pool.end();
  }

  // ---- transactions and the change signal ---------------------------------------------------

  /** Run `fn` in one transaction; `notify` announces the commit to the other processes. */
  private async tx<T>(fn: (db: Db) => Promise<T>, notify = true): Promise<T> {
    const db = await this.pool.connect();
    try {
      await db.query('BEGIN');
      const out = await fn(db);
      if (notify) await db.query('SELECT pg_notify($1, $2)', [CHANNEL, this.tag]);
      await db.query('COMMIT');
      return out;
    } catch (err) {
      await db.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      db.release();
    }
  }

  private async rows(sql: string, args: unknown[] = [], db: Db | pg.Pool = this.pool): Promise<Row[]> {
    return (await db.query(sql, args)).rows;
  }

  /** Tasks through raw rows and the decoders the SQLite store uses. */
  private async tasks<T = Task>(sql: string, args: unknown[], decode: (v: any[], ix: Record<string, number>) => T = taskFrom as never, db: Db | pg.Pool = this.pool): Promise<T[]> {
    const r = await db.query({ text: sql, values: args, rowMode: 'array' });
    const ix = indexOf(r.fields.map((f) => f.name));
    return r.rows.map((v: any[]) => decode(v, ix));
  }

  changes(): ChangeToken {
    this.listen();
    return { others: this.others, mine: this.queueEpoch };
  }

  async waitForChange(since: ChangeToken, ms: number, signal?: AbortSignal): Promise<void> {
    this.listen();
    if (signal?.aborted || this.others !== since.others || this.closed) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.waiters.delete(check);
        resolve();
      };
      const check = () => {
        if (this.others !== since.others || this.closed) done();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done);
      this.waiters.add(check);
    });
  }

  /** LISTEN on a connection of its own, reconnecting with backoff; a reconnect counts as a change (we may have missed one). */
  private listen(): void {
    if (this.listening || this.closed) return;
    const connect = async (delay: number): Promise<void> => {
      if (this.closed) return;
      const client = new pg.Client({ connectionString: this.connectionString, types });
      client.on('notification', (n) => {
        if (n.payload === this.tag) return;
        this.bump();
      });
      const retry = () => {
        if (this.listener === client) this.listener = null;
        client.end().catch(() => {});
        if (this.closed) return;
        this.bump();
        setTimeout(() => void connect(Math.min(delay * 2, 10_000)), delay).unref();
      };
      client.on('error', retry);
      try {
        await client.connect();
        await client.query(`LISTEN ${CHANNEL}`);
        if (this.closed) return void client.end().catch(() => {});
        this.listener = client;
        this.bump();
      } catch {
        client.removeListener('error', retry);
        retry();
      }
    };
    this.listening = connect(250);
  }

  private bump(): void {
    this.others++;
    for (const w of [...this.waiters]) w();
  }

  // ---- sessions ------------------------------------------------------------------------------

  private async sessionRow(db: Db | pg.Pool, name: string, lock = false): Promise<Row | undefined> {
    return (await this.rows(`SELECT * FROM sessions WHERE name = $1${lock ? ' FOR UPDATE' : ''}`, [name], db))[0];
  }

  private async patchSession(db: Db, name: string, patch: SessionPatch): Promise<void> {
    if (patch.hook !== undefined) await db.query('UPDATE sessions SET hook = $1, hook_failures = 0, hook_next_at = NULL WHERE name = $2', [patch.hook, name]);
    if (patch.launchEvents !== undefined) await db.query('UPDATE sessions SET launch_events = $1 WHERE name = $2', [+patch.launchEvents, name]);
    if (patch.discretionary !== undefined) await db.query('UPDATE sessions SET discretionary = $1 WHERE name = $2', [+patch.discretionary, name]);
    if (patch.limitRate !== undefined) await db.query('UPDATE sessions SET limit_rate = $1 WHERE name = $2', [patch.limitRate, name]);
  }

  async createSession(name: string, patch: SessionPatch, now = Date.now()): Promise<Session> {
    return this.tx(async (db) => {
      const r = await db.query('INSERT INTO sessions (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING', [name, now]);
      if (r.rowCount === 0) throw new UsageError(`session '${name}' already exists: change it with bgdl session set ${name}`);
      await this.patchSession(db, name, patch);
      return rowToSession((await this.sessionRow(db, name))!);
    });
  }

  async updateSession(name: string, patch: SessionPatch): Promise<Session> {
    return this.tx(async (db) => {
      if (!(await this.sessionRow(db, name, true))) throw new NotFoundError(`no session named '${name}': see bgdl session list`);
      await this.patchSession(db, name, patch);
      return rowToSession((await this.sessionRow(db, name))!);
    });
  }

  async getSession(name: string): Promise<Session | null> {
    const r = await this.sessionRow(this.pool, name);
    return r ? rowToSession(r) : null;
  }

  async listSessions(): Promise<SessionSummary[]> {
    const sessions = (await this.rows('SELECT * FROM sessions ORDER BY name')).map(rowToSession);
    const counts = await this.rows('SELECT session, state, count(*) AS n FROM tasks GROUP BY session, state');
    const events = await this.rows('SELECT session, count(*) AS n FROM events WHERE delivered_at IS NULL GROUP BY session');
    return sessions.map((s) => {
      const c = emptyCounts();
      for (const r of counts) if (r.session === s.name) c[r.state as TaskState] = r.n;
      return { ...s, counts: c, undeliveredEvents: events.find((e) => e.session === s.name)?.n ?? 0 };
    });
  }

  async removeSession(name: string): Promise<void> {
    await this.tx(async (db) => {
      if (!(await this.sessionRow(db, name, true))) throw new NotFoundError(`no session named '${name}': see bgdl session list`);
      const [active] = await this.rows("SELECT count(*) AS n FROM tasks WHERE session = $1 AND state IN ('queued','running','paused')", [name], db);
      if (active!.n > 0) throw new UsageError(`session '${name}' has ${active!.n} unfinished task(s): cancel them first (bgdl cancel) or wait for them`);
      await db.query('DELETE FROM events WHERE session = $1', [name]);
      await db.query('DELETE FROM tasks WHERE session = $1', [name]);
      await db.query('DELETE FROM sessions WHERE name = $1', [name]);
    });
  }

  async resetRateLimit(name: string): Promise<void> {
    await this.pool.query('UPDATE sessions SET rl_count = 0, rl_last_run_at = NULL WHERE name = $1 AND rl_count > 0', [name]);
  }

  async sessionLimits(taskIds: number[]): Promise<Map<number, number | null>> {
    const out = new Map<number, number | null>();
    if (taskIds.length === 0) return out;
    for (const r of await this.rows('SELECT t.id, s.limit_rate AS rate FROM tasks t JOIN sessions s ON s.name = t.session WHERE t.id = ANY($1)', [taskIds])) out.set(r.id, r.rate ?? null);
    return out;
  }

  // ---- tasks ---------------------------------------------------------------------------------

  async enqueue(tasks: NewTask[], rateLimit: RateLimitConfig, now = Date.now()): Promise<Task[]> {
    this.queueEpoch++;
    const cols = [
      'session', 'kind', 'url', 'origin', 'method', 'headers', 'output', 'output_fixed', 'dir', 'upload_file', 'upload_size', 'state', 'wait_reason',
      'not_before', 'begin_at', 'discretionary', 'priority', 'expect_send', 'expect_receive', 'sha256_expected', 'bytes_expected', 'insecure',
      'ca_file', 'allow_downgrade', 'from_hook', 'created_at', 'timeout_from', 'max_size', 'proxy', 'netrc_file', 'cookies_file', 'skip_existing',
      'if_changed', 'checksums', 'max_attempts', 'limit_rate', 'split',
    ];
    const checksumsJson = new Map<Record<string, string>, string>();
    const serialize = (m: Record<string, string>) => checksumsJson.get(m) ?? checksumsJson.set(m, JSON.stringify(m)).get(m)!;
    return this.tx(async (db) => {
      await this.checkOutputsFree(db, tasks);
      const sessions = new Map<string, Session>();
      for (const name of new Set(tasks.map((t) => t.session))) {
        await db.query('INSERT INTO sessions (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING', [name, now]);
        sessions.set(name, rowToSession((await this.sessionRow(db, name))!));
      }
      const ids: number[] = [];
      // One INSERT per chunk of rows: a round trip per task would make `add -i` of many URLs slow.
      const chunk = Math.floor(60_000 / cols.length);
      for (let i = 0; i < tasks.length; i += chunk) {
        const args: unknown[] = [];
        const values: string[] = [];
        for (const t of tasks.slice(i, i + chunk)) {
          const s = sessions.get(t.session)!;
          const delay = enqueueDelay(s, t.fromHook, rateLimit);
          const discretionary = t.discretionary ?? (s.discretionary || t.fromHook);
          const row = [
            t.session, t.kind, t.url, originOf(t.url), t.method, JSON.stringify(t.headers), t.output, +t.outputFixed, t.dir, t.uploadFile ?? null,
            t.uploadSize ?? null, t.suspended ? 'paused' : 'queued', delay > 0 ? 'rate-limit' : null, delay > 0 ? now + delay : null, t.beginAt,
            +discretionary, PRIORITIES.indexOf(t.priority), t.expectSend, t.expectReceive, t.sha256Expected,
            t.kind === 'download' ? t.expectReceive : (t.uploadSize ?? null), +t.insecure, t.caFile, +t.allowDowngrade, +t.fromHook, now, now,
            t.maxSize ?? null, t.proxy ? JSON.stringify(t.proxy) : null, t.netrcFile ?? null, t.cookiesFile ?? null, +!!t.skipExisting, +!!t.ifChanged,
            t.checksums ? serialize(t.checksums) : null, t.maxAttempts ?? null, t.limitRate ?? null,
            t.split == null ? null : t.split === 'auto' ? 0 : t.split,
          ];
          values.push(`(${row.map((v) => `$${args.push(v)}`).join(',')})`);
        }
        const r = await db.query(`INSERT INTO tasks (${cols.join(',')}) VALUES ${values.join(',')} RETURNING id`, args);
        for (const x of r.rows) ids.push(x.id);
      }
      return this.tasks('SELECT * FROM tasks WHERE id = ANY($1) ORDER BY id', [ids], taskFrom, db);
    });
  }

  /** Two live tasks never share a fixed output; concurrent adders are serialized by an advisory lock. */
  private async checkOutputsFree(db: Db, tasks: NewTask[]): Promise<void> {
    const fixed = tasks.filter((t) => t.outputFixed && t.output);
    if (fixed.length === 0) return;
    await db.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_NS, LOCK_OUTPUTS]);
    const live = await this.liveOutputs(db, fixed.map((t) => t.output!));
    refuseSharedOutputs(fixed, live);
  }

  private async liveOutputs(db: Db, outputs: string[]): Promise<Map<string, { id: number; state: string }>> {
    const live = new Map<string, { id: number; state: string }>();
    const rows = await this.rows("SELECT id, state, output FROM tasks WHERE state IN ('queued','running','paused') AND output = ANY($1)", [outputs], db);
    for (const r of rows) live.set(r.output, { id: r.id, state: r.state });
    return live;
  }

  async getTasks(ids: number[]): Promise<Task[]> {
    const found = new Map((await this.tasks('SELECT * FROM tasks WHERE id = ANY($1)', [[...new Set(ids)]])).map((t) => [t.id, t]));
    const missing = ids.find((id) => !found.has(id));
    if (missing !== undefined) throw new NotFoundError(`no task with id ${missing}: see bgdl status`);
    return ids.map((id) => found.get(id)!);
  }

  async getTask(id: number): Promise<Task | null> {
    return (await this.tasks('SELECT * FROM tasks WHERE id = $1', [id]))[0] ?? null;
  }

  async listTasks(filter: TaskFilter = {}): Promise<Task[]> {
    const args: unknown[] = [];
    return this.tasks(`SELECT * FROM tasks ${whereOf(filter, args)} ORDER BY id`, args);
  }

  async listBriefTasks(filter: TaskFilter = {}): Promise<TaskBrief[]> {
    const args: unknown[] = [];
    return this.tasks(`SELECT ${BRIEF_COLUMNS} FROM tasks ${whereOf(filter, args)} ORDER BY id`, args, briefTaskFrom);
  }

  async taskTotals(filter: { session?: string } = {}): Promise<TaskTotals[]> {
    const sql = `SELECT session, state, count(*) AS n,
        sum(CASE kind WHEN 'upload' THEN bytes_sent ELSE bytes_received END) AS done,
        sum(bytes_expected) AS expected, sum(speed) AS speed
      FROM tasks ${filter.session ? 'WHERE session = $1' : ''} GROUP BY session, state ORDER BY session`;
    const bySession = new Map<string, TaskTotals>();
    for (const r of await this.rows(sql, filter.session ? [filter.session] : [])) {
      let t = bySession.get(r.session);
      if (!t) bySession.set(r.session, (t = { session: r.session, counts: emptyCounts(), bytesDone: 0, bytesExpected: 0, speed: 0 }));
      t.counts[r.state as TaskState] = r.n;
      t.bytesDone += r.done ?? 0;
      t.bytesExpected += r.expected ?? 0;
      if (r.state === 'running') t.speed += r.speed ?? 0;
    }
    return [...bySession.values()];
  }

  async briefTasksPage(filter: { session?: string; state: TaskState; limit: number }): Promise<TaskBrief[]> {
    const order = isFinal(filter.state) ? 'finished_at DESC, id DESC' : 'priority DESC, id';
    const args: unknown[] = [filter.state, filter.limit];
    const sql = `SELECT ${BRIEF_COLUMNS}, finished_at FROM tasks WHERE state = $1 ${filter.session ? `AND session = $${args.push(filter.session)}` : ''} ORDER BY ${order} LIMIT $2`;
    return this.tasks(sql, args, briefTaskFrom);
  }

  async transition(target: number[] | TaskFilter, action: TaskAction, now = Date.now()): Promise<TransitionResult> {
    this.queueEpoch++;
    return this.tx(async (db) => {
      let tasks: Task[];
      if (Array.isArray(target)) {
        tasks = await this.tasks('SELECT * FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE', [[...new Set(target)]], taskFrom, db);
        const byId = new Set(tasks.map((t) => t.id));
        const missing = target.find((id) => !byId.has(id));
        if (missing !== undefined) throw new NotFoundError(`no task with id ${missing}: see bgdl status`);
      } else {
        const states = ACTION_FROM[action].filter((st) => !target.states || target.states.includes(st));
        const args: unknown[] = [];
        tasks = await this.tasks(`SELECT * FROM tasks ${whereOf({ ...target, states }, args)} ORDER BY id FOR UPDATE`, args, taskFrom, db);
      }
      const result: TransitionResult = { changed: [], skipped: [], previous: new Map() };
      let live: Map<string, { id: number; state: string }> | null = null;
      if (action === 'retry' && tasks.some((t) => t.output)) {
        await db.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_NS, LOCK_OUTPUTS]);
        live = await this.liveOutputs(db, tasks.filter((t) => t.output).map((t) => t.output!));
      }
      const changedIds: number[] = [];
      for (const t of tasks) {
        const reason = await this.applyTransition(db, t, action, now, live);
        if (reason) result.skipped.push({ task: t, reason });
        else {
          changedIds.push(t.id);
          result.previous.set(t.id, t.state);
        }
      }
      if (changedIds.length) result.changed = await this.tasks('SELECT * FROM tasks WHERE id = ANY($1) ORDER BY id', [changedIds], taskFrom, db);
      return result;
    });
  }

  private async applyTransition(db: Db, t: Task, action: TaskAction, now: number, live: Map<string, { id: number; state: string }> | null): Promise<string | null> {
    const refusal = transitionRefusal(t.state, action);
    if (refusal) return refusal;
    switch (action) {
      case 'pause':
        await db.query("UPDATE tasks SET state = 'paused', speed = NULL WHERE id = $1", [t.id]);
        return null;
      case 'resume':
        await db.query("UPDATE tasks SET state = 'queued', wait_reason = NULL, wait_detail = NULL, not_before = NULL WHERE id = $1", [t.id]);
        return null;
      case 'cancel':
        await db.query("UPDATE tasks SET state = 'canceled', finished_at = $1, speed = NULL, wait_reason = NULL, not_before = NULL, claim = claim + 1 WHERE id = $2", [now, t.id]);
        await this.insertEvent(db, { ...t, state: 'canceled', finishedAt: now }, 'canceled', now);
        return null;
      case 'retry': {
        const conflict = retryOutputRefusal(t.id, t.output, t.output ? live?.get(t.output) : undefined);
        if (conflict) return conflict;
        if (t.output) live?.set(t.output, { id: t.id, state: 'queued' });
        await db.query(
          `UPDATE tasks SET state = 'queued', attempts = 0, error_code = NULL, error_message = NULL, wait_reason = NULL, wait_detail = NULL,
             not_before = NULL, finished_at = NULL, started_at = NULL, timeout_from = $1, bytes_received = resume_offset, sha256 = NULL,
             outcome = NULL WHERE id = $2`,
          [now, t.id],
        );
        return null;
      }
    }
  }

  private async insertEvent(db: Db, t: Task, type: EventType, now: number): Promise<void> {
    await db.query('INSERT INTO events (session, task_id, type, data, at) VALUES ($1, $2, $3, $4, $5)', [t.session, t.id, type, JSON.stringify(eventFor(t, type, now)), now]);
  }

  async prune(filter: TaskFilter): Promise<{ tasks: number; events: number }> {
    const states = (filter.states ?? FINAL_STATES).filter((st) => FINAL_STATES.includes(st));
    return this.tx(async (db) => {
      const args: unknown[] = [];
      const where = whereOf({ ...filter, states }, args);
      const events = (await db.query(`DELETE FROM events WHERE delivered_at IS NOT NULL AND task_id IN (SELECT id FROM tasks ${where})`, args)).rowCount ?? 0;
      const tasks = (await db.query(`DELETE FROM tasks ${where}`, args)).rowCount ?? 0;
      return { tasks, events };
    });
  }

  async lastDownloadOf(output: string): Promise<DownloadRecord | null> {
    const [r] = await this.rows(
      `SELECT url, output, etag, last_modified, bytes_received, finished_at FROM tasks
       WHERE state = 'completed' AND output = $1 AND kind = 'download' AND outcome IS NULL ORDER BY finished_at DESC, id DESC LIMIT 1`,
      [output],
    );
    return r ? { url: r.url, output: r.output, etag: r.etag, lastModified: r.last_modified, bytes: r.bytes_received, finishedAt: r.finished_at } : null;
  }

  async lastOutputOf(url: string, dir: string): Promise<string | null> {
    const [r] = await this.rows(
      `SELECT output FROM tasks WHERE state = 'completed' AND url = $1 AND dir = $2 AND kind = 'download' AND outcome IS NULL
       AND output IS NOT NULL ORDER BY finished_at DESC, id DESC LIMIT 1`,
      [url, dir],
    );
    return r?.output ?? null;
  }

  // ---- the worker lease (one per home) -------------------------------------------------------

  private async leaseRow(db: Db | pg.Pool, lock = false): Promise<Row | undefined> {
    return (await this.rows(`SELECT * FROM workers WHERE id = $1${lock ? ' FOR UPDATE' : ''}`, [this.workerId], db))[0];
  }

  async readLease(): Promise<Lease | null> {
    const r = await this.leaseRow(this.pool);
    return r && r.pid !== 0 ? { pid: r.pid, host: r.host, heartbeat: r.heartbeat, startedAt: r.started_at, token: r.token } : null;
  }

  async liveWorker(now: number, staleMs: number, isAlive: IsAlive): Promise<boolean> {
    const r = await this.leaseRow(this.pool);
    return !!r && !leaseIsStale(r as never, now, staleMs, isAlive, os.hostname());
  }

  private async writeLease(db: Db, cur: Row | undefined, pid: number, now: number): Promise<LeaseFence> {
    const token = nextToken(cur?.token);
    await db.query(
      `INSERT INTO workers (id, pid, host, boot, heartbeat, started_at, token) VALUES ($1, $2, $3, $4, $5, $5, $6)
       ON CONFLICT (id) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host, boot = EXCLUDED.boot, heartbeat = EXCLUDED.heartbeat,
         started_at = EXCLUDED.started_at, token = EXCLUDED.token`,
      [this.workerId, pid, os.hostname(), bootId(), now, token],
    );
    return { pid, token };
  }

  /** The lease row of this home, locked for the transaction (a row that does not exist yet is guarded by an advisory lock). */
  private async lockLease(db: Db): Promise<Row | undefined> {
    await db.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_NS + LOCK_LEASE, this.workerId]);
    return this.leaseRow(db, true);
  }

  async takeLease(pid: number, now: number, staleMs: number, isAlive: IsAlive): Promise<LeaseFence | null> {
    return this.tx(async (db) => {
      const cur = await this.lockLease(db);
      if (cur && cur.pid !== pid && !leaseIsStale(cur as never, now, staleMs, isAlive, os.hostname())) return null;
      return this.writeLease(db, cur, pid, now);
    }, false);
  }

  private async leaseHeld(db: Db, f: LeaseFence): Promise<boolean> {
    const r = await db.query('SELECT 1 FROM workers WHERE id = $1 AND pid = $2 AND token = $3 AND host = $4 FOR SHARE', [this.workerId, f.pid, f.token, os.hostname()]);
    return r.rows.length === 1;
  }

  /**
   * Refresh our heartbeat (which renews every claim of ours), and return the running tasks of workers
   * whose heartbeat lapsed to the queue. False when the lease is no longer ours.
   */
  async heartbeat(f: LeaseFence, now: number): Promise<boolean> {
    const r = await this.pool.query('UPDATE workers SET heartbeat = $1 WHERE id = $2 AND pid = $3 AND token = $4 AND host = $5', [now, this.workerId, f.pid, f.token, os.hostname()]);
    if (r.rowCount !== 1) return false;
    const lapsed = await this.tx(async (db) => this.requeueLapsed(db, now), false);
    if (lapsed.length) {
      this.queueEpoch++;
      await this.pool.query('SELECT pg_notify($1, $2)', [CHANNEL, this.tag]);
    }
    return true;
  }

  /**
   * Running tasks whose owner is gone: its worker row released, taken over (another token) or silent
   * for longer than leaseTimeout. Back to the queue at their durable offset, with a new claim.
   */
  private async requeueLapsed(db: Db, now: number): Promise<Task[]> {
    return this.tasks(
      `UPDATE tasks t SET state = 'queued', speed = NULL, bytes_received = resume_offset, claim = claim + 1, owner = NULL, owner_token = NULL
       WHERE t.id IN (
         SELECT t2.id FROM tasks t2 WHERE t2.state = 'running' AND NOT EXISTS (
           SELECT 1 FROM workers w WHERE w.id = t2.owner AND w.token = t2.owner_token AND w.pid <> 0 AND w.heartbeat >= $1)
         FOR UPDATE SKIP LOCKED)
       RETURNING t.*`,
      [now - this.opts.staleMs],
      taskFrom,
      db,
    );
  }

  async releaseLease(f: LeaseFence): Promise<void> {
    await this.tx(async (db) => {
      await db.query('UPDATE workers SET pid = 0, heartbeat = 0 WHERE id = $1 AND pid = $2 AND token = $3 AND host = $4', [this.workerId, f.pid, f.token, os.hostname()]);
    });
  }

  async ensureWorker(now: number, staleMs: number, isAlive: IsAlive, spawn: () => number | undefined): Promise<'running' | 'started' | 'idle'> {
    const quick = await this.leaseRow(this.pool);
    if (quick && !leaseIsStale(quick as never, now, staleMs, isAlive, os.hostname())) return 'running';
    const w = await this.workSummary(now);
    if (w.queued + w.running + w.pendingHooks === 0) return 'idle';
    return this.tx(async (db) => {
      const cur = await this.lockLease(db);
      if (cur && !leaseIsStale(cur as never, now, staleMs, isAlive, os.hostname())) return 'running' as const;
      const pid = spawn();
      if (!pid) return 'idle' as const;
      await this.writeLease(db, cur, pid, now);
      return 'started' as const;
    }, false);
  }

  async workSummary(_now = Date.now()): Promise<WorkSummary> {
    const tasks = await this.rows("SELECT state, count(*) AS n FROM tasks WHERE state IN ('queued','running') GROUP BY state");
    const [hooks] = await this.rows(`SELECT count(*) AS n FROM sessions s WHERE s.hook IS NOT NULL AND s.launch_events = 1
        AND EXISTS (SELECT 1 FROM events e WHERE e.session = s.name AND e.delivered_at IS NULL)`);
    return {
      queued: tasks.find((r) => r.state === 'queued')?.n ?? 0,
      running: tasks.find((r) => r.state === 'running')?.n ?? 0,
      pendingHooks: hooks!.n,
    };
  }

  // ---- the worker's task operations ----------------------------------------------------------

  /** On worker start (before it claims anything): this home's tasks left running, and every lapsed one, go back to the queue. */
  async requeueOrphans(lease: LeaseFence): Promise<Task[] | null> {
    this.queueEpoch++;
    return this.tx(async (db) => {
      if (!(await this.leaseHeld(db, lease))) return null;
      const mine = await this.tasks(
        `UPDATE tasks SET state = 'queued', speed = NULL, bytes_received = resume_offset, claim = claim + 1, owner = NULL, owner_token = NULL
         WHERE state = 'running' AND owner = $1 RETURNING *`,
        [this.workerId],
        taskFrom,
        db,
      );
      return [...mine, ...(await this.requeueLapsed(db, Date.now()))];
    });
  }

  async canceledParts(): Promise<CanceledPart[]> {
    const rows = await this.rows("SELECT id, session, part_path, part_id FROM tasks WHERE state = 'canceled' AND part_path IS NOT NULL");
    return rows.map((r) => ({ id: r.id, session: r.session, partPath: r.part_path, partId: r.part_id }));
  }

  async forgetParts(ids: number[], lease: LeaseFence): Promise<boolean> {
    return this.tx(async (db) => {
      if (!(await this.leaseHeld(db, lease))) return false;
      await db.query("UPDATE tasks SET part_path = NULL, part_id = NULL WHERE id = ANY($1) AND state = 'canceled'", [ids]);
      return true;
    }, false);
  }

  async runnableCandidates(now: number, limit: number): Promise<Candidate[]> {
    return this.tasks(
      `SELECT ${CANDIDATE_COLUMNS} FROM tasks WHERE state = 'queued' AND (begin_at IS NULL OR begin_at <= $1) AND (not_before IS NULL OR not_before <= $1)
         AND avoid IS DISTINCT FROM $3
       ORDER BY priority DESC, id LIMIT $2`,
      [now, limit, this.workerId],
      candidateFrom,
    );
  }

  async queueFacts(): Promise<{ held: boolean; discretionary: boolean }> {
    const [r] = await this.rows(`SELECT EXISTS (SELECT 1 FROM tasks WHERE state = 'queued' AND wait_reason = 'conditions') AS held,
        EXISTS (SELECT 1 FROM tasks WHERE state = 'queued' AND discretionary = 1) AS discretionary`);
    return { held: !!r!.held, discretionary: !!r!.discretionary };
  }

  async nextWakeAt(now: number): Promise<number | null> {
    const [r] = await this.rows(`SELECT min(t) AS t FROM (
        SELECT begin_at AS t FROM tasks WHERE state = 'queued' AND begin_at > $1
        UNION ALL SELECT not_before AS t FROM tasks WHERE state = 'queued' AND not_before > $1) x`, [now]);
    return r!.t ?? null;
  }

  /**
   * Claim a queued task: its row locked FOR UPDATE SKIP LOCKED (a task another worker is claiming
   * right now is skipped, not waited for), refused when `limits.perHost` tasks of its origin already
   * run anywhere in the cluster; the claim records this worker as owner and raises the fencing token.
   */
  async markRunning(id: number, now: number, lease: LeaseFence, limits?: ClaimLimits): Promise<Task | null> {
    return this.tx(async (db) => {
      if (!(await this.leaseHeld(db, lease))) return null;
      const [row] = await this.rows("SELECT origin FROM tasks WHERE id = $1 AND state = 'queued' AND avoid IS DISTINCT FROM $2 FOR UPDATE SKIP LOCKED", [id, this.workerId], db);
      if (!row) return null;
      if (limits && (await this.connectionsTo(row.origin, db)) >= limits.perHost) return null;
      const [t] = await this.tasks(
        `UPDATE tasks SET state = 'running', attempts = attempts + 1, started_at = coalesce(started_at, $1), wait_reason = NULL, wait_detail = NULL,
           not_before = NULL, speed = NULL, claim = claim + 1, owner = $2, owner_token = $3, extra_connections = 0 WHERE id = $4 AND state = 'queued' RETURNING *`,
        [now, this.workerId, lease.token, id],
        taskFrom,
        db,
      );
      return t ?? null;
    });
  }

  /**
   * Connections to `origin` across the cluster: its running tasks and their split downloads' extra
   * ones. Counted under the origin's advisory lock, held to the end of the transaction, so that the
   * claim or connection the caller then records is counted by the next one to look.
   */
  private async connectionsTo(origin: string, db: Db): Promise<number> {
    await db.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_NS + LOCK_ORIGIN, origin]);
    const [c] = await this.rows("SELECT count(*) + coalesce(sum(extra_connections), 0) AS n FROM tasks WHERE state = 'running' AND origin = $1", [origin], db);
    return Number(c!.n);
  }

  async takeExtraConnection(f: TaskFence, perHost: number): Promise<boolean> {
    return this.tx(async (db) => {
      const [row] = await this.rows("SELECT origin FROM tasks WHERE id = $1 AND claim = $2 AND state = 'running'", [f.id, f.claim], db);
      if (!row || (await this.connectionsTo(row.origin, db)) >= perHost) return false;
      await db.query('UPDATE tasks SET extra_connections = extra_connections + 1 WHERE id = $1 AND claim = $2', [f.id, f.claim]);
      return true;
    }, false);
  }

  /** The connection is done: other workers are told (one of theirs may start in its place). */
  async giveBackExtraConnection(f: TaskFence): Promise<void> {
    await this.tx((db) => db.query('UPDATE tasks SET extra_connections = greatest(extra_connections - 1, 0) WHERE id = $1 AND claim = $2', [f.id, f.claim]));
  }

  async setHeld(hold: { id: number; reason: WaitingFor; detail: string | null }[], release: number[], lease: LeaseFence): Promise<boolean> {
    this.queueEpoch++;
    return this.tx(async (db) => {
      if (!(await this.leaseHeld(db, lease))) return false;
      for (const h of hold) await db.query("UPDATE tasks SET wait_reason = $1, wait_detail = $2 WHERE id = $3 AND state = 'queued'", [h.reason, h.detail, h.id]);
      if (release.length) await db.query("UPDATE tasks SET wait_reason = NULL, wait_detail = NULL WHERE id = ANY($1) AND state = 'queued' AND wait_reason = 'conditions'", [release]);
      return true;
    });
  }

  async statesOf(ids: number[]): Promise<Map<number, TaskControl>> {
    if (ids.length === 0) return new Map();
    const rows = await this.rows('SELECT id, state, claim FROM tasks WHERE id = ANY($1)', [ids]);
    return new Map(rows.map((r) => [r.id, { state: r.state, claim: r.claim }]));
  }

  /** Progress of many tasks in one statement; not announced (nobody waits on progress but `wait`, which polls). */
  async recordProgress(updates: ProgressUpdate[]): Promise<number[]> {
    if (updates.length === 0) return [];
    const json = JSON.stringify(
      updates.map((u) => ({
        id: u.id, claim: u.claim, br: u.bytesReceived ?? null, bs: u.bytesSent ?? null, he: u.bytesExpected !== undefined, be: u.bytesExpected ?? null,
        ro: u.resumeOffset ?? null, sp: u.speed ?? null, sg: u.segments ?? null,
      })),
    );
    return this.tx(async (db) => {
      const r = await db.query(
        `WITH u AS (SELECT * FROM json_to_recordset($1::json) AS x(id bigint, claim bigint, br bigint, bs bigint, he boolean, be bigint, ro bigint, sp bigint, sg text))
         UPDATE tasks t SET bytes_received = coalesce(u.br, t.bytes_received), bytes_sent = coalesce(u.bs, t.bytes_sent),
           bytes_expected = CASE WHEN u.he THEN u.be ELSE t.bytes_expected END, resume_offset = coalesce(u.ro, t.resume_offset), speed = u.sp,
           segments = coalesce(u.sg, t.segments)
         FROM u WHERE t.id = u.id AND t.claim = u.claim AND t.state IN ('running', 'paused') RETURNING t.id`,
        [json],
      );
      const applied = new Set(r.rows.map((x) => x.id as number));
      const rest = updates.filter((u) => !applied.has(u.id));
      if (rest.length === 0) return [];
      const claims = new Map((await this.rows('SELECT id, claim FROM tasks WHERE id = ANY($1)', [rest.map((u) => u.id)], db)).map((x) => [x.id as number, x.claim as number]));
      return rest.filter((u) => claims.get(u.id) !== u.claim).map((u) => u.id);
    }, false);
  }

  async holdsClaim(f: TaskFence): Promise<boolean> {
    const [r] = await this.rows('SELECT claim FROM tasks WHERE id = $1', [f.id]);
    return r?.claim === f.claim;
  }

  async recordResponse(f: TaskFence, info: ResponseInfo): Promise<boolean> {
    const cols: string[] = [];
    const args: unknown[] = [];
    for (const [k, col] of RESPONSE_COLUMNS) if (info[k] !== undefined) cols.push(`${col} = $${args.push(info[k])}`);
    if (!cols.length) return this.holdsClaim(f);
    const r = await this.pool.query(`UPDATE tasks SET ${cols.join(', ')} WHERE id = $${args.push(f.id)} AND claim = $${args.push(f.claim)}`, args);
    return r.rowCount === 1;
  }

  async outputsInUse(dir: string, exceptId: number): Promise<OutputsInUse> {
    const rows = await this.rows("SELECT output FROM tasks WHERE dir = $1 AND id <> $2 AND output IS NOT NULL AND state IN ('queued','running','paused')", [dir, exceptId]);
    return new Set(rows.map((r) => r.output as string));
  }

  async requeue(f: TaskFence, info: RequeueInfo): Promise<boolean> {
    // The epoch moves once the write is done: a look at the queue while it was in flight must not be
    // kept under the new epoch (see the SQLite store's requeue).
    return this.tx(async (db) => {
      const r = await db.query(
        `UPDATE tasks SET state = 'queued', not_before = $1, wait_reason = $2, wait_detail = $3,
           error_code = CASE WHEN $4 THEN $5 ELSE error_code END, error_message = CASE WHEN $4 THEN $6 ELSE error_message END,
           resume_offset = coalesce($7, resume_offset), bytes_received = coalesce($8, bytes_received), speed = NULL, owner = NULL, owner_token = NULL,
           avoid = $11
         WHERE id = $9 AND claim = $10 AND state = 'running'`,
        [
          info.notBefore, info.reason, info.detail ?? null, info.error !== undefined, info.error?.code ?? null, info.error?.message ?? null,
          info.resumeOffset ?? null, info.bytesReceived ?? null, f.id, f.claim, info.leave ? this.workerId : null,
        ],
      );
      return r.rowCount === 1;
    }).finally(() => this.queueEpoch++);
  }

  async recordStopped(f: TaskFence, info: { resumeOffset: number; bytesReceived: number }): Promise<boolean> {
    const r = await this.pool.query("UPDATE tasks SET resume_offset = $1, bytes_received = $2, speed = NULL WHERE id = $3 AND claim = $4 AND state IN ('paused', 'queued')", [
      info.resumeOffset, info.bytesReceived, f.id, f.claim,
    ]);
    return r.rowCount === 1;
  }

  async finishTask(f: TaskFence, info: FinishInfo, now = Date.now()): Promise<boolean> {
    return this.finish(f.id, info, now, ['running'], async (_db, t) => t.claim === f.claim);
  }

  async expireTask(id: number, lease: LeaseFence, info: FinishInfo, now = Date.now()): Promise<boolean> {
    this.queueEpoch++;
    return this.finish(id, info, now, ['queued', 'paused'], (db) => this.leaseHeld(db, lease));
  }

  private async finish(id: number, info: FinishInfo, now: number, fromStates: TaskState[], allowed: (db: Db, t: Task) => Promise<boolean>): Promise<boolean> {
    return this.tx(async (db) => {
      const [t] = await this.tasks('SELECT * FROM tasks WHERE id = $1 FOR UPDATE', [id], taskFrom, db);
      if (!t || !fromStates.includes(t.state) || !(await allowed(db, t))) return false;
      const done = finishedTask(t, info, now);
      const completed = done.state === 'completed';
      await db.query(
        `UPDATE tasks SET state = $1, error_code = $2, error_message = $3, http_status = $4, final_url = $5, output = $6, sha256 = $7,
           bytes_received = $8, bytes_sent = $9, response_body = $10, finished_at = $11, speed = NULL, outcome = $12, etag = $13, last_modified = $14,
           wait_reason = NULL, wait_detail = NULL, not_before = NULL, owner = NULL, owner_token = NULL,
           resume_offset = CASE WHEN $15 THEN 0 ELSE resume_offset END,
           part_path = CASE WHEN $15 THEN NULL ELSE part_path END,
           part_id = CASE WHEN $15 THEN NULL ELSE part_id END,
           segments = CASE WHEN $15 THEN NULL ELSE segments END WHERE id = $16`,
        [
          done.state, done.error?.code ?? null, done.error?.message ?? null, done.httpStatus, done.finalUrl, done.output, done.sha256, done.bytesReceived,
          done.bytesSent, done.responseBody, now, done.outcome, done.etag, done.lastModified, completed, id,
        ],
      );
      await this.insertEvent(db, done, info.state, now);
      return true;
    });
  }

  async expiredTasks(now: number, timeoutMs: number): Promise<Task[]> {
    return this.tasks("SELECT * FROM tasks WHERE state IN ('queued','paused','running') AND timeout_from + $1 <= $2", [timeoutMs, now]);
  }

  // ---- events and hooks ----------------------------------------------------------------------

  async listEvents(filter: EventQuery = {}): Promise<BgdlEvent[]> {
    const args: unknown[] = [filter.afterId ?? 0];
    const where = ['id > $1'];
    if (filter.session) where.push(`session = $${args.push(filter.session)}`);
    if (filter.undeliveredOnly) where.push('delivered_at IS NULL');
    const limit = filter.limit != null && filter.limit >= 0 ? `LIMIT $${args.push(filter.limit)}` : '';
    return (await this.rows(`SELECT * FROM events WHERE ${where.join(' AND ')} ORDER BY id ${limit}`, args)).map(rowToEvent);
  }

  async ackEvents(ids: number[], now = Date.now()): Promise<number> {
    if (ids.length === 0) return 0;
    return this.tx(async (db) => (await db.query('UPDATE events SET delivered_at = $1 WHERE id = ANY($2) AND delivered_at IS NULL', [now, ids])).rowCount ?? 0);
  }

  async lastEventId(): Promise<number> {
    const [r] = await this.rows('SELECT max(id) AS id FROM events');
    return r!.id ?? 0;
  }

  async sessionsAwaitingHook(now = Date.now()): Promise<{ session: Session; active: number; runnable: number }[]> {
    const rows = await this.rows(`SELECT s.*,
        (SELECT count(*) FROM tasks t WHERE t.session = s.name AND t.state = 'running') AS active_n,
        (SELECT count(*) FROM tasks t WHERE t.session = s.name AND t.state = 'queued' AND (t.begin_at IS NULL OR t.begin_at <= $1)
            AND (t.not_before IS NULL OR t.not_before <= $1) AND coalesce(t.wait_reason, '') NOT IN ('conditions', 'disk-space')) AS runnable_n
      FROM sessions s WHERE s.hook IS NOT NULL AND s.launch_events = 1
        AND EXISTS (SELECT 1 FROM events e WHERE e.session = s.name AND e.delivered_at IS NULL)`, [now]);
    return rows.map((r) => ({ session: rowToSession(r), active: r.active_n, runnable: r.runnable_n }));
  }

  /**
   * A hook run starts: the session's hook lease goes to this worker unless another live worker holds
   * it, or some of these events were delivered meanwhile (another worker ran the hook for them).
   */
  async recordHookStart(name: string, now: number, rateLimit: RateLimitConfig, lease?: LeaseFence, eventIds: number[] = []): Promise<HookStart> {
    return this.tx(async (db): Promise<HookStart> => {
      if (lease && !(await this.leaseHeld(db, lease))) return 'lease-lost';
      const s = await this.sessionRow(db, name, true);
      if (!s) return 'run';
      if (eventIds.length) {
        const [d] = await this.rows('SELECT count(*) AS n FROM events WHERE id = ANY($1) AND delivered_at IS NOT NULL', [eventIds], db);
        if (d!.n > 0) return 'busy';
      }
      if (lease && s.hook_owner && s.hook_owner !== this.workerId) {
        const [w] = await this.rows('SELECT heartbeat, pid, token FROM workers WHERE id = $1', [s.hook_owner], db);
        if (w && w.pid !== 0 && w.token === s.hook_owner_token && w.heartbeat >= now - this.opts.staleMs) return 'busy';
      }
      const step = hookRunStep({ rateLimitCount: s.rl_count, rateLimitLastRunAt: s.rl_last_run_at }, now, rateLimit);
      await db.query(
        'UPDATE sessions SET hook_runs = hook_runs + 1, hook_last_run_at = $1, rl_count = $2, rl_last_run_at = $3, hook_owner = $4, hook_owner_token = $5 WHERE name = $6',
        [now, step.rateLimitCount, step.rateLimitLastRunAt, lease ? this.workerId : null, lease?.token ?? null, name],
      );
      return 'run';
    });
  }

  async recordHookResult(name: string, eventIds: number[], result: HookResult, now = Date.now(), lease?: LeaseFence): Promise<boolean> {
    return this.tx(async (db) => {
      if (lease && !(await this.leaseHeld(db, lease))) return false;
      const s = await this.sessionRow(db, name, true);
      if (lease && s?.hook_owner && (s.hook_owner !== this.workerId || s.hook_owner_token !== lease.token)) return false;
      if (result.ok) {
        if (eventIds.length) await db.query('UPDATE events SET delivered_at = $1 WHERE id = ANY($2) AND delivered_at IS NULL', [now, eventIds]);
        await db.query('UPDATE sessions SET hook_failures = 0, hook_next_at = NULL, hook_last_error = NULL, hook_owner = NULL, hook_owner_token = NULL WHERE name = $1', [name]);
      } else {
        await db.query(
          'UPDATE sessions SET hook_failures = hook_failures + 1, hook_next_at = $1, hook_last_error = $2, hook_owner = NULL, hook_owner_token = NULL WHERE name = $3',
          [result.nextAt, result.error, name],
        );
      }
      return true;
    });
  }
}

// A lost connection, a refused login or a missing database in any operation is a StoreError naming the store (exit 4).
guardPg(PgStore.prototype, (store) => store.location);
