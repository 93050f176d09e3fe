// The SQLite backend of the store: one database (WAL) shared by every bgdl process of a BGDL_HOME.
// It implements TaskStore (../types.ts) by mapping the shared rules (../rules/) to its SQL; every
// operation is one transaction. No SQL outside src/store.

import fs from 'node:fs';
import os from 'node:os';
import Database from 'better-sqlite3';
import { NotFoundError, StoreError, UsageError } from '../../shared/errors.js';
import {
  FINAL_STATES,
  isFinal,
  PRIORITIES,
  type BgdlEvent,
  type EventType,
  type NewTask,
  type Session,
  type Task,
  type TaskState,
  type WaitingFor,
} from '../../shared/model.js';
import { storePath } from '../../shared/paths.js';
import { eventFor } from '../rules/events.js';
import { leaseIsStale, nextToken, type LeaseRow } from '../rules/leases.js';
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
import { BRIEF_COLUMNS, briefTaskFrom, CANDIDATE_COLUMNS, candidateFrom, emptyCounts, RESPONSE_COLUMNS, rowToEvent, rowToSession, taskFrom } from '../rows.js';
import { failureKind, guardMethods, storeFailure } from './failure.js';
import { LEASE_ID, MIGRATIONS, SCHEMA_VERSION } from './schema.js';

type Row = Record<string, any>;

/** How many times opening a store answered busy at once is tried (see prepareOpened). */
const OPEN_BUSY_TRIES = 80;

/**
 * Read tasks through raw rows, one at a time: better-sqlite3 builds a keyed object per row slowly
 * for a table this wide (10,000 rows: ~240 ms vs ~60 ms raw), and iterating lets each row array die
 * young instead of all of them living until the last is read (half the CPU of `.all()` at 10,000
 * rows, most of it garbage collection). `bgdl status` must stay fast.
 */
function readTasks<T = Task>(stmt: Database.Statement, args: unknown[], decode: (v: any[], ix: Record<string, number>) => T = taskFrom as never): T[] {
  let ix = columnIndexes.get(stmt);
  if (!ix) {
    ix = {};
    for (const [i, c] of stmt.columns().entries()) ix[c.name] = i;
    columnIndexes.set(stmt, ix);
  }
  const out: T[] = [];
  // Statements are cached and shared: leave this one in its default (object) mode afterwards.
  stmt.raw(true);
  try {
    for (const v of stmt.iterate(...args) as IterableIterator<any[]>) out.push(decode(v, ix));
  } finally {
    stmt.raw(false);
  }
  return out;
}

const columnIndexes = new WeakMap<Database.Statement, Record<string, number>>();

/** The SQL condition of a TaskFilter (the one place a selection becomes a query). */
function whereOf(filter: TaskFilter): { sql: string; args: unknown[] } {
  const where: string[] = [];
  const args: unknown[] = [];
  if (filter.session) {
    where.push('session = ?');
    args.push(filter.session);
  }
  if (filter.states) {
    where.push(`state IN (${filter.states.map(() => '?').join(',') || 'NULL'})`);
    args.push(...filter.states);
  }
  if (filter.finishedBefore !== undefined) {
    where.push('finished_at <= ?');
    args.push(filter.finishedBefore);
  }
  return { sql: where.length ? `WHERE ${where.join(' AND ')}` : '', args };
}

/** Ids per `IN (…)` list: a long list is read in parts of this many (SQLite limits the parameters of a statement). */
const ID_CHUNK = 500;

/** `ids` in parts of ID_CHUNK, each with its `(?,?,…)` list. */
function* idParts(ids: number[]): Generator<{ part: number[]; list: string }> {
  for (let i = 0; i < ids.length; i += ID_CHUNK) {
    const part = ids.slice(i, i + ID_CHUNK);
    yield { part, list: `(${part.map(() => '?').join(',')})` };
  }
}

/** Prepared statements kept per store; past this many distinct texts (IN lists of varying length) the cache starts over. */
const STATEMENT_CACHE_MAX = 256;

/** A queued task as markRunning's UPDATE leaves it (the same columns, the same values). */
function claimedTask(t: Task, now: number): Task {
  return { ...t, state: 'running', attempts: t.attempts + 1, startedAt: t.startedAt ?? now, waitReason: null, waitDetail: null, notBefore: null, speed: null, claim: t.claim + 1 };
}

/**
 * The outputs of unfinished tasks, looked up by output: the worker asks about one name at a time for
 * every derived name (a set of every output in the directory, built for each, was ~8% of what the
 * worker allocated over a batch of 2,000 small files, 16 MiB).
 */
class OutputIndex {
  private readonly byId = new Map<number, { dir: string; output: string }>();
  private readonly byOutput = new Map<string, Set<number>>();

  set(id: number, dir: string, output: string): void {
    this.delete(id);
    this.byId.set(id, { dir, output });
    let ids = this.byOutput.get(output);
    if (!ids) this.byOutput.set(output, (ids = new Set()));
    ids.add(id);
  }

  delete(id: number): void {
    const e = this.byId.get(id);
    if (!e) return;
    this.byId.delete(id);
    const ids = this.byOutput.get(e.output);
    ids?.delete(id);
    if (ids?.size === 0) this.byOutput.delete(e.output);
  }

  /** Does a task other than `exceptId`, of directory `dir`, hold `output`? */
  heldByOther(output: string, dir: string, exceptId: number): boolean {
    for (const id of this.byOutput.get(output) ?? []) if (id !== exceptId && this.byId.get(id)!.dir === dir) return true;
    return false;
  }
}

export class SqliteStore implements TaskStore {
  private readonly statements = new Map<string, Database.Statement>();
  /** Outputs of unfinished tasks as last read, and the data version they were read at (see outputsInUse). */
  private outputs: { version: number; index: OutputIndex } | null = null;
  private dataVersionStmt: Database.Statement | null = null;
  /** This connection's writes that can change which queued tasks are runnable or when (ChangeToken.mine). */
  private queueEpoch = 0;
  /** This host's name as the lease records it: read once (every worker write checks the lease, and os.hostname() is a system call). */
  private readonly host = os.hostname();
  /** Writes waiting for the end of this turn of the event loop (see grouped). */
  private pending: { fn: () => unknown; resolve: (v: unknown) => void; reject: (err: unknown) => void }[] | null = null;
  /** Claims previewed in this turn (previewClaim), for markRunning's write at its end. */
  private readonly previews = new Map<number, { now: number; task: Task }>();

  /**
   * Runs a function in a transaction (a savepoint when one is open). Made once: better-sqlite3 builds
   * a new wrapper for every `db.transaction()` call, which the group commit paid twice per write.
   */
  private readonly inTx: Database.Transaction<(fn: () => unknown) => unknown>;

  private constructor(
    private readonly db: Database.Database,
    readonly file: string,
  ) {
    this.inTx = db.transaction((fn: () => unknown) => fn());
  }

  readonly shared = false;

  get location(): string {
    return this.file;
  }

  /** A prepared statement, compiled once per distinct SQL text (preparing costs more than most queries). */
  private prepare(sql: string): Database.Statement {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      if (this.statements.size >= STATEMENT_CACHE_MAX) this.statements.clear();
      stmt = this.db.prepare(sql);
      this.statements.set(sql, stmt);
    }
    return stmt;
  }

  /**
   * The worker's per-task writes (claim, partial file, finish, requeue) issued in one turn of the
   * event loop, committed together in one transaction at the end of that turn (group commit); each
   * caller gets its own answer once the transaction is committed, never before. For a batch of small
   * files three commits a file were the largest part of the store's cost (each commit locks and
   * writes the WAL pages it touched; neighbouring tasks share pages). Writes are applied in the order
   * issued; reads are never deferred. A write that throws is rare (the writes check their claims and
   * answer false): then the group is rolled back and each write runs alone (commitPending), where a
   * savepoint around every write cost ~4 statements a file.
   */
  private grouped<T>(fn: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (!this.pending) {
        this.pending = [];
        setImmediate(() => this.pending && this.commitPending());
      }
      this.pending.push({ fn, resolve: resolve as (v: unknown) => void, reject });
    });
  }

  private commitPending(): void {
    const ops = this.pending!;
    this.pending = null;
    let results: unknown[];
    try {
      results = this.inTx.immediate(() => ops.map((op) => op.fn())) as unknown[];
    } catch {
      // One write threw, or the transaction failed (a full disk): nothing of the group is written.
      // Each write then runs again in a transaction of its own, so that one write's failure is its
      // own answer and the others' stand (a failed transaction fails each of them again).
      this.outputs = null; // it may hold writes that were rolled back
      for (const op of ops) {
        try {
          op.resolve(this.inTx.immediate(op.fn));
        } catch (err) {
          this.outputs = null;
          op.reject(err);
        }
      }
      return;
    } finally {
      this.previews.clear();
    }
    ops.forEach((op, i) => op.resolve(results[i]));
  }

  /** Open (creating when missing) the store of `home`. Throws StoreError naming the file. */
  static async open(home: string): Promise<SqliteStore> {
    const file = storePath(home);
    try {
      fs.mkdirSync(home, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new StoreError(`cannot create ${home}: ${(err as Error).message}`);
    }
    // Create the file ourselves so it is 0600 from its first byte (SQLite would honour the umask).
    try {
      fs.closeSync(fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_RDWR, 0o600));
    } catch (err) {
      const failure = storeFailure(err, file);
      throw failure instanceof StoreError ? failure : new StoreError(`cannot open the store ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    let db: Database.Database | undefined;
    try {
      db = new Database(file, { timeout: 10_000 });
      SqliteStore.prepareOpened(db, file);
    } catch (err) {
      db?.close();
      const failure = storeFailure(err, file);
      if (failure instanceof StoreError) throw failure;
      const reason = (err as Error).message;
      throw new StoreError(`the store ${file} cannot be opened or is corrupt (${reason}): move it aside to start afresh`);
    }
    for (const suffix of ['-wal', '-shm']) {
      try {
        fs.chmodSync(file + suffix, 0o600);
      } catch {
        /* not there yet */
      }
    }
    return new SqliteStore(db, file);
  }

  /**
   * WAL, the pragmas, and the schema made or checked. Many commands opening a store that does not
   * exist yet race to switch it to WAL and create its tables, and SQLite can answer one of them busy
   * at once instead of waiting its busy timeout (seen once in a run of the whole suite, with 50
   * commands adding at once under load): such an answer is retried for up to about 2 s.
   */
  private static prepareOpened(db: Database.Database, file: string): void {
    for (let tries = 1; ; tries++) {
      try {
        if (db.pragma('journal_mode', { simple: true }) !== 'wal') db.pragma('journal_mode = WAL');
        db.pragma('synchronous = NORMAL');
        db.pragma('foreign_keys = ON');
        const version = db.pragma('user_version', { simple: true }) as number;
        if (version > SCHEMA_VERSION) {
          throw new StoreError(
            `the store ${file} was written by a newer bgdl (schema ${version}, this bgdl knows ${SCHEMA_VERSION}): upgrade bgdl; it does not downgrade stores`,
          );
        }
        if (version < SCHEMA_VERSION) SqliteStore.migrate(db, file, version);
        else SqliteStore.checkForeign(db, file);
        return;
      } catch (err) {
        if (tries >= OPEN_BUSY_TRIES || failureKind(String((err as { code?: unknown }).code ?? '')) !== 'busy') throw err;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10 + Math.random() * 30);
      }
    }
  }

  private static migrate(db: Database.Database, file: string, from: number): void {
    db.transaction(() => {
      const current = db.pragma('user_version', { simple: true }) as number;
      if (current !== from) return; // another process migrated meanwhile
      if (current === 0) {
        const tables = db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'").get() as Row;
        if (tables.n > 0) {
          throw new StoreError(`the store ${file} is not a bgdl store (it holds other tables): point BGDL_HOME elsewhere or move the file aside`);
        }
      }
      for (let v = current; v < SCHEMA_VERSION; v++) db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }).immediate();
  }

  private static checkForeign(db: Database.Database, file: string): void {
    const have = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('tasks','sessions','events','lease')").all();
    if (have.length !== 4) throw new StoreError(`the store ${file} is not a bgdl store or is damaged (tables missing): move it aside to start afresh`);
  }

  /** Changes whenever another connection commits: a cheap way for the worker to notice commands. */
  private dataVersion(): number {
    this.dataVersionStmt ??= this.db.prepare('PRAGMA data_version').pluck();
    return this.dataVersionStmt.get() as number;
  }

  changes(): ChangeToken {
    return { others: this.dataVersion(), mine: this.queueEpoch };
  }

  /**
   * SQLite has no notifications, but another process's commit writes the WAL file: a watch on it
   * (inotify, kqueue) wakes the wait at once, and the data version (a read of a counter, no I/O) says
   * whether it was another's commit. Looked at every 100 ms as well, for filesystems that report no
   * changes. A running worker used to notice an `add` up to 100 ms late, and `wait` its end up to 200.
   */
  async waitForChange(since: ChangeToken, ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return;
    if (this.dataVersion() !== since.others) return;
    await new Promise<void>((resolve, reject) => {
      let watcher: fs.FSWatcher | null = null;
      let settled = false;
      const finish = (err?: unknown) => {
        if (settled) return;
        settled = true;
        watcher?.close();
        clearInterval(poll);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(storeFailure(err, this.file));
        else resolve();
      };
      const onAbort = () => finish();
      const look = () => {
        if (settled) return;
        try {
          if (this.dataVersion() !== since.others) finish();
        } catch (err) {
          finish(err);
        }
      };
      // The WAL is written before the commit that ends the write is visible: look again a moment later.
      const written = () => {
        look();
        if (!settled) setTimeout(look, 5);
      };
      try {
        watcher = fs.watch(`${this.file}-wal`, { persistent: false }, written).on('error', () => {});
      } catch {
        // No WAL file yet, or nothing to watch with here: the polling below is enough.
      }
      const poll = setInterval(look, 100);
      const timer = setTimeout(() => finish(), ms);
      signal?.addEventListener('abort', onAbort);
    });
  }

  async close(): Promise<void> {
    if (this.pending) this.commitPending();
    this.db.close();
  }

  // ---- sessions ------------------------------------------------------------------------------

  private insertSessionIfMissing(name: string, now: number): void {
    this.prepare('INSERT OR IGNORE INTO sessions (name, created_at) VALUES (?, ?)').run(name, now);
  }

  private sessionRow(name: string): Row | undefined {
    return this.prepare('SELECT * FROM sessions WHERE name = ?').get(name) as Row | undefined;
  }

  async createSession(name: string, patch: SessionPatch, now = Date.now()): Promise<Session> {
    return this.db.transaction(() => {
      if (this.sessionRow(name)) throw new UsageError(`session '${name}' already exists: change it with bgdl session set ${name}`);
      this.insertSessionIfMissing(name, now);
      this.patchSession(name, patch);
      return rowToSession(this.sessionRow(name)!);
    }).immediate();
  }

  private patchSession(name: string, patch: SessionPatch): void {
    if (patch.hook !== undefined) this.prepare('UPDATE sessions SET hook = ?, hook_failures = 0, hook_next_at = NULL WHERE name = ?').run(patch.hook, name);
    if (patch.launchEvents !== undefined) this.prepare('UPDATE sessions SET launch_events = ? WHERE name = ?').run(+patch.launchEvents, name);
    if (patch.discretionary !== undefined) this.prepare('UPDATE sessions SET discretionary = ? WHERE name = ?').run(+patch.discretionary, name);
    if (patch.limitRate !== undefined) this.prepare('UPDATE sessions SET limit_rate = ? WHERE name = ?').run(patch.limitRate, name);
  }

  /** The bandwidth limits of these tasks' sessions, by task id (what the worker re-reads to apply changes). */
  async sessionLimits(taskIds: number[]): Promise<Map<number, number | null>> {
    const out = new Map<number, number | null>();
    if (taskIds.length === 0) return out;
    const rows = this.prepare(
      `SELECT t.id AS id, s.limit_rate AS rate FROM tasks t JOIN sessions s ON s.name = t.session WHERE t.id IN (${taskIds.map(() => '?').join(',')})`,
    ).all(...taskIds) as Row[];
    for (const r of rows) out.set(r.id, r.rate ?? null);
    return out;
  }

  async updateSession(name: string, patch: SessionPatch): Promise<Session> {
    return this.db.transaction(() => {
      if (!this.sessionRow(name)) throw new NotFoundError(`no session named '${name}': see bgdl session list`);
      this.patchSession(name, patch);
      return rowToSession(this.sessionRow(name)!);
    }).immediate();
  }

  async getSession(name: string): Promise<Session | null> {
    const r = this.sessionRow(name);
    return r ? rowToSession(r) : null;
  }

  async listSessions(): Promise<SessionSummary[]> {
    const sessions = (this.prepare('SELECT * FROM sessions ORDER BY name').all() as Row[]).map(rowToSession);
    const counts = this.prepare('SELECT session, state, count(*) AS n FROM tasks GROUP BY session, state').all() as Row[];
    const events = this.prepare('SELECT session, count(*) AS n FROM events WHERE delivered_at IS NULL GROUP BY session').all() as Row[];
    return sessions.map((s) => {
      const c = emptyCounts();
      for (const r of counts) if (r.session === s.name) c[r.state as TaskState] = r.n;
      return { ...s, counts: c, undeliveredEvents: events.find((e) => e.session === s.name)?.n ?? 0 };
    });
  }

  /** Remove a session with its finished tasks and events; refused while it has unfinished tasks. */
  async removeSession(name: string): Promise<void> {
    this.outputs = null;
    this.db.transaction(() => {
      if (!this.sessionRow(name)) throw new NotFoundError(`no session named '${name}': see bgdl session list`);
      const active = this.prepare("SELECT count(*) AS n FROM tasks WHERE session = ? AND state IN ('queued','running','paused')").get(name) as Row;
      if (active.n > 0) {
        throw new UsageError(`session '${name}' has ${active.n} unfinished task(s): cancel them first (bgdl cancel) or wait for them`);
      }
      this.prepare('DELETE FROM events WHERE session = ?').run(name);
      this.prepare('DELETE FROM tasks WHERE session = ?').run(name);
      this.prepare('DELETE FROM sessions WHERE name = ?').run(name);
    }).immediate();
  }

  /** A person ran bgdl at a terminal for this session: the relaunch rate limiter starts over. */
  async resetRateLimit(name: string): Promise<void> {
    this.prepare('UPDATE sessions SET rl_count = 0, rl_last_run_at = NULL WHERE name = ? AND rl_count > 0').run(name);
  }

  // ---- tasks ---------------------------------------------------------------------------------

  /**
   * Store a batch of new tasks in one transaction, creating sessions on first use. Tasks from a hook
   * take the session's rate-limit delay and are discretionary unless the caller said otherwise.
   */
  async enqueue(tasks: NewTask[], rateLimit: RateLimitConfig, now = Date.now()): Promise<Task[]> {
    this.queueEpoch++;
    this.outputs = null;
    const insert = this.prepare(`
      INSERT INTO tasks (session, kind, url, method, headers, output, output_fixed, dir, upload_file, upload_size,
        state, wait_reason, not_before, begin_at, discretionary, priority, expect_send, expect_receive,
        sha256_expected, bytes_expected, insecure, ca_file, allow_downgrade, from_hook, created_at, timeout_from,
        max_size, proxy, netrc_file, cookies_file, skip_existing, if_changed, checksums, max_attempts, limit_rate, split)
      VALUES (@session, @kind, @url, @method, @headers, @output, @outputFixed, @dir, @uploadFile, @uploadSize,
        @state, @waitReason, @notBefore, @beginAt, @discretionary, @priority, @expectSend, @expectReceive,
        @sha256Expected, @bytesExpected, @insecure, @caFile, @allowDowngrade, @fromHook, @now, @now,
        @maxSize, @proxy, @netrcFile, @cookiesFile, @skipExisting, @ifChanged, @checksums, @maxAttempts, @limitRate, @split)`);
    // A batch shares one --checksums map: serialize it once, not once per task.
    const checksumsJson = new Map<Record<string, string>, string>();
    const serialize = (m: Record<string, string>) => checksumsJson.get(m) ?? checksumsJson.set(m, JSON.stringify(m)).get(m)!;
    return this.db.transaction(() => {
      // In the same (immediate) transaction as the inserts: of two concurrent adders, one sees the other's task.
      this.checkOutputsFree(tasks);
      const sessions = new Map<string, Session>();
      const ids: number[] = [];
      for (const t of tasks) {
        let s = sessions.get(t.session);
        if (!s) {
          this.insertSessionIfMissing(t.session, now);
          s = rowToSession(this.sessionRow(t.session)!);
          sessions.set(t.session, s);
        }
        const delay = enqueueDelay(s, t.fromHook, rateLimit);
        const discretionary = t.discretionary ?? (s.discretionary || t.fromHook);
        // Each parameter named, not `{ ...t, … }`: V8 copies a spread object with added keys very
        // slowly (a third of `add -i` of 100,000 URLs).
        const info = insert.run({
          session: t.session,
          kind: t.kind,
          url: t.url,
          method: t.method,
          output: t.output,
          dir: t.dir,
          beginAt: t.beginAt,
          expectSend: t.expectSend,
          expectReceive: t.expectReceive,
          sha256Expected: t.sha256Expected,
          caFile: t.caFile,
          headers: JSON.stringify(t.headers),
          outputFixed: +t.outputFixed,
          uploadFile: t.uploadFile ?? null,
          uploadSize: t.uploadSize ?? null,
          state: t.suspended ? 'paused' : 'queued',
          waitReason: delay > 0 ? 'rate-limit' : null,
          notBefore: delay > 0 ? now + delay : null,
          discretionary: +discretionary,
          priority: PRIORITIES.indexOf(t.priority),
          bytesExpected: t.kind === 'download' ? t.expectReceive : (t.uploadSize ?? null),
          insecure: +t.insecure,
          allowDowngrade: +t.allowDowngrade,
          fromHook: +t.fromHook,
          now,
          maxSize: t.maxSize ?? null,
          proxy: t.proxy ? JSON.stringify(t.proxy) : null,
          netrcFile: t.netrcFile ?? null,
          cookiesFile: t.cookiesFile ?? null,
          skipExisting: +!!t.skipExisting,
          ifChanged: +!!t.ifChanged,
          checksums: t.checksums ? serialize(t.checksums) : null,
          maxAttempts: t.maxAttempts ?? null,
          limitRate: t.limitRate ?? null,
          split: t.split == null ? null : t.split === 'auto' ? 0 : t.split,
        });
        ids.push(Number(info.lastInsertRowid));
      }
      return this.selectByIds(ids);
    }).immediate();
  }

  /**
   * Two live tasks never share an output: a fixed output (-o, an -i OUTPUT) that a live task of the
   * store already has, or that the batch names twice, is refused (UsageError naming the owner).
   * Derived names are kept apart by the worker (outputsInUse).
   */
  private checkOutputsFree(tasks: NewTask[]): void {
    const fixed = tasks.filter((t) => t.outputFixed && t.output);
    if (fixed.length === 0) return;
    const live = this.liveOutputs();
    refuseSharedOutputs(fixed, live);
  }

  /** Output → the live task that has it, read once per operation. */
  private liveOutputs(): Map<string, { id: number; state: string }> {
    const live = new Map<string, { id: number; state: string }>();
    const rows = this.prepare("SELECT id, state, output FROM tasks WHERE state IN ('queued','running','paused') AND output IS NOT NULL").all() as Row[];
    for (const r of rows) live.set(r.output, { id: r.id, state: r.state });
    return live;
  }

  private selectByIds(ids: number[]): Task[] {
    const out: Task[] = [];
    for (const { part, list } of idParts(ids)) out.push(...readTasks(this.prepare(`SELECT * FROM tasks WHERE id IN ${list} ORDER BY id`), part));
    return out;
  }

  /** The tasks with these ids, in the order given; NotFoundError names the first missing id. */
  async getTasks(ids: number[]): Promise<Task[]> {
    const found = new Map(this.selectByIds([...new Set(ids)]).map((t) => [t.id, t]));
    const missing = ids.find((id) => !found.has(id));
    if (missing !== undefined) throw new NotFoundError(`no task with id ${missing}: see bgdl status`);
    return ids.map((id) => found.get(id)!);
  }

  async getTask(id: number): Promise<Task | null> {
    return this.taskById(id);
  }

  private taskById(id: number): Task | null {
    return readTasks(this.prepare('SELECT * FROM tasks WHERE id = ?'), [id])[0] ?? null;
  }

  /** Tasks in id order. */
  async listTasks(filter: TaskFilter = {}): Promise<Task[]> {
    const where = whereOf(filter);
    return readTasks(this.prepare(`SELECT * FROM tasks ${where.sql} ORDER BY id`), where.args);
  }

  /** Status rows in id order: only the columns a status table shows, which keeps `bgdl status` fast with tens of thousands of tasks. */
  async listBriefTasks(filter: TaskFilter = {}): Promise<TaskBrief[]> {
    const where = whereOf(filter);
    return readTasks(this.prepare(`SELECT ${BRIEF_COLUMNS} FROM tasks ${where.sql} ORDER BY id`), where.args, briefTaskFrom);
  }

  /** Per session (in name order): counts by state, bytes and speed, for the status summary line. */
  async taskTotals(filter: { session?: string } = {}): Promise<TaskTotals[]> {
    const sql = `SELECT session, state, count(*) AS n,
        sum(CASE kind WHEN 'upload' THEN bytes_sent ELSE bytes_received END) AS done,
        sum(bytes_expected) AS expected, sum(speed) AS speed
      FROM tasks ${filter.session ? 'WHERE session = ?' : ''} GROUP BY session, state ORDER BY session`;
    const bySession = new Map<string, TaskTotals>();
    for (const r of this.prepare(sql).all(...(filter.session ? [filter.session] : [])) as Row[]) {
      let t = bySession.get(r.session);
      if (!t) bySession.set(r.session, (t = { session: r.session, counts: emptyCounts(), bytesDone: 0, bytesExpected: 0, speed: 0 }));
      t.counts[r.state as TaskState] = r.n;
      t.bytesDone += r.done ?? 0;
      t.bytesExpected += r.expected ?? 0;
      if (r.state === 'running') t.speed += r.speed ?? 0;
    }
    return [...bySession.values()];
  }

  /**
   * At most `limit` tasks (status table columns only) in one of these states: unfinished ones in the
   * order the worker takes them (priority, then id), finished ones most recently finished first. The
   * status summary view reads a screenful this way instead of every task.
   */
  async briefTasksPage(filter: { session?: string; state: TaskState; limit: number }): Promise<TaskBrief[]> {
    const order = isFinal(filter.state) ? 'finished_at DESC, id DESC' : 'priority DESC, id';
    const sql = `SELECT ${BRIEF_COLUMNS}, finished_at FROM tasks WHERE state = ? ${filter.session ? 'AND session = ?' : ''} ORDER BY ${order} LIMIT ?`;
    const args = filter.session ? [filter.state, filter.session, filter.limit] : [filter.state, filter.limit];
    return readTasks(this.prepare(sql), args, briefTaskFrom);
  }

  /**
   * pause / resume / cancel / retry in one transaction: the tasks with these ids (all must exist), or
   * those a filter selects among the states the action applies to (ACTION_FROM).
   */
  async transition(target: number[] | TaskFilter, action: TaskAction, now = Date.now()): Promise<TransitionResult> {
    this.queueEpoch++;
    this.outputs = null;
    return this.db.transaction(() => {
      let tasks: Task[];
      if (Array.isArray(target)) {
        tasks = this.selectByIds([...new Set(target)]);
        const byId = new Set(tasks.map((t) => t.id));
        const missing = target.find((id) => !byId.has(id));
        if (missing !== undefined) throw new NotFoundError(`no task with id ${missing}: see bgdl status`);
      } else {
        const states = ACTION_FROM[action].filter((st) => !target.states || target.states.includes(st));
        const where = whereOf({ ...target, states });
        tasks = readTasks(this.prepare(`SELECT * FROM tasks ${where.sql} ORDER BY id`), where.args);
      }
      const result: TransitionResult = { changed: [], skipped: [], previous: new Map() };
      let live: Map<string, { id: number; state: string }> | null = null;
      const outputs = () => (live ??= this.liveOutputs());
      for (const t of tasks) {
        const reason = this.applyTransition(t, action, now, outputs);
        if (reason) result.skipped.push({ task: t, reason });
        else {
          result.changed.push(this.taskById(t.id)!);
          result.previous.set(t.id, t.state);
        }
      }
      return result;
    }).immediate();
  }

  /**
   * Remove finished tasks that the filter selects, with their delivered events. Never an unfinished
   * task and never an undelivered event: an event carries everything about its task, so it stays for
   * the hook or `bgdl events` after its task is gone.
   */
  async prune(filter: TaskFilter): Promise<{ tasks: number; events: number }> {
    const states = (filter.states ?? FINAL_STATES).filter((st) => FINAL_STATES.includes(st));
    const where = whereOf({ ...filter, states });
    this.outputs = null;
    return this.db.transaction(() => {
      const events = this.prepare(`DELETE FROM events WHERE delivered_at IS NOT NULL AND task_id IN (SELECT id FROM tasks ${where.sql})`).run(...where.args).changes;
      const tasks = this.prepare(`DELETE FROM tasks ${where.sql}`).run(...where.args).changes;
      return { tasks, events };
    }).immediate();
  }

  /**
   * The latest completed download that wrote `output` (skips, 304s and bodiless answers wrote
   * nothing): the validators and size --if-changed compares the file on disk with.
   */
  async lastDownloadOf(output: string): Promise<DownloadRecord | null> {
    const r = this
      .prepare(`SELECT url, output, etag, last_modified, bytes_received, finished_at FROM tasks
                WHERE state = 'completed' AND output = ? AND kind = 'download' AND outcome IS NULL ORDER BY finished_at DESC, id DESC LIMIT 1`)
      .get(output) as Row | undefined;
    return r ? { url: r.url, output: r.output, etag: r.etag, lastModified: r.last_modified, bytes: r.bytes_received, finishedAt: r.finished_at } : null;
  }

  /** The output of the latest completed download of `url` into `dir` (where --if-changed looks for a derived name). */
  async lastOutputOf(url: string, dir: string): Promise<string | null> {
    const r = this
      .prepare(`SELECT output FROM tasks WHERE state = 'completed' AND url = ? AND dir = ? AND kind = 'download' AND outcome IS NULL
                AND output IS NOT NULL ORDER BY finished_at DESC, id DESC LIMIT 1`)
      .get(url, dir) as Row | undefined;
    return r?.output ?? null;
  }

  /** Returns why the task was left alone (rules/transitions.ts), or null when it changed. */
  private applyTransition(t: Task, action: TaskAction, now: number, liveOutputs: () => Map<string, { id: number; state: string }>): string | null {
    const refusal = transitionRefusal(t.state, action);
    if (refusal) return refusal;
    const set = (sql: string, ...args: unknown[]) => this.prepare(`UPDATE tasks SET ${sql} WHERE id = ?`).run(...args, t.id);
    switch (action) {
      case 'pause':
        set("state = 'paused', speed = NULL");
        return null;
      case 'resume':
        set("state = 'queued', wait_reason = NULL, wait_detail = NULL, not_before = NULL");
        return null;
      case 'cancel':
        set("state = 'canceled', finished_at = ?, speed = NULL, wait_reason = NULL, not_before = NULL, claim = claim + 1", now);
        this.insertEvent({ ...t, state: 'canceled', finishedAt: now }, 'canceled', now);
        return null;
      case 'retry': {
        const conflict = retryOutputRefusal(t.id, t.output, t.output ? liveOutputs().get(t.output) : undefined);
        if (conflict) return conflict;
        if (t.output) liveOutputs().set(t.output, { id: t.id, state: 'queued' });
        set(`state = 'queued', attempts = 0, error_code = NULL, error_message = NULL, wait_reason = NULL, wait_detail = NULL,
             not_before = NULL, finished_at = NULL, started_at = NULL, timeout_from = ?, bytes_received = resume_offset, sha256 = NULL,
             outcome = NULL`, now);
        return null;
      }
    }
  }

  private insertEvent(t: Task, type: EventType, now: number): void {
    const data = eventFor(t, type, now);
    this.prepare('INSERT INTO events (session, task_id, type, data, at) VALUES (?, ?, ?, ?, ?)').run(t.session, t.id, type, JSON.stringify(data), now);
  }

  // ---- the worker lease ----------------------------------------------------------------------

  /** The lease of a worker (null when none holds it: never taken, or released). */
  async readLease(): Promise<Lease | null> {
    const r = this.prepare('SELECT * FROM lease WHERE id = ?').get(LEASE_ID) as Row | undefined;
    return r && r.pid !== 0 ? { pid: r.pid, host: r.host, heartbeat: r.heartbeat, startedAt: r.started_at, token: r.token } : null;
  }

  /** Is a live worker holding the lease (its pid alive here, its heartbeat recent)? */
  async liveWorker(now: number, staleMs: number, isAlive: (pid: number) => boolean): Promise<boolean> {
    const cur = this.prepare('SELECT * FROM lease WHERE id = ?').get(LEASE_ID) as Row | undefined;
    return !!cur && !leaseIsStale(cur as LeaseRow, now, staleMs, isAlive, os.hostname());
  }

  /**
   * Write the lease for `pid` with the next token: every takeover raises it, so the writes of the
   * worker that held it before (frozen, say) are refused from now on. The row is never deleted
   * (release clears the pid), so tokens only grow.
   */
  private writeLease(cur: Row | undefined, pid: number, now: number): LeaseFence {
    const token = nextToken(cur?.token);
    this.prepare('INSERT OR REPLACE INTO lease (id, pid, host, heartbeat, started_at, token) VALUES (?, ?, ?, ?, ?, ?)').run(LEASE_ID, pid, this.host, now, now, token);
    return { pid, token };
  }

  /**
   * Take the lease for `pid` when it is free, already ours (a CLI reserved it for us), or stale:
   * its pid is gone on this host, or its heartbeat is older than `staleMs`. Returns the fence the
   * worker's writes carry, or null when another worker holds it.
   */
  async takeLease(pid: number, now: number, staleMs: number, isAlive: (pid: number) => boolean): Promise<LeaseFence | null> {
    return this.db.transaction(() => {
      const cur = this.prepare('SELECT * FROM lease WHERE id = ?').get(LEASE_ID) as Row | undefined;
      if (cur && cur.pid !== pid && !leaseIsStale(cur as LeaseRow, now, staleMs, isAlive, os.hostname())) return null;
      return this.writeLease(cur, pid, now);
    }).immediate();
  }

  /** Is the lease still this worker's? Checked inside every worker-level write's transaction. */
  private leaseHeld(f: LeaseFence): boolean {
    return !!this.prepare('SELECT 1 FROM lease WHERE id = ? AND pid = ? AND token = ? AND host = ?').get(LEASE_ID, f.pid, f.token, this.host);
  }

  /** Refresh our heartbeat; false when the lease is no longer ours. */
  async heartbeat(f: LeaseFence, now: number): Promise<boolean> {
    const info = this.prepare('UPDATE lease SET heartbeat = ? WHERE id = ? AND pid = ? AND token = ? AND host = ?').run(now, LEASE_ID, f.pid, f.token, this.host);
    return info.changes === 1;
  }

  async releaseLease(f: LeaseFence): Promise<void> {
    this.prepare('UPDATE lease SET pid = 0, heartbeat = 0 WHERE id = ? AND pid = ? AND token = ? AND host = ?').run(LEASE_ID, f.pid, f.token, this.host);
  }

  /**
   * For the CLI: when there is work and no live worker, call `spawn` (which starts a detached worker
   * and returns its pid) and record that pid in the lease, all in one transaction, so that many
   * concurrent commands start exactly one worker.
   */
  async ensureWorker(now: number, staleMs: number, isAlive: (pid: number) => boolean, spawn: () => number | undefined): Promise<'running' | 'started' | 'idle'> {
    const quick = this.prepare('SELECT * FROM lease WHERE id = ?').get(LEASE_ID) as Row | undefined;
    if (quick && !leaseIsStale(quick as LeaseRow, now, staleMs, isAlive, os.hostname())) return 'running';
    if (!this.hasWorkSync(now)) return 'idle';
    return this.db.transaction(() => {
      const cur = this.prepare('SELECT * FROM lease WHERE id = ?').get(LEASE_ID) as Row | undefined;
      if (cur && !leaseIsStale(cur as LeaseRow, now, staleMs, isAlive, os.hostname())) return 'running' as const;
      const pid = spawn();
      if (!pid) return 'idle' as const;
      this.writeLease(cur, pid, now);
      return 'started' as const;
    }).immediate();
  }

  private hasWorkSync(now: number): boolean {
    const w = this.workSummarySync(now);
    return w.queued + w.running + w.pendingHooks > 0;
  }

  private workSummarySync(_now: number): WorkSummary {
    const tasks = this.prepare("SELECT state, count(*) AS n FROM tasks WHERE state IN ('queued','running') GROUP BY state").all() as Row[];
    const hooks = this.prepare(`
      SELECT count(*) AS n FROM sessions s
      WHERE s.hook IS NOT NULL AND s.launch_events = 1
        AND EXISTS (SELECT 1 FROM events e WHERE e.session = s.name AND e.delivered_at IS NULL)`).get() as Row;
    return {
      queued: tasks.find((r) => r.state === 'queued')?.n ?? 0,
      running: tasks.find((r) => r.state === 'running')?.n ?? 0,
      pendingHooks: hooks.n,
    };
  }

  /** Queued and running tasks, and sessions whose hook has events to deliver. */
  async workSummary(now = Date.now()): Promise<WorkSummary> {
    return this.workSummarySync(now);
  }

  // ---- the worker's task operations ----------------------------------------------------------

  /**
   * On worker start: tasks left `running` by a worker that died or lost its lease go back to the
   * queue (their partial files stay), each with a new claim so the old attempt's writes are refused.
   * null when the lease is no longer this worker's.
   */
  async requeueOrphans(lease: LeaseFence): Promise<Task[] | null> {
    this.queueEpoch++;
    this.outputs = null;
    return this.db.transaction(() => {
      if (!this.leaseHeld(lease)) return null;
      const rows = readTasks(this.prepare("SELECT * FROM tasks WHERE state = 'running'"), []);
      this.prepare("UPDATE tasks SET state = 'queued', speed = NULL, bytes_received = resume_offset, claim = claim + 1 WHERE state = 'running'").run();
      return rows;
    }).immediate();
  }

  /**
   * Canceled tasks whose partial file is still recorded: cancel left it to a worker that then lost
   * its lease (frozen), or the command stopped before removing it. The worker removes them on start.
   */
  async canceledParts(): Promise<CanceledPart[]> {
    const rows = this.prepare("SELECT id, session, part_path, part_id FROM tasks WHERE state = 'canceled' AND part_path IS NOT NULL").all() as Row[];
    return rows.map((r) => ({ id: r.id, session: r.session, partPath: r.part_path, partId: r.part_id }));
  }

  /** Those partial files are gone: forget them (only while the lease is ours and the tasks still canceled). */
  async forgetParts(ids: number[], lease: LeaseFence): Promise<boolean> {
    const stmt = this.prepare("UPDATE tasks SET part_path = NULL, part_id = NULL WHERE id = ? AND state = 'canceled'");
    return this.db.transaction(() => {
      if (!this.leaseHeld(lease)) return false;
      for (const id of ids) stmt.run(id);
      return true;
    }).immediate();
  }

  /**
   * Queued tasks whose begin-at and not-before times have passed (rules/runnable.ts `isCandidate`),
   * best first (priority, then age), with only what the scheduler looks at: the worker asks after
   * every finished transfer, so this is its most frequent query.
   */
  async runnableCandidates(now: number, limit: number): Promise<Candidate[]> {
    const stmt = this.prepare(`SELECT ${CANDIDATE_COLUMNS} FROM tasks WHERE state = 'queued' AND (begin_at IS NULL OR begin_at <= ?) AND (not_before IS NULL OR not_before <= ?)
                ORDER BY priority DESC, id LIMIT ?`);
    return readTasks(stmt, [now, now, limit], candidateFrom);
  }

  /** Whether any queued task is held by conditions, and whether any is discretionary (what makes scheduling subtle). */
  async queueFacts(): Promise<{ held: boolean; discretionary: boolean }> {
    const r = this.prepare(`SELECT EXISTS (SELECT 1 FROM tasks WHERE state = 'queued' AND wait_reason = 'conditions') AS held,
        EXISTS (SELECT 1 FROM tasks WHERE state = 'queued' AND discretionary = 1) AS discretionary`).get() as Row;
    return { held: r.held === 1, discretionary: r.discretionary === 1 };
  }

  /** The earliest future begin-at or not-before of a queued task, for the worker's sleep. */
  async nextWakeAt(now: number): Promise<number | null> {
    const r = this
      .prepare(`SELECT min(t) AS t FROM (
          SELECT begin_at AS t FROM tasks WHERE state = 'queued' AND begin_at > ?
          UNION ALL SELECT not_before AS t FROM tasks WHERE state = 'queued' AND not_before > ?)`)
      .get(now, now) as Row;
    return r.t ?? null;
  }

  /**
   * Claim a queued task for a transfer attempt, raising its claim (the attempt's fencing token, in the
   * task returned); null when it changed meanwhile (paused, canceled) or the lease is no longer ours.
   */
  async markRunning(id: number, now: number, lease: LeaseFence, _limits?: ClaimLimits): Promise<Task | null> {
    // One worker per SQLite store: the scheduler's own count of running transfers is already the whole truth.
    return this.grouped(() => {
      const p = this.previews.get(id);
      const preview = p && p.now === now ? p.task : null;
      if (!this.leaseHeld(lease)) return null;
      // What this writes, claimedTask says (previewClaim): the store tests hold the two together.
      // After a preview, only the task as previewed is claimed (a cancel and a retry in between moved
      // its claim on), and the preview is the answer: reading the row again was ~2% of the worker's
      // main thread over a batch of small files (profiled: 2,000 x 16 KiB at the defaults).
      const info = this
        .prepare(`UPDATE tasks SET state = 'running', attempts = attempts + 1, started_at = coalesce(started_at, ?),
                  wait_reason = NULL, wait_detail = NULL, not_before = NULL, speed = NULL, claim = claim + 1
                  WHERE id = ? AND state = 'queued' AND claim = coalesce(?, claim)`)
        .run(now, id, preview ? preview.claim - 1 : null);
      if (info.changes !== 1) return null;
      return preview ?? this.taskById(id);
    });
  }

  previewClaim(id: number, now: number): Task | null {
    const t = this.taskById(id);
    if (!t || t.state !== 'queued') return null;
    const task = claimedTask(t, now);
    this.previews.set(id, { now, task });
    return task;
  }

  /** One worker per SQLite store: its own count of connections is the whole truth. */
  async takeExtraConnection(_f: TaskFence, _perHost: number): Promise<boolean> {
    return true;
  }

  async giveBackExtraConnection(_f: TaskFence): Promise<void> {}

  /** Mark queued tasks as held by a reason that has no time (conditions); clears it for the others given. */
  async setHeld(hold: { id: number; reason: WaitingFor; detail: string | null }[], release: number[], lease: LeaseFence): Promise<boolean> {
    this.queueEpoch++;
    const holdStmt = this.prepare("UPDATE tasks SET wait_reason = ?, wait_detail = ? WHERE id = ? AND state = 'queued'");
    const releaseStmt = this.prepare("UPDATE tasks SET wait_reason = NULL, wait_detail = NULL WHERE id = ? AND state = 'queued' AND wait_reason = 'conditions'");
    return this.db.transaction(() => {
      if (!this.leaseHeld(lease)) return false;
      for (const h of hold) holdStmt.run(h.reason, h.detail, h.id);
      for (const id of release) releaseStmt.run(id);
      return true;
    }).immediate();
  }

  /** Current states of these tasks (the worker watches for pause and cancel). */
  async statesOf(ids: number[]): Promise<Map<number, TaskControl>> {
    const out = new Map<number, TaskControl>();
    for (const { part, list } of idParts(ids)) {
      for (const r of this.prepare(`SELECT id, state, claim FROM tasks WHERE id IN ${list}`).all(...part) as Row[]) out.set(r.id, { state: r.state, claim: r.claim });
    }
    return out;
  }

  /** Progress of many running tasks in one transaction. Returns the ids whose claim has moved on (refused). */
  async recordProgress(updates: ProgressUpdate[]): Promise<number[]> {
    if (updates.length === 0) return [];
    const stmt = this.prepare(`UPDATE tasks SET
        bytes_received = coalesce(@bytesReceived, bytes_received),
        bytes_sent = coalesce(@bytesSent, bytes_sent),
        bytes_expected = CASE WHEN @hasExpected THEN @bytesExpected ELSE bytes_expected END,
        resume_offset = coalesce(@resumeOffset, resume_offset),
        segments = coalesce(@segments, segments),
        speed = @speed
      WHERE id = @id AND claim = @claim AND state IN ('running', 'paused')`);
    const claimStmt = this.prepare('SELECT claim FROM tasks WHERE id = ?').pluck();
    return this.db.transaction(() => {
      const refused: number[] = [];
      for (const u of updates) {
        const info = stmt.run({
          id: u.id,
          claim: u.claim,
          bytesReceived: u.bytesReceived ?? null,
          bytesSent: u.bytesSent ?? null,
          hasExpected: u.bytesExpected !== undefined ? 1 : 0,
          bytesExpected: u.bytesExpected ?? null,
          resumeOffset: u.resumeOffset ?? null,
          speed: u.speed ?? null,
          segments: u.segments ?? null,
        });
        if (info.changes === 0 && claimStmt.get(u.id) !== u.claim) refused.push(u.id);
      }
      return refused;
    }).immediate();
  }

  /** Does this attempt still hold its task (checked before the final rename)? */
  async holdsClaim(f: TaskFence): Promise<boolean> {
    return this.prepare('SELECT claim FROM tasks WHERE id = ?').pluck().get(f.id) === f.claim;
  }

  /**
   * What a response told us (final URL, status, length, validators, the chosen output) and the
   * partial file the attempt writes. False (nothing written) when the claim has moved on.
   */
  async recordResponse(f: TaskFence, info: ResponseInfo): Promise<boolean> {
    const cols: string[] = [];
    const args: unknown[] = [];
    for (const [k, col] of RESPONSE_COLUMNS) {
      if (info[k] !== undefined) {
        cols.push(`${col} = ?`);
        args.push(info[k]);
      }
    }
    if (!cols.length) return this.holdsClaim(f);
    return this.grouped(() => {
      const applied = this.prepare(`UPDATE tasks SET ${cols.join(', ')} WHERE id = ? AND claim = ?`).run(...args, f.id, f.claim).changes === 1;
      if (applied && info.output !== undefined) this.outputChanged(f.id);
      return applied;
    });
  }

  /**
   * Outputs claimed by other unfinished tasks (so two tasks never derive the same name). The worker
   * asks for every derived name, and the query scans the queue: the answer is kept in memory, brought
   * up to date by this connection's own writes and read afresh when another process has committed.
   */
  async outputsInUse(dir: string, exceptId: number): Promise<OutputsInUse> {
    const version = this.dataVersion();
    if (!this.outputs || this.outputs.version !== version) {
      const rows = this.prepare("SELECT id, dir, output FROM tasks WHERE output IS NOT NULL AND state IN ('queued','running','paused')").all() as Row[];
      const index = new OutputIndex();
      for (const r of rows) index.set(r.id, r.dir, r.output);
      this.outputs = { version, index };
    }
    const index = this.outputs.index;
    return { has: (output) => index.heldByOther(output, dir, exceptId) };
  }

  /** Keep the remembered outputs in step with a write of ours to task `id` (see outputsInUse). */
  private outputChanged(id: number): void {
    if (!this.outputs) return;
    const r = this.prepare('SELECT dir, output, state FROM tasks WHERE id = ?').get(id) as Row | undefined;
    if (r && r.output != null && (r.state === 'queued' || r.state === 'running' || r.state === 'paused')) {
      this.outputs.index.set(id, r.dir, r.output);
    } else {
      this.outputs.index.delete(id);
    }
  }

  /**
   * Put a running task back in the queue: after a transient failure (with the time of the next
   * attempt), or because conditions, disk space or a pause stopped it. Only if it is still running.
   */
  async requeue(f: TaskFence, info: RequeueInfo): Promise<boolean> {
    // The epoch moves when the queue does, as this write runs with its group: moved when it was asked
    // for, a look at the queue before the commit (the worker reading its next wake-up time) was kept
    // under the new epoch without the task's retry time in it.
    return this.grouped(() => {
      this.queueEpoch++;
      return this.prepare(`UPDATE tasks SET state = 'queued', not_before = @notBefore, wait_reason = @reason, wait_detail = @detail,
                  error_code = CASE WHEN @setError THEN @code ELSE error_code END,
                  error_message = CASE WHEN @setError THEN @message ELSE error_message END,
                  resume_offset = coalesce(@resumeOffset, resume_offset),
                  bytes_received = coalesce(@bytesReceived, bytes_received), speed = NULL
                WHERE id = @id AND claim = @claim AND state = 'running'`)
      .run({
        notBefore: info.notBefore, reason: info.reason, detail: info.detail ?? null,
        setError: info.error !== undefined ? 1 : 0, code: info.error?.code ?? null, message: info.error?.message ?? null,
        resumeOffset: info.resumeOffset ?? null, bytesReceived: info.bytesReceived ?? null, id: f.id, claim: f.claim,
      }).changes === 1;
    });
  }

  /** Record where a paused task's partial file stands; false when the claim has moved on. */
  async recordStopped(f: TaskFence, info: { resumeOffset: number; bytesReceived: number }): Promise<boolean> {
    return this.grouped(() => this.prepare("UPDATE tasks SET resume_offset = ?, bytes_received = ?, speed = NULL WHERE id = ? AND claim = ? AND state IN ('paused', 'queued')")
      .run(info.resumeOffset, info.bytesReceived, f.id, f.claim).changes === 1);
  }

  /** An attempt moves its running task to a final state together with its event; false when fenced out or no longer running. */
  async finishTask(f: TaskFence, info: FinishInfo, now = Date.now()): Promise<boolean> {
    return this.grouped(() => this.finish(f.id, info, now, ['running'], (t) => t.claim === f.claim));
  }

  /** The worker fails a queued or paused task that ran out of time (resourceTimeout); false when fenced out. */
  async expireTask(id: number, lease: LeaseFence, info: FinishInfo, now = Date.now()): Promise<boolean> {
    this.queueEpoch++;
    return this.finish(id, info, now, ['queued', 'paused'], () => this.leaseHeld(lease));
  }

  private finish(id: number, info: FinishInfo, now: number, fromStates: TaskState[], allowed: (t: Task) => boolean): boolean {
    // In a group commit it is part of that transaction (rerun alone if the group fails: commitPending);
    // a savepoint of its own there was two more statements a file.
    const atomic = (fn: () => boolean) => (this.db.inTransaction ? fn() : (this.inTx.immediate(fn) as boolean));
    return atomic(() => {
      const t = this.taskById(id);
      if (!t || !fromStates.includes(t.state) || !allowed(t)) return false;
      const done = finishedTask(t, info, now);
      this
        .prepare(`UPDATE tasks SET state = @state, error_code = @code, error_message = @message, http_status = @httpStatus,
                  final_url = @finalUrl, output = @output, sha256 = @sha256, bytes_received = @bytesReceived,
                  bytes_sent = @bytesSent, response_body = @responseBody, finished_at = @finishedAt, speed = NULL,
                  outcome = @outcome, etag = @etag, last_modified = @lastModified,
                  wait_reason = NULL, wait_detail = NULL, not_before = NULL,
                  resume_offset = CASE WHEN @state = 'completed' THEN 0 ELSE resume_offset END,
                  part_path = CASE WHEN @state = 'completed' THEN NULL ELSE part_path END,
                  part_id = CASE WHEN @state = 'completed' THEN NULL ELSE part_id END,
                  segments = CASE WHEN @state = 'completed' THEN NULL ELSE segments END WHERE id = @id`)
        .run({
          id, state: done.state, code: done.error?.code ?? null, message: done.error?.message ?? null,
          httpStatus: done.httpStatus, finalUrl: done.finalUrl, output: done.output, sha256: done.sha256,
          bytesReceived: done.bytesReceived, bytesSent: done.bytesSent, responseBody: done.responseBody, finishedAt: now,
          outcome: done.outcome, etag: done.etag, lastModified: done.lastModified,
        });
      this.insertEvent(done, info.state, now);
      this.outputs?.index.delete(id);
      return true;
    });
  }

  /** Unfinished, not running tasks added longer than `timeoutMs` ago (resourceTimeout). */
  async expiredTasks(now: number, timeoutMs: number): Promise<Task[]> {
    return readTasks(this.prepare("SELECT * FROM tasks WHERE state IN ('queued','paused','running') AND timeout_from + ? <= ?"), [timeoutMs, now]);
  }

  // ---- events and hooks ----------------------------------------------------------------------

  async listEvents(filter: EventQuery = {}): Promise<BgdlEvent[]> {
    const where: string[] = ['id > ?'];
    const args: unknown[] = [filter.afterId ?? 0];
    if (filter.session) {
      where.push('session = ?');
      args.push(filter.session);
    }
    if (filter.undeliveredOnly) where.push('delivered_at IS NULL');
    const rows = this.prepare(`SELECT * FROM events WHERE ${where.join(' AND ')} ORDER BY id LIMIT ?`).all(...args, filter.limit ?? -1) as Row[];
    return rows.map(rowToEvent);
  }

  /** Mark events delivered (hook exit 0 or `events --ack`). Returns how many changed. */
  async ackEvents(ids: number[], now = Date.now()): Promise<number> {
    const stmt = this.prepare('UPDATE events SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL');
    return this.db.transaction(() => ids.reduce((n, id) => n + stmt.run(now, id).changes, 0)).immediate();
  }

  async lastEventId(): Promise<number> {
    return ((this.prepare('SELECT max(id) AS id FROM events').get() as Row).id as number | null) ?? 0;
  }

  /** Sessions with a hook, launch events on and undelivered events, with what each holds. */
  async sessionsAwaitingHook(now = Date.now()): Promise<{ session: Session; active: number; runnable: number }[]> {
    const rows = this
      .prepare(`SELECT s.* FROM sessions s WHERE s.hook IS NOT NULL AND s.launch_events = 1
                AND EXISTS (SELECT 1 FROM events e WHERE e.session = s.name AND e.delivered_at IS NULL)`)
      .all() as Row[];
    return rows.map((r) => {
      const c = this
        .prepare(`SELECT sum(state = 'running') AS running,
                    sum(state = 'queued' AND (begin_at IS NULL OR begin_at <= @now) AND (not_before IS NULL OR not_before <= @now)
                        AND coalesce(wait_reason, '') NOT IN ('conditions', 'disk-space')) AS runnable
                  FROM tasks WHERE session = @s AND state IN ('running','queued')`)
        .get({ s: r.name, now }) as Row;
      return { session: rowToSession(r), active: c.running ?? 0, runnable: c.runnable ?? 0 };
    });
  }

  /** A hook run starts: count it for the relaunch rate limiter. False: the lease is no longer ours, do not run it. */
  async recordHookStart(name: string, now: number, rateLimit: RateLimitConfig, lease?: LeaseFence, eventIds: number[] = []): Promise<HookStart> {
    const delivered = this.prepare('SELECT delivered_at FROM events WHERE id = ?').pluck();
    return this.db.transaction((): HookStart => {
      if (lease && !this.leaseHeld(lease)) return 'lease-lost';
      if (eventIds.some((id) => delivered.get(id) != null)) return 'busy';
      const s = this.sessionRow(name);
      if (!s) return 'run'; // removed meanwhile: nothing to count
      const step = hookRunStep({ rateLimitCount: s.rl_count, rateLimitLastRunAt: s.rl_last_run_at }, now, rateLimit);
      this.prepare('UPDATE sessions SET hook_runs = hook_runs + 1, hook_last_run_at = ?, rl_count = ?, rl_last_run_at = ? WHERE name = ?').run(now, step.rateLimitCount, step.rateLimitLastRunAt, name);
      return 'run';
    }).immediate();
  }

  /**
   * A hook run ended: on success its events are delivered; on failure the next attempt is scheduled.
   * False (nothing recorded) when the lease is no longer ours: the next worker runs the hook again.
   */
  async recordHookResult(name: string, eventIds: number[], result: HookResult, now = Date.now(), lease?: LeaseFence): Promise<boolean> {
    return this.db.transaction(() => {
      if (lease && !this.leaseHeld(lease)) return false;
      if (result.ok) {
        const stmt = this.prepare('UPDATE events SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL');
        for (const id of eventIds) stmt.run(now, id);
        this.prepare('UPDATE sessions SET hook_failures = 0, hook_next_at = NULL, hook_last_error = NULL WHERE name = ?').run(name);
      } else {
        this.prepare('UPDATE sessions SET hook_failures = hook_failures + 1, hook_next_at = ?, hook_last_error = ? WHERE name = ?').run(result.nextAt, result.error, name);
      }
      return true;
    }).immediate();
  }
}

// A full disk, a damaged file or an I/O error in any operation is a StoreError naming the file (exit 4).
guardMethods(SqliteStore.prototype, (store) => store.file);
