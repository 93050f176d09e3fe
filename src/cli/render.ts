// Turning data into output: the public (redacted) JSON view of a task, the status table, plain lines.
// Commands return data; these functions decide how it looks.

import { formatRate, scheduledRate, tightest, type Rate, type ScheduleEntry } from '../shared/bandwidth.js';
import { effectiveWaitingFor, iso, type BgdlEvent, type Session, type Task, type TaskState } from '../shared/model.js';
import type { SessionSummary, TaskBrief, TaskTotals } from '../store/index.js';
import { formatBytes, formatDuration } from '../shared/parse.js';
import { describeProxy } from '../shared/proxy.js';
import { redactHeader, redactText, redactUrl } from '../shared/redact.js';
import { printable } from '../shared/text.js';

/** A task as `status --json` prints it: every documented field (README, man page), credentials redacted. */
export function taskJson(t: Task, now = Date.now()) {
  return {
    id: t.id,
    session: t.session,
    kind: t.kind,
    url: redactUrl(t.url),
    finalUrl: redactUrl(t.finalUrl),
    method: t.method,
    headers: t.headers.map(([n, v]) => `${n}: ${redactHeader(n, v)}`),
    output: t.output,
    uploadFile: t.uploadFile,
    state: t.state,
    /** A completed task that wrote no new file: skipped, not-modified or no-body. */
    outcome: t.outcome ?? null,
    waitingFor: effectiveWaitingFor(t, now),
    waitDetail: t.state === 'queued' ? waitDetail(t, now) : null,
    nextAttemptAt: t.state === 'queued' && t.notBefore && t.notBefore > now ? iso(t.notBefore) : null,
    bytesReceived: t.bytesReceived,
    bytesExpected: t.bytesExpected,
    bytesSent: t.bytesSent,
    speed: t.state === 'running' ? t.speed : null,
    httpStatus: t.httpStatus,
    attempts: t.attempts,
    error: t.error ? { code: t.error.code, message: redactText(t.error.message) } : null,
    sha256: t.sha256,
    expectedSha256: t.sha256Expected,
    createdAt: iso(t.createdAt),
    beginAt: iso(t.beginAt),
    startedAt: iso(t.startedAt),
    finishedAt: iso(t.finishedAt),
    discretionary: t.discretionary,
    priority: t.priority,
    expectSend: t.expectSend,
    expectReceive: t.expectReceive,
    insecure: t.insecure,
    protocol: t.protocol ?? null,
    limitRate: t.limitRate ?? null,
    split: t.split ?? null,
    segments: segmentCounts(t),
    responseBody: t.kind === 'upload' ? t.responseBody : undefined,
  };
}

export type TaskView = ReturnType<typeof taskJson>;

/**
 * A split download's segments as stored (see src/transfer/segments.ts): how many, how many have a
 * connection now (while the task runs), how many are finished. null: not a split download's file.
 */
function segmentCounts(t: Task): { count: number; running: number; done: number } | null {
  if (!t.segments) return null;
  try {
    const table = JSON.parse(t.segments) as { running?: number; segs?: Array<[number, number, number]> };
    if (!Array.isArray(table.segs)) return null;
    const running = t.state === 'running' ? Number(table.running) || 0 : 0;
    return { count: table.segs.length, running, done: table.segs.filter((s) => s[2] >= s[1]).length };
  } catch {
    return null;
  }
}

/** `4 (3 running, 1 done)`. */
function segmentsText(s: { count: number; running: number; done: number } | null): string | null {
  if (!s) return null;
  const parts = [s.running ? `${s.running} running` : '', s.done ? `${s.done} done` : ''].filter(Boolean);
  return `${s.count}${parts.length ? ` (${parts.join(', ')})` : ''}`;
}

/** A session as `session show/list --json` print it (times in ISO 8601 like tasks and events). */
export function sessionJson<S extends Session>(s: S) {
  return {
    ...s,
    createdAt: iso(s.createdAt),
    hookNextAt: iso(s.hookNextAt),
    hookLastRunAt: iso(s.hookLastRunAt),
    rateLimitLastRunAt: iso(s.rateLimitLastRunAt),
  };
}

/**
 * A time for people: ISO 8601 in local time with its UTC offset (`2026-12-01T14:05:09+01:00`), so it
 * reads like the clock on the wall yet stays unambiguous; '-' for none.
 */
export function localIso(ms: number | null | undefined): string {
  if (ms == null) return '-';
  const d = new Date(ms);
  const p = (n: number) => String(Math.abs(n)).padStart(2, '0');
  const off = -d.getTimezoneOffset();
  const zone = `${off < 0 ? '-' : '+'}${p(Math.trunc(off / 60))}:${p(off % 60)}`;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}${zone}`;
}

/** Why a queued task is not running, as `status` and `wait` show it (`begin-at: starts in 9m53s (…)`). */
export function waitingText(t: TaskBrief, now = Date.now()): string | null {
  const w = effectiveWaitingFor(t, now);
  return w ? `${w}: ${waitDetail(t, now)}` : null;
}

function waitDetail(t: TaskBrief, now: number): string | null {
  const w = effectiveWaitingFor(t, now);
  const until = (at: number | null) => (at && at > now ? `in ${formatDuration(at - now)}` : 'soon');
  switch (w) {
    case 'begin-at':
      return `starts ${until(t.beginAt)} (${localIso(t.beginAt)})`;
    case 'retry':
      return `attempt ${t.attempts + 1} ${until(t.notBefore)}${t.error ? ` after ${t.error.code}` : ''}`;
    case 'rate-limit':
      return `hook relaunch delay, starts ${until(t.notBefore)}`;
    case 'conditions':
      return t.waitDetail ?? 'waiting for good conditions';
    case 'disk-space':
      return t.error?.message ?? 'not enough free disk space';
    case 'slot':
      return 'waiting for a free transfer slot';
    default:
      return null;
  }
}

function progressText(t: TaskBrief): string {
  const done = t.kind === 'upload' ? t.bytesSent : t.bytesReceived;
  const total = t.bytesExpected;
  if (t.state === 'completed') return '100%';
  if (total && total > 0) return `${Math.min(100, Math.floor((done / total) * 100))}%`;
  return done > 0 ? formatBytes(done) : '-';
}

function infoText(t: TaskBrief, now: number): string {
  switch (t.state) {
    case 'running':
      return t.speed != null ? `${formatBytes(t.speed)}/s` : 'starting';
    case 'queued': {
      const w = effectiveWaitingFor(t, now);
      return `${w}: ${waitDetail(t, now)}`;
    }
    case 'failed':
      return t.error ? `${t.error.code}: ${printable(redactText(t.error.message))}` : 'failed';
    case 'paused':
      return t.error ? `paused (last error ${t.error.code})` : 'paused';
    case 'completed':
      return t.kind === 'upload' ? `HTTP ${t.httpStatus}` : '';
    case 'canceled':
      return '';
  }
}

function sizeText(t: TaskBrief): string {
  if (t.kind === 'upload') return formatBytes(t.uploadSize);
  return t.bytesExpected != null ? formatBytes(t.bytesExpected) : t.state === 'completed' ? formatBytes(t.bytesReceived) : '-';
}

/** Pad columns to their widest cell; the last column is not padded. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h) => h.length);
  for (const r of rows) for (let i = 0; i < r.length; i++) if (r[i]!.length > widths[i]!) widths[i] = r[i]!.length;
  const last = header.length - 1;
  const line = (cells: string[]) => {
    let s = '';
    for (let i = 0; i < last; i++) s += cells[i]!.padEnd(widths[i]! + 2);
    return (s + cells[last]).trimEnd();
  };
  let out = line(header) + '\n';
  for (const r of rows) out += line(r) + '\n';
  return out;
}

export function statusTable(tasks: TaskBrief[], now = Date.now()): string {
  if (tasks.length === 0) return '';
  const rows = tasks.map((t) => [
    String(t.id),
    t.session,
    t.kind === 'upload' ? `${t.state} (up)` : t.state,
    progressText(t),
    sizeText(t),
    truncate(infoText(t, now), 60),
    // A completed download without an output saved no file (a response without a body).
    t.kind === 'upload' ? (redactUrl(t.url) ?? '') : (t.output ?? (t.state === 'completed' ? '-' : `${t.dir}/`)),
  ]);
  return table(['ID', 'SESSION', 'STATE', 'PROGRESS', 'SIZE', 'SPEED/INFO', 'DESTINATION'], rows);
}

const STATE_ORDER: readonly TaskState[] = ['running', 'queued', 'paused', 'completed', 'failed', 'canceled'];

/** Counts by state, non-zero ones only, in a fixed order: `12 running, 40 queued, 3 failed`. */
export function countsText(counts: Record<TaskState, number>): string {
  const parts = STATE_ORDER.filter((s) => counts[s] > 0).map((s) => `${counts[s]} ${s}`);
  return parts.length ? parts.join(', ') : 'none';
}

/** One session's summary line: `default: 100000 tasks (12 running, 99988 paused); 1.2 GiB of 3.4 GiB; 5.0 MiB/s`. */
export function totalsLine(t: TaskTotals): string {
  const n = Object.values(t.counts).reduce((a, b) => a + b, 0);
  const bytes = t.bytesExpected > 0 ? `${formatBytes(t.bytesDone)} of ${formatBytes(t.bytesExpected)}` : formatBytes(t.bytesDone);
  const speed = t.counts.running > 0 ? `; ${formatBytes(t.speed)}/s` : '';
  return `${t.session}: ${n} task${n === 1 ? '' : 's'} (${countsText(t.counts)}); ${bytes}${speed}`;
}

/** The status summary view: a line a session, the chosen rows, and what was left out. */
export function statusSummary(totals: TaskTotals[], tasks: TaskBrief[], hidden: Record<TaskState, number>, now = Date.now()): string {
  let out = totals.map(totalsLine).join('\n') + '\n\n' + statusTable(tasks, now);
  const left = Object.values(hidden).reduce((a, b) => a + b, 0);
  if (left > 0) out += `… ${left} more not shown (${countsText(hidden)}): bgdl status --all lists every task\n`;
  return out;
}

/** `status ID`: every field of one task, one per line. */
export function taskDetail(t: Task, now = Date.now()): string {
  const v = taskJson(t, now);
  const at = (ms: number | null) => (ms == null ? null : localIso(ms));
  const lines: [string, unknown][] = [
    ['id', v.id], ['session', v.session], ['kind', v.kind], ['state', v.state], ['outcome', v.outcome], ['waiting for', v.waitingFor && `${v.waitingFor}: ${v.waitDetail}`],
    ['url', v.url], ['final url', v.finalUrl], ['method', v.method], ['headers', v.headers.join('; ') || null],
    ['proxy', describeProxy(t.proxy)],
    ['upload file', v.uploadFile], ['output', v.output], ['progress', progressText(t)],
    ['received', v.kind === 'download' ? `${v.bytesReceived} of ${v.bytesExpected ?? 'unknown'} bytes` : null],
    ['sent', v.kind === 'upload' ? `${v.bytesSent} of ${t.uploadSize} bytes` : null],
    ['http status', v.httpStatus], ['protocol', v.protocol], ['limit rate', v.limitRate && formatRate(v.limitRate)], ['split', v.split], ['segments', segmentsText(v.segments)], ['attempts', v.attempts], ['error', v.error && `${v.error.code}: ${v.error.message}`],
    ['sha256', v.sha256], ['expected sha256', v.expectedSha256], ['priority', v.priority], ['discretionary', v.discretionary],
    ['expect receive', v.expectReceive], ['expect send', v.expectSend], ['created', at(t.createdAt)], ['begin at', at(t.beginAt)],
    ['next attempt', at(t.state === 'queued' && t.notBefore && t.notBefore > now ? t.notBefore : null)],
    ['started', at(t.startedAt)], ['finished', at(t.finishedAt)],
  ];
  let out = lines.filter(([, val]) => val !== null && val !== undefined && val !== '').map(([k, val]) => `${(k + ':').padEnd(17)}${val}\n`).join('');
  if (v.responseBody != null) out += `response body:\n${v.responseBody}${v.responseBody.endsWith('\n') ? '' : '\n'}`;
  return out;
}

/** `completed`, or `completed (skipped)` when the task wrote no new file. */
const eventType = (e: BgdlEvent): string => (e.outcome ? `${e.type} (${e.outcome})` : e.type);
/** The line `status` shows above its table while a global bandwidth cap is in force (else ''). */
export function bandwidthLine(cfg: { maxRate: Rate; rateSchedule: ScheduleEntry[] }, now = new Date()): string {
  const scheduled = scheduledRate(cfg.rateSchedule, now);
  const cap = tightest(cfg.maxRate, scheduled);
  if (cap == null) return '';
  const why = cap === scheduled && cfg.rateSchedule.length ? 'rateSchedule' : 'maxRate';
  return `bandwidth: ${formatRate(cap)} shared by all transfers (${why})\n`;
}

/** `session list`: a row a session with the count of every state. */
export function sessionsTable(list: SessionSummary[]): string {
  return table(
    ['SESSION', 'QUEUED', 'RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'CANCELED', 'EVENTS', 'HOOK'],
    list.map((s) => [s.name, ...(['queued', 'running', 'paused', 'completed', 'failed', 'canceled'] as const).map((k) => String(s.counts[k])), String(s.undeliveredEvents), s.hook ?? '-']),
  );
}

/** `session show`: settings, counts and hook state, times in local ISO 8601. */
export function sessionDetail(s: SessionSummary): string {
  return (
    [
      `session:         ${s.name}`,
      `created:         ${localIso(s.createdAt)}`,
      `hook:            ${s.hook ?? '-'}`,
      `launch events:   ${s.launchEvents ? 'on' : 'off'}`,
      `discretionary:   ${s.discretionary ? 'yes' : 'no'}`,
      `limit rate:      ${s.limitRate ? `${formatRate(s.limitRate)} per transfer` : 'none'}`,
      `tasks:           ${STATE_ORDER.map((k) => `${s.counts[k]} ${k}`).join(', ')}`,
      `undelivered:     ${s.undeliveredEvents} event(s)`,
      `hook runs:       ${s.hookRuns} (last ${localIso(s.hookLastRunAt)})`,
      `hook failures:   ${s.hookFailures}${s.hookLastError ? ` (last: ${s.hookLastError}; next try ${localIso(s.hookNextAt)})` : ''}`,
      `rate limit:      ${s.rateLimitCount} hook run(s) in the current streak`,
    ].join('\n') + '\n'
  );
}

export function eventLine(e: BgdlEvent): string {
  const what = e.type === 'completed' ? (e.output ?? e.url) : e.type === 'failed' ? `${e.error?.code}: ${e.error?.message}` : e.url;
  return `${e.id}\t${e.at}\t${e.session}\ttask ${e.taskId}\t${eventType(e)}\t${what}`;
}

export function eventsTable(events: BgdlEvent[]): string {
  if (events.length === 0) return '';
  return table(
    ['EVENT', 'TASK', 'SESSION', 'TYPE', 'AT', 'DETAIL'],
    events.map((e) => [
      String(e.id), String(e.taskId), e.session, eventType(e), localIso(Date.parse(e.at)),
      e.type === 'completed' ? (e.output ?? e.url) : e.type === 'failed' ? `${e.error?.code}: ${e.error?.message}` : e.url,
    ]),
  );
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
