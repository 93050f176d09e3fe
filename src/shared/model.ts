// The task and event model shared by the CLI and the worker: states, reasons, and the JSON shapes
// that `status --json`, `events --json` and hook event files print (docs/ARCHITECTURE.md, "The path of one URL").

export const TASK_STATES = ['queued', 'running', 'paused', 'completed', 'failed', 'canceled'] as const;
export type TaskState = (typeof TASK_STATES)[number];
export const FINAL_STATES: readonly TaskState[] = ['completed', 'failed', 'canceled'];
export const isFinal = (s: TaskState): boolean => FINAL_STATES.includes(s);

/** Why a queued task is not running. */
export type WaitingFor = 'begin-at' | 'conditions' | 'retry' | 'rate-limit' | 'slot' | 'disk-space';

export const PRIORITIES = ['low', 'normal', 'high'] as const;
export type Priority = (typeof PRIORITIES)[number];
export const priorityRank = (p: Priority): number => PRIORITIES.indexOf(p);

export type TaskKind = 'download' | 'upload';
export type EventType = 'completed' | 'failed' | 'canceled';

/**
 * How a completed task ended when it did not simply write a new file: `skipped` (--skip-existing found
 * the destination), `not-modified` (--if-changed got 304), `no-body` (HEAD, 204, 205, 304: no file).
 */
export type Outcome = 'skipped' | 'not-modified' | 'no-body';

/** The proxy settings recorded with a task at `add` (from the environment or --proxy/--noproxy). */
export interface ProxySettings {
  /** Proxy for http:// URLs, as given (credentials included; redacted in every output). */
  http: string | null;
  /** Proxy for https:// URLs. */
  https: string | null;
  /** NO_PROXY list as given. */
  noProxy: string | null;
}

export interface TaskError {
  code: string;
  message: string;
}

/** A header as the user gave it: [name, value]. */
export type Header = [string, string];

/** A task as the store holds it (credentials included: the worker needs them). */
export interface Task {
  id: number;
  session: string;
  kind: TaskKind;
  url: string;
  finalUrl: string | null;
  method: string;
  headers: Header[];
  /** Absolute destination path, once known. */
  output: string | null;
  /** True when the user chose the path with -o (it may replace an existing file). */
  outputFixed: boolean;
  /** Directory a derived name goes into. */
  dir: string;
  uploadFile: string | null;
  uploadSize: number | null;
  state: TaskState;
  /** The reason stored by the worker; see effectiveWaitingFor for what is shown. */
  waitReason: WaitingFor | null;
  waitDetail: string | null;
  notBefore: number | null;
  beginAt: number | null;
  discretionary: boolean;
  priority: Priority;
  expectSend: number | null;
  expectReceive: number | null;
  sha256Expected: string | null;
  sha256: string | null;
  bytesReceived: number;
  bytesExpected: number | null;
  bytesSent: number;
  httpStatus: number | null;
  attempts: number;
  error: TaskError | null;
  etag: string | null;
  lastModified: string | null;
  /** Bytes of the partial file known to be durable (fsync'd): where a resume starts. */
  resumeOffset: number;
  responseBody: string | null;
  insecure: boolean;
  caFile: string | null;
  allowDowngrade: boolean;
  fromHook: boolean;
  speed: number | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  /** Fencing token: raised by every claim or takeover; an attempt's writes apply only while it holds it. */
  claim: number;
  /** The partial file of this task's attempt lineage, its identity (`dev:ino`) and the boot it was written in. */
  partPath: string | null;
  partId: string | null;
  partBoot: string | null;
  /** --max-size: a body larger than this fails the task. */
  maxSize: number | null;
  proxy: ProxySettings | null;
  netrcFile: string | null;
  cookiesFile: string | null;
  skipExisting: boolean;
  ifChanged: boolean;
  /** --checksums: expected SHA-256 by destination base name. */
  checksums: Record<string, string> | null;
  maxAttempts: number | null;
  outcome: Outcome | null;
  /** `HTTP/1.1` or `HTTP/2`: what the last response came over. */
  protocol: string | null;
  /** --limit-rate: bytes per second (null: none of its own). */
  limitRate: number | null;
  /** --split: connections for one file, or 'auto' (null: the config's `split`). */
  split: Split | null;
  /** The segment table of a split download's partial file (JSON, see src/transfer/segments.ts). */
  segments: string | null;
}

/** `--split N` (1-16) or `auto`. */
export type Split = number | 'auto';

/** What `bgdl add` / `bgdl upload` hand to the store. */
export interface NewTask {
  session: string;
  kind: TaskKind;
  url: string;
  method: string;
  headers: Header[];
  output: string | null;
  outputFixed: boolean;
  dir: string;
  uploadFile?: string | null;
  uploadSize?: number | null;
  beginAt: number | null;
  /** null: take the session's default (and the hook rule). */
  discretionary: boolean | null;
  priority: Priority;
  expectSend: number | null;
  expectReceive: number | null;
  sha256Expected: string | null;
  suspended: boolean;
  insecure: boolean;
  caFile: string | null;
  allowDowngrade: boolean;
  fromHook: boolean;
  maxSize?: number | null;
  proxy?: ProxySettings | null;
  netrcFile?: string | null;
  cookiesFile?: string | null;
  skipExisting?: boolean;
  ifChanged?: boolean;
  checksums?: Record<string, string> | null;
  maxAttempts?: number | null;
  limitRate?: number | null;
  split?: Split | null;
}

export interface Session {
  name: string;
  hook: string | null;
  launchEvents: boolean;
  discretionary: boolean;
  createdAt: number;
  hookFailures: number;
  hookNextAt: number | null;
  hookLastError: string | null;
  hookLastRunAt: number | null;
  hookRuns: number;
  rateLimitCount: number;
  rateLimitLastRunAt: number | null;
  /** Bandwidth limit for each of the session's transfers (bytes per second; null: none). */
  limitRate: number | null;
}

export interface BgdlEvent {
  id: number;
  session: string;
  taskId: number;
  type: EventType;
  url: string;
  finalUrl: string | null;
  output: string | null;
  bytes: number;
  httpStatus: number | null;
  sha256: string | null;
  error: TaskError | null;
  /** A completed task that wrote no new file says why: `skipped`, `not-modified` or `no-body` (else null). */
  outcome?: Outcome | null;
  at: string;
  /** Upload tasks: the first 64 KiB of the response body. */
  responseBody?: string | null;
  deliveredAt?: string | null;
}

/** Epoch ms as ISO 8601; null for none, and for a value no date can hold (a store written before values were bounded). */
export const iso = (ms: number | null): string | null => {
  if (ms == null) return null;
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
};

/** What a queued task is waiting for right now, derived from the stored fields and the clock. */
export function effectiveWaitingFor(t: Pick<Task, 'state' | 'beginAt' | 'notBefore' | 'waitReason'>, now: number): WaitingFor | null {
  if (t.state !== 'queued') return null;
  if (t.beginAt != null && t.beginAt > now) return 'begin-at';
  if (t.notBefore != null && t.notBefore > now && t.waitReason) return t.waitReason;
  if (t.waitReason === 'conditions' || t.waitReason === 'disk-space') return t.waitReason;
  return 'slot';
}
