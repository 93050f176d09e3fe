// Rows to domain objects: the column lists and decoders both SQL backends share (their tables have
// the same columns; flags are 0/1 integers in both).

import { iso, PRIORITIES, type BgdlEvent, type Session, type Task, type TaskState } from '../shared/model.js';
import type { Candidate, ResponseInfo, TaskBrief } from './types.js';

type Row = Record<string, any>;

/** What the scheduler needs of a candidate (see scheduler.ts). */
export const CANDIDATE_COLUMNS = 'id, session, kind, url, method, state, priority, discretionary, expect_send, expect_receive, upload_size, wait_reason, wait_detail, split, segments';
/** What the status table shows (the URL only for uploads: a download shows its destination). */
export const BRIEF_COLUMNS = `id, session, kind, CASE kind WHEN 'upload' THEN url END AS url, output, dir, state, wait_reason, wait_detail,
  not_before, begin_at, bytes_received, bytes_expected, bytes_sent, upload_size, speed, error_code, error_message, attempts, http_status`;

/** What a response may tell a task (recordResponse), field by column: only those given are written. */
export const RESPONSE_COLUMNS: readonly (readonly [keyof ResponseInfo, string])[] = [
  ['finalUrl', 'final_url'], ['httpStatus', 'http_status'], ['bytesExpected', 'bytes_expected'], ['etag', 'etag'],
  ['lastModified', 'last_modified'], ['output', 'output'], ['resumeOffset', 'resume_offset'], ['bytesReceived', 'bytes_received'],
  ['sha256Expected', 'sha256_expected'], ['protocol', 'protocol'], ['partPath', 'part_path'], ['partId', 'part_id'], ['partBoot', 'part_boot'], ['segments', 'segments'],
];

export function taskFrom(v: any[], ix: Record<string, number>): Task {
  return {
    id: v[ix.id!],
    session: v[ix.session!],
    kind: v[ix.kind!],
    url: v[ix.url!],
    finalUrl: v[ix.final_url!],
    method: v[ix.method!],
    headers: ix.headers === undefined ? [] : JSON.parse(v[ix.headers]),
    output: v[ix.output!],
    outputFixed: !!v[ix.output_fixed!],
    dir: v[ix.dir!],
    uploadFile: v[ix.upload_file!],
    uploadSize: v[ix.upload_size!],
    state: v[ix.state!],
    waitReason: v[ix.wait_reason!],
    waitDetail: v[ix.wait_detail!],
    notBefore: v[ix.not_before!],
    beginAt: v[ix.begin_at!],
    discretionary: !!v[ix.discretionary!],
    priority: PRIORITIES[v[ix.priority!]] ?? 'normal',
    expectSend: v[ix.expect_send!],
    expectReceive: v[ix.expect_receive!],
    sha256Expected: v[ix.sha256_expected!],
    sha256: v[ix.sha256!],
    bytesReceived: v[ix.bytes_received!],
    bytesExpected: v[ix.bytes_expected!],
    bytesSent: v[ix.bytes_sent!],
    httpStatus: v[ix.http_status!],
    attempts: v[ix.attempts!],
    error: v[ix.error_code!] ? { code: v[ix.error_code!], message: v[ix.error_message!] ?? '' } : null,
    etag: v[ix.etag!],
    lastModified: v[ix.last_modified!],
    resumeOffset: v[ix.resume_offset!],
    responseBody: v[ix.response_body!],
    insecure: !!v[ix.insecure!],
    caFile: v[ix.ca_file!],
    allowDowngrade: !!v[ix.allow_downgrade!],
    fromHook: !!v[ix.from_hook!],
    speed: v[ix.speed!],
    createdAt: v[ix.created_at!],
    startedAt: v[ix.started_at!],
    finishedAt: v[ix.finished_at!],
    claim: v[ix.claim!],
    partPath: v[ix.part_path!],
    partId: v[ix.part_id!],
    partBoot: v[ix.part_boot!],
    maxSize: v[ix.max_size!],
    proxy: v[ix.proxy!] ? JSON.parse(v[ix.proxy!]) : null,
    netrcFile: v[ix.netrc_file!],
    cookiesFile: v[ix.cookies_file!],
    skipExisting: !!v[ix.skip_existing!],
    ifChanged: !!v[ix.if_changed!],
    checksums: v[ix.checksums!] ? JSON.parse(v[ix.checksums!]) : null,
    maxAttempts: v[ix.max_attempts!],
    outcome: v[ix.outcome!],
    protocol: v[ix.protocol!],
    limitRate: v[ix.limit_rate!],
    split: splitFrom(v[ix.split!]),
    segments: v[ix.segments!] ?? null,
  };
}

/**
 * A task with only the BRIEF_COLUMNS fields (the rest left out, not just empty): ten thousand of
 * them are all alive while `bgdl status` renders, and their size is what garbage collection costs.
 */
export function briefTaskFrom(v: any[], ix: Record<string, number>): TaskBrief {
  return {
    id: v[ix.id!],
    session: v[ix.session!],
    kind: v[ix.kind!],
    url: v[ix.url!],
    output: v[ix.output!],
    dir: v[ix.dir!],
    state: v[ix.state!],
    waitReason: v[ix.wait_reason!],
    waitDetail: v[ix.wait_detail!],
    notBefore: v[ix.not_before!],
    beginAt: v[ix.begin_at!],
    bytesReceived: v[ix.bytes_received!],
    bytesExpected: v[ix.bytes_expected!],
    bytesSent: v[ix.bytes_sent!],
    uploadSize: v[ix.upload_size!],
    speed: v[ix.speed!],
    error: v[ix.error_code!] ? { code: v[ix.error_code!], message: v[ix.error_message!] ?? '' } : null,
    attempts: v[ix.attempts!],
    httpStatus: v[ix.http_status!],
    finishedAt: v[ix.finished_at!],
  };
}

export function candidateFrom(v: any[], ix: Record<string, number>): Candidate {
  return {
    id: v[ix.id!],
    session: v[ix.session!],
    kind: v[ix.kind!],
    url: v[ix.url!],
    state: v[ix.state!],
    priority: PRIORITIES[v[ix.priority!]] ?? 'normal',
    discretionary: !!v[ix.discretionary!],
    expectSend: v[ix.expect_send!],
    expectReceive: v[ix.expect_receive!],
    uploadSize: v[ix.upload_size!],
    waitReason: v[ix.wait_reason!],
    waitDetail: v[ix.wait_detail!],
    method: v[ix.method!],
    split: splitFrom(v[ix.split!]),
    segments: v[ix.segments!] ?? null,
  };
}

/** A task's own --split as stored (NULL: the config's, 0: auto). */
const splitFrom = (v: number | null): Task['split'] => (v == null ? null : v === 0 ? 'auto' : v);

export function rowToSession(r: Row): Session {
  return {
    name: r.name,
    hook: r.hook,
    launchEvents: !!r.launch_events,
    discretionary: !!r.discretionary,
    createdAt: r.created_at,
    hookFailures: r.hook_failures,
    hookNextAt: r.hook_next_at,
    hookLastError: r.hook_last_error,
    hookLastRunAt: r.hook_last_run_at,
    hookRuns: r.hook_runs,
    rateLimitCount: r.rl_count,
    rateLimitLastRunAt: r.rl_last_run_at,
    limitRate: r.limit_rate ?? null,
  };
}

export function rowToEvent(r: Row): BgdlEvent {
  return { id: r.id, ...JSON.parse(r.data), deliveredAt: iso(r.delivered_at) };
}


export const emptyCounts = (): Record<TaskState, number> => ({ queued: 0, running: 0, paused: 0, completed: 0, failed: 0, canceled: 0 });

/** Column name → index of a result's raw rows (what the decoders read). */
export function indexOf(names: readonly string[]): Record<string, number> {
  const ix: Record<string, number> = {};
  for (const [i, c] of names.entries()) ix[c] = i;
  return ix;
}
