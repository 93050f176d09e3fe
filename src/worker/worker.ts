// The worker: the shell's transfer daemon. One per BGDL_HOME (a lease in the store), it starts
// transfers as slots and conditions allow, watches for pause and cancel, records progress a few times
// a second, runs session hooks when sessions go idle, and exits a few seconds after it has nothing to do.

import os from 'node:os';
import { fairShares, formatRate, scheduledRate, tightest, type Rate } from '../shared/bandwidth.js';
import { v8Module } from '../shared/builtins.js';
import { loadConfig, type Config } from '../shared/config.js';
import { StoreError } from '../shared/errors.js';
import { removePartFile } from '../shared/files.js';
import { heartbeatInterval, pidAlive } from '../shared/lease.js';
import { Logger } from '../shared/log.js';
import { isFinal, type Task } from '../shared/model.js';
import { formatDuration } from '../shared/parse.js';
import { redactUrl } from '../shared/redact.js';
import { openStore, type Candidate, type LeaseFence, type TaskStore } from '../store/index.js';
import { closeDispatchers, pipelineCapacity, TokenBucket } from '../transfer/index.js';
import { resourceTimeoutError, runAttempt, splits, type Active, type StopReason } from './attempt.js';
import { evaluateConditions, nearlyDone, readMachine, type Verdict } from './conditions.js';
import { hookDue, hookRetryDelay, planHook, runHook } from './hooks.js';
import { orderCandidates, originOf, schedule, transfersCounted, type Decision, type SlotState } from './scheduler.js';

export interface WorkerOptions {
  home: string;
  env?: NodeJS.ProcessEnv;
  /** Aborting stops the worker gracefully (SIGTERM/SIGINT): transfers stop, offsets are kept. */
  signal?: AbortSignal;
  /** How long to stay alive with nothing to do (default 3 s; BGDL_WORKER_LINGER overrides). */
  lingerMs?: number;
}

/**
 * Runnable tasks as read for scheduling, best first: the first `limit` of the queue, or all of it
 * (`whole`), less the `taken` ones this worker claimed from it since.
 */
interface QueueView {
  key: string;
  limit: number;
  whole: boolean;
  rows: Candidate[];
  /** Whether `rows` holds a discretionary task as read. */
  discretionary: boolean;
  /** The origins of `rows` as read (those taken since included): see schedule's `origins`. */
  origins: Set<string>;
  taken: number;
}

export type WorkerExit = 'done' | 'another-worker' | 'lease-lost' | 'stopped';

/** A changed config (maxRate, rateSchedule, …) acts within this long. */
const CONFIG_RELOAD_MS = 1_000;
/** Bandwidth shares are worked out again this often (and whenever a transfer starts). */
const RATES_MS = 1_000;
const FLUSH_MS = 500;
const CONTROL_MS = 250;
const CONDITIONS_MS = 5_000;
const MAX_SLEEP_MS = 1_000;
/** The reason a nap is cut short (see sleep). */
const WOKEN = 'woken';
/** Candidates read for a usual scheduling pass, and for one that needs the wider view (see schedule). */
const HEAD_WINDOW = 64;
const FULL_WINDOW = 1000;

/**
 * How long the loop may sleep: a moment while transfers or hooks run (to watch for pause and cancel),
 * else up to a second; never past the next begin-at/retry time, nor past the next heartbeat (a short
 * leaseTimeout must not lapse while the worker idles).
 */
export function napLength(o: { now: number; busy: boolean; nextWake: number | null; heartbeatDue: number }): number {
  let ms = o.busy ? CONTROL_MS : MAX_SLEEP_MS;
  if (o.nextWake != null) ms = Math.min(ms, Math.max(0, o.nextWake - o.now));
  return Math.min(ms, Math.max(0, o.heartbeatDue - o.now));
}

/**
 * V8 settings for the worker, set from inside it (so a worker started by hand or by systemd has them
 * too); V8 reads each whenever it applies, so setting them after start-up takes effect:
 * - The young generation stays at its initial size (1 MiB per semi-space) instead of growing to
 *   16 MiB: a batch of small files allocates fast and briefly (a request, a response, a few chunks
 *   each), so V8 grew it to ~30 MiB of the worker's peak RSS (2,000 x 16 KiB: 110-113 -> 91-97 MiB,
 *   no measurable change in CPU). (The size limits themselves cannot change once the heap exists.)
 * - A function runs ~3x longer (V8's interrupt budget, 132 KiB of bytecode by default) before V8
 *   decides whether to optimize it. A batch of small files runs a lot of code briefly: V8's
 *   optimizing compiler, on its own threads, took ~20% of the worker's CPU, compiling ~350 functions
 *   of which many ran only a little longer. 2,000 x 16 KiB, worker started by hand, interleaved runs:
 *   at 16 connections 1.39-1.44 s of CPU and 1.41-1.49 s against 1.65-1.73 s and 1.50-1.56 s; at 6,
 *   1.68-1.81 s and 1.80-1.86 s against 1.94-2.11 s and 1.85-2.03 s. 1 GiB over http:// the same
 *   (1.15-1.22 s of CPU); over https:// (undici) ~3% more CPU. Budgets of 2x to 15x measured alike.
 * Set only once the worker's modules are loaded: with any V8 flag changed, V8 refuses the code
 * Node.js cached for its built-in modules at build time, and compiles from source each one loaded
 * afterwards (node:tls, node:http2 and node:zlib, as a first https:// download loads them: 22-29 ms
 * instead of 8-11 ms, once per worker). See src/cli/worker-start.ts.
 */
const V8_FLAGS = ['--semi-space-growth-factor=1', '--interrupt-budget=400000'];

function tuneV8(): void {
  for (const flag of V8_FLAGS) v8Module().setFlagsFromString(flag);
}

export async function runWorker(opts: WorkerOptions): Promise<WorkerExit> {
  tuneV8();
  const env = opts.env ?? process.env;
  const log = new Logger(opts.home);
  const store = await openStore(opts.home, env);
  const fence = await store.takeLease(process.pid, Date.now(), loadConfig(env).leaseTimeout, pidAlive);
  if (!fence) {
    const lease = await store.readLease();
    log.write('worker', `not starting: worker pid ${lease?.pid} holds the lease`);
    await store.close();
    return 'another-worker';
  }
  const w = new Worker(store, log, env, opts, fence);
  try {
    return await w.run();
  } finally {
    await store.releaseLease(fence).catch(() => {});
    await closeDispatchers().catch(() => {});
    await store.close().catch(() => {});
    log.close();
  }
}

class Worker {
  private readonly active = new Map<number, Active>();
  private readonly attempts = new Set<Promise<void>>();
  private readonly hooksRunning = new Set<string>();
  private readonly reserved = new Set<string>();
  private config: Config;
  private conditions: Verdict = { ok: true, reason: null };
  private wakeUp: (() => void) | null = null;
  /** Other processes' commits as last seen (ChangeToken.others). */
  private lastSeen = -1;
  private timers = { heartbeat: 0, config: 0, flush: 0, conditions: 0, control: 0, expire: 0, rates: 0 };
  /** The global cap last applied, to log when it changes. */
  private globalRate: Rate = null;
  /**
   * Sessions' bandwidth limits as last read, and the others' commits (ChangeToken.others) they were
   * read at: read again only when another process committed (session set --limit-rate acts within
   * RATES_MS) or a task of a session not yet known runs. Reading them for every started transfer
   * was ~35 µs a file on the main thread.
   */
  private sessionRates: { others: number; bySession: Map<string, number | null> } | null = null;
  private ratesStale = true;
  private idleSince: number | null = null;
  private needSchedule = true;
  /** The earliest begin-at / retry time seen when going to sleep: reaching it means schedule again. */
  private nextWake: number | null = null;
  /** The store state `nextWake` was read in (queueKey): it holds until either part moves. */
  private nextWakeKey = '';
  /** The head of the queue as last read for scheduling (see schedule). */
  private queueView: QueueView | null = null;
  /** What `queueFacts` last found, and in which store state (queueKey). */
  private facts: { key: string; held: boolean; discretionary: boolean } | null = null;
  private readonly lingerMs: number;
  /** The store failed under an attempt or a hook (full disk, damaged file): the loop stops the worker. */
  private storeFailed: StoreError | null = null;
  /** Set once the lease turned out to be another worker's: from then on nothing is written. */
  private lost = false;

  constructor(
    private readonly store: TaskStore,
    private readonly log: Logger,
    private readonly env: NodeJS.ProcessEnv,
    private readonly opts: WorkerOptions,
    /** This worker's hold on the lease: every worker-level write carries it. */
    private readonly lease: LeaseFence,
  ) {
    this.config = loadConfig(env);
    this.lingerMs = opts.lingerMs ?? (env.BGDL_WORKER_LINGER ? Number(env.BGDL_WORKER_LINGER) : 3000);
  }

  async run(): Promise<WorkerExit> {
    const { store, log } = this;
    log.write('worker', `started (pid ${process.pid}, ${os.hostname()})`);
    const orphans = await store.requeueOrphans(this.lease);
    if (!orphans) {
      log.write('worker', 'lost the lease to another worker before starting; exiting');
      return 'lease-lost';
    }
    for (const t of orphans) log.write(t.session, `task ${t.id}: left running by a worker that stopped; re-queued to resume from its partial file`);
    await this.removeCanceledParts();
    const stop = () => this.wake();
    this.opts.signal?.addEventListener('abort', stop);
    try {
      while (!this.opts.signal?.aborted) {
        if (this.storeFailed) throw this.storeFailed;
        const now = Date.now();
        if (this.lost || now - this.timers.heartbeat >= heartbeatInterval(this.config.leaseTimeout)) {
          this.timers.heartbeat = now;
          if (this.lost || !(await store.heartbeat(this.lease, now))) {
            // Frozen (SIGSTOP, a suspended machine) past leaseTimeout: another worker owns everything now.
            log.write('worker', 'lost the lease to another worker; stopping every transfer without recording anything');
            this.lost = true;
            await this.stopAll('lease-lost');
            return 'lease-lost';
          }
        }
        if (now - this.timers.config >= CONFIG_RELOAD_MS) {
          this.timers.config = now;
          this.config = loadConfig(this.env);
        }
        const changed = this.storeChanged();
        if (changed || now - this.timers.control >= CONTROL_MS) {
          this.timers.control = now;
          await this.watchControl();
        }
        if (now - this.timers.conditions >= CONDITIONS_MS) {
          this.timers.conditions = now;
          this.conditions = evaluateConditions(readMachine(this.env, new Date(now)), { maxLoad: this.config.discretionaryMaxLoad, window: this.config.discretionaryWindow });
          this.needSchedule = true;
          await this.stopDiscretionaryIfNeeded();
        }
        if (now - this.timers.expire >= CONDITIONS_MS) {
          this.timers.expire = now;
          await this.expire(now);
        }
        if (changed || (this.nextWake != null && now >= this.nextWake)) this.needSchedule = true;
        if (this.needSchedule) await this.schedule(now);
        if (this.ratesStale || now - this.timers.rates >= RATES_MS) {
          this.timers.rates = now;
          await this.applyRates(now);
        }
        if (now - this.timers.flush >= FLUSH_MS) {
          this.timers.flush = now;
          await this.flushProgress(now);
        }
        await this.runDueHooks(now);
        if (await this.finished(now)) return 'done';
        await this.sleep(now);
      }
      await this.stopAll('shutdown');
      return 'stopped';
    } catch (err) {
      if (err instanceof StoreError) await this.stopForStore(err);
      throw err;
    } finally {
      this.opts.signal?.removeEventListener('abort', stop);
      log.write('worker', 'exiting');
    }
  }

  /**
   * The store cannot be written or read (a full disk under BGDL_HOME, a damaged file): stop every
   * transfer (each keeps its partial file and records its offset if the store still takes it) and
   * let the worker exit, rather than run transfers nobody can record. The next command that finds
   * work starts a worker again, which resumes the tasks from their partial files.
   */
  private async stopForStore(err: StoreError): Promise<void> {
    this.log.write('worker', `store failure: ${err.message}; stopping ${this.active.size} transfer(s) and exiting`);
    this.storeFailed ??= err;
    await this.stopAll('shutdown').catch(() => {});
  }

  /** A store failure seen outside the loop (an attempt, a hook): the loop acts on it at once. */
  private noteStoreFailure(err: unknown): boolean {
    if (!(err instanceof StoreError)) return false;
    this.storeFailed ??= err;
    this.wake();
    return true;
  }

  /** Partial files of canceled tasks that nobody removed (their worker lost its lease): the lineage's files, so ours to remove. */
  private async removeCanceledParts(): Promise<void> {
    const left = await this.store.canceledParts();
    if (left.length === 0) return;
    for (const t of left) {
      if (removePartFile({ path: t.partPath, id: t.partId })) this.log.write(t.session, `task ${t.id}: canceled; removed its partial file ${t.partPath}`);
    }
    await this.store.forgetParts(left.map((t) => t.id), this.lease);
  }

  /** True when another process committed to the store since the last look (cheap: no I/O). */
  private storeChanged(): boolean {
    const v = this.store.changes().others;
    const changed = v !== this.lastSeen;
    this.lastSeen = v;
    return changed;
  }

  /** The state of the queue as this loop turn saw it: others' commits as last seen, and our own queue writes. */
  private queueKey(): string {
    return `${this.lastSeen}:${this.store.changes().mine}`;
  }

  private wake(): void {
    this.wakeUp?.();
  }

  private async sleep(now: number): Promise<void> {
    // A transfer that ended while this turn ran (between its awaits) asked for a pass when nobody
    // slept: its wake-up went nowhere, and the nap below would leave its slot empty for up to
    // CONTROL_MS. Go round again at once instead.
    if (this.needSchedule || this.storeFailed) return;
    // Reading the next begin-at/retry time scans the queue: do it only when the queue may have
    // changed (another process committed, or this one requeued or held a task) or the time came.
    const key = this.queueKey();
    if (key !== this.nextWakeKey || (this.nextWake != null && now >= this.nextWake)) {
      this.nextWake = await this.store.nextWakeAt(now);
      this.nextWakeKey = key;
    }
    const ms = napLength({
      now,
      busy: this.active.size > 0 || this.hooksRunning.size > 0,
      nextWake: this.nextWake,
      heartbeatDue: this.timers.heartbeat + heartbeatInterval(this.config.leaseTimeout),
    });
    // Between full ticks, the store's change signal wakes the loop so a pause or an add acts at once.
    const nap = new AbortController();
    // With a reason given, abort() does not build a DOMException (and its stack) for every wake-up:
    // one per finished transfer, 60 ms of the main thread over 2,000 small files.
    this.wakeUp = () => nap.abort(WOKEN);
    if (this.opts.signal?.aborted) nap.abort();
    try {
      await this.store.waitForChange({ others: this.lastSeen, mine: 0 }, ms, nap.signal);
    } catch (err) {
      if (!this.noteStoreFailure(err)) throw err;
    } finally {
      this.wakeUp = null;
    }
  }

  /** Pause and cancel act on running transfers: the CLI changes the state, the worker stops the attempt. */
  private async watchControl(): Promise<void> {
    if (this.active.size === 0) return;
    const states = await this.store.statesOf([...this.active.keys()]);
    for (const [id, a] of this.active) {
      const s = states.get(id);
      if (a.stopReason) continue;
      // Canceled: the attempt removes its partial file. Claimed again (by another worker of a shared
      // store, after this one was silent past leaseTimeout): it touches nothing more.
      if (s?.state === 'canceled') this.stop(a, 'cancel');
      else if (s && s.claim !== a.fence.claim) this.stop(a, 'fenced');
      else if (s?.state === 'running') continue;
      else this.stop(a, s && isFinal(s.state) ? 'cancel' : 'pause');
    }
  }

  private stop(a: Active, reason: StopReason): void {
    if (a.stopReason) return;
    a.stopReason = reason;
    a.abort.abort();
  }

  private async stopAll(reason: StopReason): Promise<void> {
    for (const a of this.active.values()) this.stop(a, reason);
    await Promise.allSettled([...this.attempts]);
    await this.flushProgress(Date.now());
  }

  /** A worker-level write was refused: the lease is another worker's. The loop stops at its next turn. */
  private leaseLost(): void {
    this.lost = true;
    for (const a of this.active.values()) this.stop(a, 'lease-lost');
    this.wake();
  }

  private async stopDiscretionaryIfNeeded(): Promise<void> {
    if (this.conditions.ok) return;
    for (const a of this.active.values()) {
      if (a.task.discretionary && !a.stopReason && !nearlyDone(a.bytes, a.total)) {
        this.log.write(a.task.session, `task ${a.task.id}: ${this.conditions.reason}; pausing this discretionary transfer`);
        this.stop(a, 'conditions');
      }
    }
  }

  private async expire(now: number): Promise<void> {
    for (const t of await this.store.expiredTasks(now, this.config.resourceTimeout)) {
      const a = this.active.get(t.id);
      if (a) {
        this.stop(a, 'timeout');
      } else if (await this.store.expireTask(t.id, this.lease, { state: 'failed', error: resourceTimeoutError(this.config.resourceTimeout) }, now)) {
        this.log.write(t.session, `task ${t.id}: failed: not finished within resourceTimeout (${formatDuration(this.config.resourceTimeout)})`);
      }
    }
  }

  private async schedule(now: number): Promise<void> {
    this.needSchedule = false;
    const d = await this.decide(now);
    if (!d) return;
    if ((d.hold.length || d.release.length) && !(await this.store.setHeld(d.hold, d.release, this.lease))) return this.leaseLost();
    await Promise.all([...this.begin(d.start, now, false), ...this.begin(d.behind, now, true)]);
  }

  /**
   * Running transfers as maxConcurrent counts them, connections per origin as perHost does, and how
   * many requests may wait behind others (pipelining, config `pipelining`): on the local store (one
   * worker, which alone counts its connections) and without --split, as many as h1.ts says its busy
   * connections to the origin can take (`pipelineCapacity`), less those already started that way,
   * for plain GET and HEAD downloads. The main thread paces a batch of small files, and costs less
   * per file the more requests are in flight (a write to a busy server wakes nobody; more files share
   * each commit): 2,000 x 16 KiB at the defaults, worker by hand, main thread 1.21-1.28 s against
   * 1.45-1.51 s.
   */
  private slots(): SlotState {
    const byOrigin = new Map<string, number>();
    const behindBy = new Map<string, number>();
    // perHost counts connections: a split download's extra ones too; a file being placed holds none,
    // nor does a request waiting behind another.
    for (const a of this.active.values()) {
      if (a.placing) continue;
      if (a.behind) behindBy.set(a.origin, (behindBy.get(a.origin) ?? 0) + 1);
      else byOrigin.set(a.origin, (byOrigin.get(a.origin) ?? 0) + 1 + a.extra);
    }
    const cfg = this.config;
    const slots: SlotState = { running: this.transfers(), runningByOrigin: byOrigin, maxConcurrent: cfg.maxConcurrent, perHost: cfg.perHost };
    if (this.store.shared || cfg.split !== 1 || !cfg.pipelining) return slots;
    const room = new Map<string, number>();
    for (const origin of byOrigin.keys()) {
      const r = pipelineCapacity(origin) - (behindBy.get(origin) ?? 0);
      if (r > 0) room.set(origin, r);
    }
    if (room.size) slots.behind = { room, fits: (t) => t.kind === 'download' && (t.method === 'GET' || t.method === 'HEAD') && !splits(t, t.split ?? cfg.split) };
    return slots;
  }

  /**
   * Whether a decision made on `view` alone (schedule's early stop) is the one the whole queue would
   * give: the view is the whole queue, or the decision fills every free slot, or it is the full window
   * with fewer than HEAD_WINDOW of its tasks claimed since it was read.
   */
  private decides(v: QueueView, d: Decision, slots: SlotState): boolean {
    return v.whole || slots.running + d.start.length >= slots.maxConcurrent || (v.limit === FULL_WINDOW && v.taken < HEAD_WINDOW);
  }

  /**
   * Tasks taken from the view as last read are no longer in it. They are nearly always at its head,
   * so each is looked for from there (a filter of the whole window, up to FULL_WINDOW rows, for every
   * decision was ~4% of what the worker allocated over 2,000 small files at the defaults).
   */
  private taken(d: Decision): void {
    const n = d.start.length + d.behind.length;
    if (!this.queueView || n === 0) return;
    const rows = this.queueView.rows;
    for (const list of [d.start, d.behind]) {
      for (const t of list) {
        const i = rows.findIndex((r) => r.id === t.id);
        if (i >= 0) rows.splice(i, 1);
      }
    }
    this.queueView.taken += n;
  }

  private async decide(now: number): Promise<Decision | null> {
    const cfg = this.config;
    const slots = this.slots();
    if (slots.running >= cfg.maxConcurrent && this.conditions.ok) return null;
    const key = this.queueKey();
    const read = async (limit: number): Promise<QueueView> => {
      const rows = await this.store.runnableCandidates(now, limit);
      // In the order they would start, less those running here (a claim still committing).
      const fresh = orderCandidates(rows).filter((t) => !this.active.has(t.id));
      return { key, limit, whole: rows.length < limit, rows: fresh, discretionary: fresh.some((t) => t.discretionary), origins: new Set(rows.map((t) => originOf(t.url))), taken: 0 };
    };
    // Most passes follow one finished transfer, so look only at the head of the queue. Its decision is
    // the one the full window would make when no task is held by conditions, conditions allow
    // everything or no task is discretionary, the head holds no discretionary task (those are ordered
    // apart) and it fills every free slot (or is the whole queue). The full window itself decides
    // (what it leaves out waits for a later pass), which is the case whenever perHost, not
    // maxConcurrent, is what limits: one host's batch at the defaults. A view as last read stays
    // exact, less the tasks we claimed from it, until another process commits, we requeue or hold a
    // task (the queue epoch), or a begin-at/retry time comes; the full window is also read again
    // once HEAD_WINDOW of its tasks have been claimed, so what lay beyond it comes into view. Without
    // this a perHost-bound batch read the full window twice per started transfer (the profile of
    // 2,000 files at the defaults: 2.2 s of 8 s in decoding those rows).
    let d: Decision | null = null;
    const facts = await this.queueFacts();
    if (!facts.held && (this.conditions.ok || !facts.discretionary)) {
      let view = this.queueView;
      const stale = !view || view.key !== key || (this.nextWake != null && now >= this.nextWake);
      // The remembered view, then a fresh head, then the full window: whichever first decides.
      const limits = stale ? [HEAD_WINDOW, FULL_WINDOW] : view!.limit === FULL_WINDOW ? [0, FULL_WINDOW] : [0, HEAD_WINDOW, FULL_WINDOW];
      for (const limit of limits) {
        if (limit) view = await read(limit);
        if (view!.discretionary) break;
        // Nothing is held and conditions allow every candidate here: the pass may stop early.
        const hd = schedule(view!.rows, slots, this.conditions, { origins: view!.origins, ordered: true });
        if (this.decides(view!, hd, slots)) {
          d = hd;
          break;
        }
      }
      this.queueView = d ? view : null;
    } else {
      this.queueView = null;
    }
    if (!d) {
      const candidates = (await read(FULL_WINDOW)).rows;
      if (candidates.length === 0) return null;
      d = schedule(candidates, slots, this.conditions);
    }
    this.taken(d);
    return d;
  }

  /**
   * Claim these tasks and start their transfers; the promises settle once the claims are known. The
   * claims are asked for together (a store may commit them as one), then started in order. Where the
   * store can tell what a claim will give (one worker: SQLite), each transfer starts at once and sends
   * its request while the claims commit (they wait for the end of this event-loop turn): 2,000 x 16 KiB
   * at the defaults, a connection sat idle ~1.1 ms per file for its next claim.
   */
  private begin(tasks: Candidate[], now: number, behind: boolean): Promise<void>[] {
    const cfg = this.config;
    return tasks.map((t) => {
      const claim = this.store.markRunning(t.id, now, this.lease, { perHost: cfg.perHost });
      const task = this.store.previewClaim?.(t.id, now) ?? null;
      if (task) this.start(task, claim, behind);
      return claim.then((c) => {
        if (c && !task && !this.lost) this.start(c, null, behind);
      });
    });
  }

  /**
   * Running tasks as maxConcurrent counts them. A task whose body is all in (`placing`: verifying,
   * fsync, rename, directory fsync) moves no bytes and holds no connection, so up to
   * PLACING_PER_SLOT × maxConcurrent of them leave their slot to the next transfer: for a batch of
   * small files those steps, mostly waiting on the disk, were two thirds of each file's time in its
   * slot (10.5 ms of which 6.8 ms after the last byte, at the defaults). Beyond that, each counts
   * again, so a slow disk cannot pile up unfinished files.
   */
  private transfers(): number {
    return transfersCounted(this.active.values(), this.config.maxConcurrent);
  }

  /** Held and discretionary tasks in the queue, asked again only when the queue may have changed. */
  private async queueFacts(): Promise<{ held: boolean; discretionary: boolean }> {
    const key = this.queueKey();
    if (!this.facts || this.facts.key !== key) this.facts = { key, ...(await this.store.queueFacts()) };
    return this.facts;
  }

  /** Start an attempt of a claimed task, or of one whose claim is still committing (`claim`: see schedule). */
  private start(task: Task, claim: Promise<Task | null> | null = null, behind = false): void {
    const a: Active = {
      task,
      fence: { id: task.id, claim: task.claim },
      claim,
      part: null,
      origin: originOf(task.url),
      abort: new AbortController(),
      stopReason: null,
      bytes: task.kind === 'upload' ? 0 : task.resumeOffset,
      total: task.bytesExpected,
      durable: task.resumeOffset,
      sample: { bytes: task.resumeOffset, at: Date.now(), speed: null },
      dirty: false,
      // Until applyRates runs (before the first byte can arrive), the task's own limit holds.
      bucket: new TokenBucket(task.limitRate, Date.now()),
      segments: null,
      extra: 0,
      placing: false,
      behind,
    };
    this.ratesStale = true;
    this.active.set(task.id, a);
    this.log.write(task.session, `task ${task.id}: attempt ${task.attempts} ${task.method} ${redactUrl(task.url)}`);
    const p = runAttempt({ store: this.store, log: this.log, config: () => this.config, reserved: this.reserved, connections: this.connections, received: this.received }, a)
      .catch(async (err) => {
        if (this.noteStoreFailure(err)) return; // the worker stops; the next one re-queues the task
        // A bug must not leave the task marked running with nobody running it.
        this.log.write(task.session, `task ${task.id}: internal error: ${(err as Error).stack ?? err}`);
        if (this.lost) return;
        await this.store
          .requeue(a.fence, { notBefore: Date.now() + this.config.retryBaseDelay, reason: 'retry', error: { code: 'E_INTERNAL', message: String((err as Error).message ?? err) } })
          .catch(() => {});
      })
      .finally(() => {
        this.active.delete(task.id);
        this.attempts.delete(p);
        this.needSchedule = true;
        this.wake();
      });
    this.attempts.add(p);
  }

  /**
   * Extra connections of split downloads: granted while the origin's connections (one a running
   * transfer, plus the extra ones each holds) stay below perHost, this worker's and, on a shared store,
   * every worker's (the store counts them: takeExtraConnection); a released one may let a queued
   * transfer to that origin start.
   */
  private readonly connections = {
    acquire: async (a: Active): Promise<boolean> => {
      let used = 0;
      for (const b of this.active.values()) if (b.origin === a.origin && !b.placing) used += 1 + b.extra;
      if (used >= this.config.perHost) return false;
      a.extra++; // held while the store is asked, so that two downloads here cannot both take the last one
      try {
        if (await this.store.takeExtraConnection(a.fence, this.config.perHost)) return true;
      } catch (err) {
        if (!this.noteStoreFailure(err)) throw err;
      }
      a.extra--;
      return false;
    },
    release: (a: Active): void => {
      if (a.extra > 0) a.extra--;
      this.store.giveBackExtraConnection(a.fence).catch((err) => this.noteStoreFailure(err));
      this.needSchedule = true;
      this.wake();
    },
  };

  /** An attempt's body is all in: its slot is free for the next transfer (see transfers). */
  private readonly received = (a: Active): void => {
    a.placing = true;
    this.needSchedule = true;
    this.wake();
  };

  /**
   * Bandwidth: each running transfer gets the tightest of its own limit, its session's and its fair
   * share of the global cap (maxRate and the rateSchedule's rate now, the tighter), see bandwidth.ts.
   */
  private async applyRates(now: number): Promise<void> {
    this.ratesStale = false;
    const global = tightest(this.config.maxRate, scheduledRate(this.config.rateSchedule, new Date(now)));
    if (global !== this.globalRate) {
      this.log.write('worker', `bandwidth: all transfers together now ${formatRate(global)}`);
      this.globalRate = global;
    }
    const active = [...this.active.values()];
    if (active.length === 0) return;
    const others = this.store.changes().others;
    let known = this.sessionRates;
    if (!known || known.others !== others || active.some((a) => !known!.bySession.has(a.task.session))) {
      const byTask = await this.store.sessionLimits(active.map((a) => a.task.id));
      known = { others, bySession: new Map(active.map((a) => [a.task.session, byTask.get(a.task.id) ?? null])) };
      this.sessionRates = known;
    }
    const own = active.map((a) => tightest(a.task.limitRate, known!.bySession.get(a.task.session) ?? null));
    const shares = fairShares(global, own);
    active.forEach((a, i) => {
      if (a.bucket.limit !== shares[i]) a.bucket.setRate(shares[i]!, now);
    });
  }

  private async flushProgress(now: number): Promise<void> {
    if (this.lost) return;
    const updates = [];
    for (const a of this.active.values()) {
      const dt = now - a.sample.at;
      if (dt >= 1000) {
        const rate = ((a.bytes - a.sample.bytes) * 1000) / dt;
        a.sample = { bytes: a.bytes, at: now, speed: a.sample.speed == null ? rate : 0.5 * a.sample.speed + 0.5 * rate };
      }
      if (!a.dirty) continue;
      a.dirty = false;
      const speed = a.sample.speed == null ? null : Math.round(a.sample.speed);
      if (a.task.kind === 'upload') updates.push({ id: a.task.id, claim: a.fence.claim, bytesSent: a.bytes, speed });
      else updates.push({ id: a.task.id, claim: a.fence.claim, bytesReceived: a.bytes, bytesExpected: a.total ?? a.task.bytesExpected, resumeOffset: a.durable, speed, segments: a.segments ?? undefined });
    }
    const refused = await this.store.recordProgress(updates);
    if (refused.length === 0) return;
    // Claims that moved on: canceled (the attempt removes its partial file) or taken over (it touches nothing).
    const states = await this.store.statesOf(refused);
    for (const id of refused) {
      const a = this.active.get(id);
      if (a) this.stop(a, states.get(id)?.state === 'canceled' ? 'cancel' : 'fenced');
    }
  }

  private async runDueHooks(now: number): Promise<void> {
    const waiting = await this.store.sessionsAwaitingHook(now);
    for (const { session, active, runnable } of waiting) {
      if (this.hooksRunning.has(session.name) || !hookDue(session, { active, runnable }, now)) continue;
      const events = await this.store.listEvents({ session: session.name, undeliveredOnly: true });
      if (events.length === 0) continue;
      const start = await this.store.recordHookStart(session.name, now, { base: this.config.rateLimitBase, max: this.config.rateLimitMax }, this.lease, events.map((e) => e.id));
      if (start === 'lease-lost') return this.leaseLost();
      if (start === 'busy') continue; // another worker of a shared store runs it
      this.hooksRunning.add(session.name);
      const plan = planHook(this.opts.home, session, events, this.env, this.config.downloadDir, now);
      this.log.write(session.name, `hook: running for ${events.length} event(s)`);
      const p = runHook(plan, this.config.hookTimeout, (line) => this.log.write(session.name, `hook: ${line}`))
        .then(async (outcome) => {
          if (outcome.ok) {
            if (!(await this.store.recordHookResult(session.name, events.map((e) => e.id), { ok: true }, Date.now(), this.lease))) return;
            this.log.write(session.name, `hook: exit 0; ${events.length} event(s) delivered`);
          } else {
            const delay = hookRetryDelay(session.hookFailures, this.config.hookRetryDelay);
            if (!(await this.store.recordHookResult(session.name, [], { ok: false, error: outcome.error!, nextAt: Date.now() + delay }, Date.now(), this.lease))) return;
            this.log.write(session.name, `hook: failed (${outcome.error}); retrying in ${formatDuration(delay)}`);
          }
        })
        .catch((err) => {
          if (!this.noteStoreFailure(err)) this.log.write(session.name, `hook: internal error: ${(err as Error).message}`);
        })
        .finally(() => {
          this.hooksRunning.delete(session.name);
          this.attempts.delete(p);
          this.wake();
        });
      this.attempts.add(p);
    }
  }

  /** Nothing queued, running or waiting for hook delivery, for longer than the linger time. */
  private async finished(now: number): Promise<boolean> {
    if (this.active.size > 0 || this.hooksRunning.size > 0) {
      this.idleSince = null;
      return false;
    }
    const work = await this.store.workSummary(now);
    if (work.queued + work.running + work.pendingHooks > 0) {
      this.idleSince = null;
      return false;
    }
    this.idleSince ??= now;
    return now - this.idleSince >= this.lingerMs;
  }
}
