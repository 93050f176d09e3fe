// The store's interface: the coarse domain operations the CLI and the worker use, each one
// transaction and async at the boundary, with the projections they return and a change signal that
// names no backend. `sqlite/` and `postgres/` implement it; `rules/` holds what both must agree on.
// See docs/ARCHITECTURE.md ("The store").

import type { BgdlEvent, NewTask, Outcome, Session, Task, TaskError, TaskState, WaitingFor } from '../shared/model.js';
import type { RateLimitConfig } from './rules/ratelimit.js';
import type { TaskAction } from './rules/transitions.js';

export type { TaskAction } from './rules/transitions.js';
export type { RateLimitConfig } from './rules/ratelimit.js';

/**
 * Which tasks a command means when it names no IDs: the one selection rule of `status`, the control
 * commands and `prune`. Every field narrows; an empty filter is every task.
 */
export interface TaskFilter {
  session?: string;
  states?: readonly TaskState[];
  /** Only tasks that finished at or before this time (prune --older-than). */
  finishedBefore?: number;
}

export interface TransitionResult {
  changed: Task[];
  /** Tasks left as they were, with the reason (e.g. "already completed"). */
  skipped: { task: Task; reason: string }[];
  /** The state each changed task was in before (a canceled task that was running is cleaned up by the worker). */
  previous: Map<number, TaskState>;
}

/** What the latest real download of an output recorded: the validators --if-changed sends. */
export interface DownloadRecord {
  url: string;
  output: string;
  etag: string | null;
  lastModified: string | null;
  bytes: number;
  finishedAt: number;
}

export interface SessionSummary extends Session {
  counts: Record<TaskState, number>;
  undeliveredEvents: number;
}

/** One session's tasks at a glance (the status summary line): counts by state, bytes, speed. */
export interface TaskTotals {
  session: string;
  counts: Record<TaskState, number>;
  /** Bytes received (downloads) or sent (uploads) so far, over every task. */
  bytesDone: number;
  /** Sum of the known expected sizes. */
  bytesExpected: number;
  /** Summed speed of the running tasks, bytes a second. */
  speed: number;
}

export interface SessionPatch {
  hook?: string | null;
  launchEvents?: boolean;
  discretionary?: boolean;
  /** Bytes per second for each transfer of the session; null removes the limit. */
  limitRate?: number | null;
}

export interface Lease {
  pid: number;
  host: string;
  heartbeat: number;
  startedAt: number;
  token: number;
}

/** A worker's hold on the lease: its writes apply only while the lease still has this pid and token. */
export interface LeaseFence {
  pid: number;
  token: number;
}

/** An attempt's hold on its task: its writes apply only while the task's claim is still this one. */
export interface TaskFence {
  id: number;
  claim: number;
}

export interface ProgressUpdate {
  id: number;
  claim: number;
  bytesReceived?: number;
  bytesSent?: number;
  bytesExpected?: number | null;
  resumeOffset?: number;
  speed?: number | null;
  /** A split download's segment table as last made durable. */
  segments?: string;
}

/** What the worker learned from a response, kept so a later attempt can resume. */
export interface ResponseInfo {
  finalUrl?: string | null;
  httpStatus?: number | null;
  bytesExpected?: number | null;
  etag?: string | null;
  lastModified?: string | null;
  output?: string | null;
  resumeOffset?: number;
  bytesReceived?: number;
  /** The sum a derived name's --checksums line expects, once the name is known. */
  sha256Expected?: string | null;
  protocol?: string | null;
  /** The partial file this attempt writes (its lineage's file), its `dev:ino`, and the boot and pid writing it. */
  partPath?: string | null;
  partId?: string | null;
  partBoot?: string | null;
  /** The segment table of the partial file (null: not a split download's file). */
  segments?: string | null;
}

export interface FinishInfo {
  state: 'completed' | 'failed';
  /** How a completed task ended when it wrote no new file (skipped, not-modified, no-body). */
  outcome?: Outcome | null;
  etag?: string | null;
  lastModified?: string | null;
  error?: TaskError | null;
  httpStatus?: number | null;
  finalUrl?: string | null;
  output?: string | null;
  sha256?: string | null;
  bytesReceived?: number;
  bytesSent?: number;
  responseBody?: string | null;
}

export interface RequeueInfo {
  notBefore: number | null;
  reason: WaitingFor | null;
  detail?: string | null;
  error?: TaskError | null;
  resumeOffset?: number;
  bytesReceived?: number;
  /** This worker cannot do the task (it cannot write its directory): on a shared store, leave it to the other workers. */
  leave?: boolean;
}

export interface WorkSummary {
  queued: number;
  running: number;
  pendingHooks: number;
}

/** A row of the status table: only the fields it shows (ten thousand of these live while it renders). */
export type TaskBrief = Pick<
  Task,
  | 'id' | 'session' | 'kind' | 'url' | 'output' | 'dir' | 'state' | 'waitReason' | 'waitDetail' | 'notBefore' | 'beginAt'
  | 'bytesReceived' | 'bytesExpected' | 'bytesSent' | 'uploadSize' | 'speed' | 'error' | 'attempts' | 'httpStatus' | 'finishedAt'
>;

/** What the scheduler looks at of a queued task (see src/worker/scheduler.ts). */
export type Candidate = Pick<
  Task,
  | 'id' | 'session' | 'kind' | 'url' | 'method' | 'state' | 'priority' | 'discretionary' | 'expectSend' | 'expectReceive' | 'uploadSize'
  | 'waitReason' | 'waitDetail' | 'split' | 'segments'
>;

/** A task's state and claim: the attempt holding an older claim was canceled or taken over. */
export interface TaskControl {
  state: TaskState;
  claim: number;
}

/** A canceled task whose partial file is still recorded (the worker removes it). */
export interface CanceledPart {
  id: number;
  session: string;
  partPath: string;
  partId: string | null;
}

/**
 * Where the store stands, read without I/O. `others` moves when another process (or host) commits;
 * `mine` moves on this process's own writes that change which queued tasks are runnable, or when
 * (requeue, holds, tasks leaving the queue other than by being claimed). Together they tell the
 * worker when what it read about the queue is stale.
 */
export interface ChangeToken {
  others: number;
  mine: number;
}

export interface EventQuery {
  session?: string;
  undeliveredOnly?: boolean;
  afterId?: number;
  limit?: number;
}

export type HookStart = 'run' | 'busy' | 'lease-lost';

export type HookResult = { ok: true } | { ok: false; error: string; nextAt: number };

/** What a claim must respect across every worker of a shared store. */
export interface ClaimLimits {
  /** Transfers at once to one origin, counted over the whole cluster. */
  perHost: number;
}

/** Is a process alive (on this host)? Passed in so lease rules stay testable. */
export type IsAlive = (pid: number) => boolean;

/** Which outputs other unfinished tasks hold (see TaskStore.outputsInUse). */
export type OutputsInUse = Pick<ReadonlySet<string>, 'has'>;

export interface TaskStore {
  /** Where the store lives, for messages (a file path, or a database URL without its password). */
  readonly location: string;
  /** Several hosts' workers drain this store (their processes cannot be seen from here). */
  readonly shared: boolean;
  close(): Promise<void>;

  // ---- change signal
  changes(): ChangeToken;
  /** Resolves once another process has committed since `since.others`, after `ms`, or when `signal` aborts. */
  waitForChange(since: ChangeToken, ms: number, signal?: AbortSignal): Promise<void>;

  // ---- sessions
  createSession(name: string, patch: SessionPatch, now?: number): Promise<Session>;
  updateSession(name: string, patch: SessionPatch): Promise<Session>;
  getSession(name: string): Promise<Session | null>;
  listSessions(): Promise<SessionSummary[]>;
  /** Remove a session with its finished tasks and events; refused while it has unfinished tasks. */
  removeSession(name: string): Promise<void>;
  /** A person ran bgdl at a terminal for this session: the relaunch rate limiter starts over. */
  resetRateLimit(name: string): Promise<void>;
  /** The bandwidth limits of these tasks' sessions, by task id. */
  sessionLimits(taskIds: number[]): Promise<Map<number, number | null>>;

  // ---- tasks (the CLI)
  /** Store a batch in one transaction (sessions created on first use; hook tasks take the rate-limit delay). */
  enqueue(tasks: NewTask[], rateLimit: RateLimitConfig, now?: number): Promise<Task[]>;
  /** The tasks with these ids, in the order given; NotFoundError names the first missing id. */
  getTasks(ids: number[]): Promise<Task[]>;
  getTask(id: number): Promise<Task | null>;
  /** Tasks in id order. */
  listTasks(filter?: TaskFilter): Promise<Task[]>;
  /** Status rows in id order. */
  listBriefTasks(filter?: TaskFilter): Promise<TaskBrief[]>;
  taskTotals(filter?: { session?: string }): Promise<TaskTotals[]>;
  /** At most `limit` rows in one state: unfinished ones in the worker's order, finished ones latest first. */
  briefTasksPage(filter: { session?: string; state: TaskState; limit: number }): Promise<TaskBrief[]>;
  /** pause / resume / cancel / retry in one transaction (rules/transitions.ts). */
  transition(target: number[] | TaskFilter, action: TaskAction, now?: number): Promise<TransitionResult>;
  /** Remove finished tasks the filter selects, with their delivered events. */
  prune(filter: TaskFilter): Promise<{ tasks: number; events: number }>;
  lastDownloadOf(output: string): Promise<DownloadRecord | null>;
  lastOutputOf(url: string, dir: string): Promise<string | null>;

  // ---- the worker lease (one worker per BGDL_HOME)
  readLease(): Promise<Lease | null>;
  liveWorker(now: number, staleMs: number, isAlive: IsAlive): Promise<boolean>;
  takeLease(pid: number, now: number, staleMs: number, isAlive: IsAlive): Promise<LeaseFence | null>;
  heartbeat(f: LeaseFence, now: number): Promise<boolean>;
  releaseLease(f: LeaseFence): Promise<void>;
  /** When there is work and no live worker: `spawn` one and record its pid in the lease, in one transaction. */
  ensureWorker(now: number, staleMs: number, isAlive: IsAlive, spawn: () => number | undefined): Promise<'running' | 'started' | 'idle'>;
  workSummary(now?: number): Promise<WorkSummary>;

  // ---- the worker's task operations
  /** Tasks this worker's predecessors left running go back to the queue with a new claim; null: lease lost. */
  requeueOrphans(lease: LeaseFence): Promise<Task[] | null>;
  canceledParts(): Promise<CanceledPart[]>;
  forgetParts(ids: number[], lease: LeaseFence): Promise<boolean>;
  /** Candidates (rules/runnable.ts `isCandidate`), best first (priority, then age). */
  runnableCandidates(now: number, limit: number): Promise<Candidate[]>;
  queueFacts(): Promise<{ held: boolean; discretionary: boolean }>;
  nextWakeAt(now: number): Promise<number | null>;
  /**
   * Claim a queued task (its claim raised: the attempt's fencing token); null when it changed, another
   * worker is claiming it, `limits` would be exceeded across the workers sharing the store, or the lease is lost.
   */
  markRunning(id: number, now: number, lease: LeaseFence, limits?: ClaimLimits): Promise<Task | null>;
  /**
   * The task as markRunning(id, now, …) will return it, read at once without writing, where only a
   * command's pause or cancel can refuse the claim (one worker per store: SQLite); null when it is not
   * queued. Absent where claims contend (PostgreSQL). The worker starts the transfer meanwhile, and
   * the claim still decides: until it is known, the attempt sends its request and nothing more.
   */
  previewClaim?(id: number, now: number): Task | null;
  setHeld(hold: { id: number; reason: WaitingFor; detail: string | null }[], release: number[], lease: LeaseFence): Promise<boolean>;
  /**
   * One more connection for a running split download, counted with its origin's running tasks (and
   * their extra connections) against `perHost` across the workers sharing the store; false when that
   * would exceed it or the claim moved on. A store with one worker (SQLite) leaves the count to it: true.
   */
  takeExtraConnection(f: TaskFence, perHost: number): Promise<boolean>;
  /** A connection `takeExtraConnection` granted is done. */
  giveBackExtraConnection(f: TaskFence): Promise<void>;
  /** Where these tasks stand (the worker watches for pause, cancel and takeovers). */
  statesOf(ids: number[]): Promise<Map<number, TaskControl>>;
  /** Progress of many running tasks in one transaction; returns the ids whose claim has moved on. */
  recordProgress(updates: ProgressUpdate[]): Promise<number[]>;
  holdsClaim(f: TaskFence): Promise<boolean>;
  recordResponse(f: TaskFence, info: ResponseInfo): Promise<boolean>;
  /** Outputs held by other unfinished tasks of directory `dir`, asked one name at a time. */
  outputsInUse(dir: string, exceptId: number): Promise<OutputsInUse>;
  requeue(f: TaskFence, info: RequeueInfo): Promise<boolean>;
  recordStopped(f: TaskFence, info: { resumeOffset: number; bytesReceived: number }): Promise<boolean>;
  /** A running task's final state together with its event; false when fenced out or no longer running. */
  finishTask(f: TaskFence, info: FinishInfo, now?: number): Promise<boolean>;
  expireTask(id: number, lease: LeaseFence, info: FinishInfo, now?: number): Promise<boolean>;
  expiredTasks(now: number, timeoutMs: number): Promise<Task[]>;

  // ---- events and hooks
  listEvents(filter?: EventQuery): Promise<BgdlEvent[]>;
  ackEvents(ids: number[], now?: number): Promise<number>;
  lastEventId(): Promise<number>;
  sessionsAwaitingHook(now?: number): Promise<{ session: Session; active: number; runnable: number }[]>;
  /**
   * A hook run starts for these events: count it for the rate limiter and take the session's hook
   * lease. 'busy': another worker runs this session's hook, or delivered some of these events
   * meanwhile (do not run it); 'lease-lost': this worker's lease is gone.
   */
  recordHookStart(name: string, now: number, rateLimit: RateLimitConfig, lease?: LeaseFence, eventIds?: number[]): Promise<HookStart>;
  recordHookResult(name: string, eventIds: number[], result: HookResult, now?: number, lease?: LeaseFence): Promise<boolean>;
}
