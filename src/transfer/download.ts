// One download attempt, as a pipeline of steps: plan the request (resume range and validators),
// perform it following redirects, judge the response (append / start over / already complete /
// retry without the range / fail), choose the output, write the body to the part file while hashing,
// verify length and checksum, and move the file into place.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { isRecordedFile, nonRegularKind, ownedRegularFile, partIdOf, removePartFile, type PartRef } from '../shared/files.js';
import { formatBytes, reserveBytes, type FreeSpaceRule } from '../shared/parse.js';
import { partPathFor } from '../shared/paths.js';
import { Incoming, writeBody } from './body.js';
import { BodyLimits, reserveError, tooLargeError } from './limits.js';
import { classifyError, classifyStatus } from './classify.js';
import { DEFAULT_MAX_REDIRECTS, firstHop, headerValue, requestFollowingRedirects, type FinalResponse } from './http.js';
import { parseContentDisposition } from './naming.js';
import {
  copyPrefix, createFresh, fencedError, fileError, inspectRecorded, openRecorded, outputBusyError, unsafePartError, type OpenedPart,
} from './partfile.js';
import { FileSink } from './sink.js';
import { TUNING } from './tuning.js';
import {
  TransferError,
  type DownloadCallbacks,
  type DownloadRequest,
  type DownloadResult,
  type PartPlan,
  type ResponseMeta,
  type ResumePoint,
} from './types.js';

type Headers = Record<string, string | string[] | undefined>;
type KeptPart = ResumePoint & { output: string };
/** What is on disk for the next attempt if this one fails. */
interface AttemptState {
  partial: KeptPart | null;
  /** The lineage's partial file as it stands now (the recorded one, or this attempt's copy or fresh file). */
  current: PartRef | null;
}

/** A resume that passed the checks: `part` is the lineage's partial file and holds `offset` bytes we keep. */
export interface ResumePlan extends ResumePoint {
  output: string;
  part: PartRef;
  /** Of `offset`, the bytes known to be fsync'd: what a failure before the body is written keeps. */
  durable: number;
}

/** What to do with a final response. */
export type Verdict =
  /** Write the body at `startOffset` (0: a fresh file). */
  | { kind: 'write'; startOffset: number; totalBytes: number | null; bodyBytes: number | null }
  /** 416 for a range starting exactly at the end: the part file already holds the whole resource. */
  | { kind: 'complete'; totalBytes: number }
  /** The range answer cannot be trusted (wrong start, changed validator, 416): ask again without Range. */
  | { kind: 'restart'; reason: string }
  /** Not a success: classify the status. */
  | { kind: 'fail' }
  /** HEAD, 204, 205 or 304: nothing to save; the task completes without a file. */
  | { kind: 'no-body' }
  /** An answer that must never become the file (a 206 nobody asked for): fail with this error. */
  | { kind: 'reject'; code: string; message: string };

/** Statuses that carry no body by definition (RFC 9110): no file, no partial file. */
const BODILESS_STATUSES = new Set([204, 205, 304]);

const isStrongEtag = (etag: string | null): etag is string => !!etag && !etag.startsWith('W/');

/** The Range and If-Range headers for a resume: If-Range carries a strong ETag, else Last-Modified. */
export function rangeHeaders(plan: ResumePoint): Array<[string, string]> {
  const headers: Array<[string, string]> = [['Range', `bytes=${plan.offset}-`]];
  const validator = isStrongEtag(plan.etag) ? plan.etag : plan.lastModified;
  if (validator) headers.push(['If-Range', validator]);
  return headers;
}

function parseLength(value: string | null): number | null {
  return value != null && /^\d+$/.test(value.trim()) ? Number(value) : null;
}

/** `bytes 100-199/1000` (total may be `*`). */
export function parseContentRange(value: string | null): { start: number; end: number; total: number | null } | null {
  const m = value && /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(value);
  if (!m) return null;
  const start = Number(m[1]);
  const end = Number(m[2]);
  const total = m[3] === '*' ? null : Number(m[3]);
  if (end < start || (total != null && end >= total)) return null;
  return { start, end, total };
}

/** The first range of a plain `bytes=A-` or `bytes=A-B` request header; null for suffix or multiple ranges. */
function askedSpan(range: string): { start: number; end: number | null } | null {
  const m = /^\s*bytes\s*=\s*(\d+)\s*-\s*(\d*)\s*$/i.exec(range);
  return m ? { start: Number(m[1]), end: m[2] ? Number(m[2]) : null } : null;
}

/**
 * The response to a request (with the resume range when `plan` is set, with the user's own Range
 * header `userRange` when they sent one): append, start over, done, retry, no file, or fail.
 */
export function judgeResponse(status: number, headers: Headers, plan: ResumePoint | null, method = 'GET', userRange: string | null = null): Verdict {
  const length = method === 'HEAD' ? null : parseLength(headerValue(headers, 'content-length'));
  if (status === 416 && plan) {
    const m = /^\s*bytes\s+\*\/(\d+)\s*$/i.exec(headerValue(headers, 'content-range') ?? '');
    if (m && Number(m[1]) === plan.offset) return { kind: 'complete', totalBytes: plan.offset };
    return { kind: 'restart', reason: 'the server cannot serve the rest of the file (HTTP 416)' };
  }
  if (BODILESS_STATUSES.has(status) || (method === 'HEAD' && status >= 200 && status <= 299)) return { kind: 'no-body' };
  if (status < 200 || status > 299) return { kind: 'fail' };
  if (status === 206) {
    const range = parseContentRange(headerValue(headers, 'content-range'));
    if (plan) {
      if (!range || range.start !== plan.offset) return { kind: 'restart', reason: 'the server sent a different range' };
      const etag = headerValue(headers, 'etag');
      const lastModified = headerValue(headers, 'last-modified');
      if ((plan.etag && etag && etag !== plan.etag) || (plan.lastModified && lastModified && lastModified !== plan.lastModified)) {
        return { kind: 'restart', reason: 'the file changed on the server' };
      }
      return { kind: 'write', startOffset: plan.offset, totalBytes: range.total, bodyBytes: length ?? range.end - range.start + 1 };
    }
    // No resume range was sent. The whole resource as a 206 is as good as a 200.
    if (range && range.start === 0 && range.total != null && range.end === range.total - 1) {
      return { kind: 'write', startOffset: 0, totalBytes: range.total, bodyBytes: length ?? range.total };
    }
    // The user's own Range header: the slice they asked for is the file (a suffix or multi-range as sent).
    if (userRange) {
      const asked = askedSpan(userRange);
      if (!asked || (range && range.start === asked.start && (asked.end == null || range.end <= asked.end))) {
        return { kind: 'write', startOffset: 0, totalBytes: length, bodyBytes: length };
      }
    }
    // A slice nobody asked for (a broken cache or proxy): never saved as the file.
    const got = range ? `bytes ${range.start}-${range.end}/${range.total ?? '*'}` : 'no valid Content-Range';
    const asked = userRange ? `the range asked for was ${userRange}` : 'no range was asked for';
    return { kind: 'reject', code: 'E_PARTIAL_CONTENT', message: `the server sent only part of the file (HTTP 206, ${got}) but ${asked}; nothing was saved` };
  }
  // 200 (a resume the server declined: start over), or any other 2xx.
  return { kind: 'write', startOffset: 0, totalBytes: length, bodyBytes: length };
}

/** The attempt's partial-file plan; a request without one is a task of an older bgdl (see DownloadRequest.part). */
function partPlanOf(req: DownloadRequest): PartPlan {
  if (req.part) return req.part;
  const legacy = req.output && req.resume && req.resume.offset > 0 ? { path: partPathFor(req.output), id: null } : null;
  return { recorded: legacy, trustLength: false, copy: false, tag: 'n' };
}

/**
 * Step 1: may this attempt resume? Only with a known output and the lineage's recorded partial file,
 * still that file, a regular file we own (a planted symlink fails the task: E_UNSAFE_PART). It keeps
 * the file's whole length when it was written since this boot, else the durable offset. When its
 * previous writer may still run, the kept bytes are copied to a fresh file, which is recorded before
 * the old one is unlinked: the old writer can only write to an orphaned inode.
 */
async function planResume(req: DownloadRequest, cb: DownloadCallbacks, plan: PartPlan, state: AttemptState): Promise<ResumePlan | null> {
  const rec = plan.recorded;
  if (!req.output || !rec) return null;
  // A user's own Range header asks for a slice: resuming on top of it would be wrong.
  if (req.headers.some(([n]) => n.toLowerCase() === 'range')) return null;
  const st = await inspectRecorded(rec);
  if (!st) return null;
  const durable = req.resume?.offset ?? 0;
  const offset = plan.trustLength ? st.size : st.size >= durable ? durable : 0;
  if (offset <= 0) return null;
  const validators = { etag: req.resume?.etag ?? null, lastModified: req.resume?.lastModified ?? null };
  if (!plan.copy) return { offset, durable: Math.min(offset, durable), ...validators, output: req.output, part: { path: rec.path, id: rec.id ?? partIdOf(st) } };
  const copy = await copyPrefix(rec, req.output, plan.tag, offset);
  await copy.fh.close().catch(() => {});
  const owned = cb.onPartFile ? await cb.onPartFile({ path: copy.path, id: copy.id, offset: copy.size }, null) : true;
  if (!owned) {
    removePartFile({ path: copy.path, id: copy.id });
    throw fencedError();
  }
  state.current = { path: copy.path, id: copy.id };
  removePartFile(rec);
  if (copy.size <= 0) return null;
  return { offset: copy.size, durable: copy.size, ...validators, output: req.output, part: { path: copy.path, id: copy.id } };
}

/** A file at `<output>.bgdl-part` that is not the lineage's own: E_UNSAFE_PART or E_OUTPUT_BUSY, before any request. */
function checkUsualName(output: string, ours: PartRef | null): void {
  const usual = partPathFor(output);
  let st;
  try {
    // Synchronous, as refuseNonRegular's look: usually nothing is there, and waiting for the thread
    // pool let the worker's loop run in between (~3 ms of a fresh worker's way to its first request).
    st = fs.lstatSync(usual, { throwIfNoEntry: false });
  } catch {
    return;
  }
  if (!st || (ours && ours.path === usual && isRecordedFile(st, ours))) return;
  if (!ownedRegularFile(st)) throw unsafePartError(usual);
  throw outputBusyError(usual);
}

/** Step 2: send the request (with the resume range), following redirects. */
function perform(req: DownloadRequest, cb: DownloadCallbacks, plan: ResumePlan | null): Promise<FinalResponse> {
  const hop = firstHop(req.url, req.method, req.headers);
  hop.withBody = false;
  if (plan) hop.headers.push(...rangeHeaders(plan));
  return requestFollowingRedirects(hop, {
    insecure: req.insecure,
    caFile: req.caFile,
    proxy: req.proxy, netrcFile: req.netrcFile, cookiesFile: req.cookiesFile,
    signal: cb.signal,
    stallTimeoutMs: req.stallTimeoutMs,
    maxRedirects: req.maxRedirects ?? DEFAULT_MAX_REDIRECTS,
    rules: { allowDowngrade: req.allowDowngrade, anyRedirectDropsBody: false },
    behind: cb.behind,
  });
}

/**
 * `first`: the final response to this request already received by the caller (a split download's
 * first range request that the server answered with the whole file, or an error): used instead of
 * asking again. Only for an attempt that does not resume.
 */
export async function download(req: DownloadRequest, cb: DownloadCallbacks, first?: FinalResponse): Promise<DownloadResult> {
  const lineage = partPlanOf(req);
  // What is on disk for the next attempt if this one fails: the resume point until the body is being
  // written, then what has been fsync'd.
  const state: AttemptState = { partial: null, current: lineage.recorded };
  try {
    let plan = await planResume(req, cb, lineage, state);
    state.partial = plan && { output: plan.output, offset: plan.durable, etag: plan.etag, lastModified: plan.lastModified };
    // Another bgdl's partial file at the usual name: wait without asking the server (createFresh decides for good).
    if (!plan && req.output) checkUsualName(req.output, state.current);
    // Below the free-space reserve already: wait without asking the server.
    const dir = req.output ? path.dirname(req.output) : req.dir;
    if (dir && req.minFreeSpace) await checkFreeSpace(dir, 0, null, req.minFreeSpace);
    const userRange = req.headers.find(([n]) => n.toLowerCase() === 'range')?.[1] ?? null;
    let final = first && !plan ? first : await perform(req, cb, plan);
    if (first && final !== first) await first.response.body.dump({ limit: 64 * 1024 }).catch(() => {});
    let verdict = judgeResponse(final.response.statusCode, final.response.headers, plan, final.hop.method, userRange);
    if (verdict.kind === 'restart') {
      await final.response.body.dump({ limit: 64 * 1024 }).catch(() => {});
      plan = null;
      final = await perform(req, cb, null);
      verdict = judgeResponse(final.response.statusCode, final.response.headers, null, final.hop.method, userRange);
    }
    if (verdict.kind === 'fail' || verdict.kind === 'restart' || verdict.kind === 'reject') {
      const { statusCode, headers, body } = final.response;
      await body.dump({ limit: 64 * 1024 }).catch(() => {});
      if (verdict.kind === 'reject') throw new TransferError(verdict.code, verdict.message, false, { httpStatus: statusCode, finalUrl: final.hop.url.href });
      throw classifyStatus(statusCode, headers, Date.now(), final.hop.url.href);
    }
    if (verdict.kind === 'no-body') return await noBody(req, final);
    return await receive(req, cb, final, verdict, plan, state, lineage);
  } catch (err) {
    if (first && !first.response.body.destroyed) first.response.body.destroy();
    throw settle(err, cb.signal, state.partial);
  }
}

/**
 * HEAD, 204, 205, 304: there is no body, so there is no file: nothing is created, an existing file is
 * left alone, and the task completes with no output. A checksum asked for cannot be met.
 */
async function noBody(req: DownloadRequest, final: FinalResponse): Promise<DownloadResult> {
  const { statusCode, body } = final.response;
  await body.dump({ limit: 64 * 1024 }).catch(() => {});
  const finalUrl = final.hop.url.href;
  if (req.sha256Expected) {
    throw new TransferError('E_CHECKSUM', `HTTP ${statusCode} to ${final.hop.method} has no body to check against the expected sha256`, false, { httpStatus: statusCode, finalUrl });
  }
  return { output: null, finalUrl, httpStatus: statusCode, bytes: 0, sha256: null, outcome: 'no-body' };
}

/**
 * Only a regular file (or nothing) at the destination is ever replaced: a device, FIFO, socket or
 * directory that is there (put there after add, say) fails the task and is left alone. Only an output
 * that is renamed over (`outputFixed`) is looked at: a derived name is linked without clobbering, so
 * whatever appears there is never replaced (and a look per file cost a small-file batch ~50-100 µs
 * of the main thread each, the directory busy with other files' creates).
 */
export async function refuseNonRegular(output: string, req: Pick<DownloadRequest, 'outputFixed'>): Promise<void> {
  if (!req.outputFixed) return;
  let st;
  try {
    // Synchronous: usually nothing is there, and the asynchronous lstat's way to say so (the thread
    // pool, behind other files' fsyncs, and an Error) cost each small file more than the look itself.
    st = fs.lstatSync(output, { throwIfNoEntry: false });
  } catch {
    return; // unreadable: the rename reports it
  }
  if (!st) return; // nothing there
  const kind = nonRegularKind(st);
  if (kind && !st.isSymbolicLink()) {
    throw new TransferError('E_DEST', `${output} is ${kind}, not a regular file: not replaced; remove it or choose another output, then bgdl retry`, false);
  }
}

/** A failure as the worker needs it: classified, marked E_ABORTED when we were stopped, with what survives. */
function settle(err: unknown, signal: AbortSignal, partial: KeptPart | null): TransferError {
  const e = signal.aborted ? new TransferError('E_ABORTED', 'stopped', true) : classifyError(err);
  if (e.extra.partial || !partial || partial.offset <= 0) return e;
  return new TransferError(e.code, e.message, e.transient, { ...e.extra, partial: { ...partial } });
}

/**
 * What statfs said of a directory a moment ago, less what transfers checked against it since: a burst
 * of small files to one directory asks the filesystem once, not once per file. Only a plentiful answer
 * is reused; a tight one is always asked again.
 */
const freeSpaceSeen = new Map<string, { free: number; total: number; at: number }>();

/**
 * Step 4: free space at the destination for what is still to come (Content-Length, else
 * --expect-receive), above the reserve. Returns the free space and reserve it saw (for the checks
 * while writing), or null when there is nothing to check or no answer (the write itself will tell).
 */
export async function checkFreeSpace(dir: string, needed: number | null, partial: KeptPart | null, rule: FreeSpaceRule | null): Promise<{ free: number; reserve: number } | null> {
  const want = Math.max(0, needed ?? 0);
  if (want === 0 && !rule) return null;
  const seen = freeSpaceSeen.get(dir);
  const now = Date.now();
  if (seen && now - seen.at < TUNING.freeSpaceReuseMs) {
    const reserve = rule ? reserveBytes(rule, seen.total) : 0;
    if (seen.free - want >= reserve) {
      seen.free -= want;
      return { free: seen.free + want, reserve };
    }
  }
  let free: number;
  let total: number;
  try {
    const st = await fsp.statfs(dir);
    free = st.bavail * st.bsize;
    total = st.blocks * st.bsize;
  } catch {
    return null;
  }
  if (freeSpaceSeen.size > 1000) freeSpaceSeen.clear();
  freeSpaceSeen.set(dir, { free: free - want, total, at: now });
  const reserve = rule ? reserveBytes(rule, total) : 0;
  if (free < want + reserve) {
    const kept = partial ? { partial: { ...partial } } : {};
    if (free >= want) throw reserveError(dir, free, reserve, want, kept);
    throw new TransferError('E_DISK_SPACE', `not enough free space in ${dir}: ${formatBytes(want)} needed, ${formatBytes(free)} free`, true, {
      waitFor: 'disk-space',
      ...kept,
    });
  }
  return { free, reserve };
}

type Writable = Extract<Verdict, { kind: 'write' | 'complete' }>;

/** What the final response tells the caller before any byte is written. */
function describeResponse(final: FinalResponse, verdict: Writable, plan: ResumePlan | null): ResponseMeta {
  const { headers, statusCode } = final.response;
  const startOffset = verdict.kind === 'write' ? verdict.startOffset : verdict.totalBytes;
  const resumed = startOffset > 0 ? plan : null;
  return {
    finalUrl: final.hop.url.href,
    protocol: final.protocol,
    // A 416 "you already have it all" completes a resume: report it as the partial content it finishes.
    status: verdict.kind === 'complete' ? 206 : statusCode,
    totalBytes: verdict.totalBytes,
    etag: headerValue(headers, 'etag') ?? resumed?.etag ?? null,
    lastModified: headerValue(headers, 'last-modified') ?? resumed?.lastModified ?? null,
    dispositionName: parseContentDisposition(headerValue(headers, 'content-disposition')),
    startOffset,
  };
}

/** Steps 3–6 for a response worth writing: choose the output, check space, write, verify, move into place. */
async function receive(
  req: DownloadRequest, cb: DownloadCallbacks, final: FinalResponse, verdict: Writable, plan: ResumePlan | null, state: AttemptState, lineage: PartPlan,
): Promise<DownloadResult> {
  // Take body bytes from now on, so none are lost if the connection fails while we prepare.
  const incoming = verdict.kind === 'write' ? new Incoming(final.response.body, cb.throttle) : null;
  // The transfer holds no connection once the network has given the whole body (a small file comes
  // with its head): its slot may go to the next transfer while this file is named, created, recorded,
  // written and placed. A larger body is in once written (below).
  let told = false;
  const bodyIn = () => {
    if (told) return;
    told = true;
    cb.onReceived?.();
  };
  incoming?.done.then(bodyIn, () => {});
  if (!incoming) await final.response.body.dump({ limit: 64 * 1024 }).catch(() => {});
  const meta = describeResponse(final, verdict, plan);
  const { startOffset } = meta;
  const bodyBytes = verdict.kind === 'write' ? verdict.bodyBytes : 0;

  let output: string;
  let part: FileSink;
  let space: { free: number; reserve: number } | null;
  try {
    // A length over the limit fails before any file is chosen or created.
    const end = meta.totalBytes ?? (bodyBytes != null ? startOffset + bodyBytes : null);
    if (req.maxSize != null && end != null && end > req.maxSize) throw tooLargeError(end, req.maxSize, true, { httpStatus: meta.status, finalUrl: meta.finalUrl });
    output = await cb.chooseOutput(meta);
    await refuseNonRegular(output, req);
    if (startOffset > 0 && output !== plan?.output) {
      throw new TransferError('E_RESUME', `cannot resume into ${output}: the partial file belongs to ${plan?.output}`, true);
    }
    const remaining = meta.totalBytes ?? req.expectReceive;
    space = await checkFreeSpace(path.dirname(output), remaining == null ? null : remaining - startOffset, state.partial, req.minFreeSpace ?? null);
    // Appending: the lineage's file as planned. From 0: a fresh file, never the old one rewritten in place.
    const fresh = startOffset === 0;
    const opened: OpenedPart = fresh ? await createFresh(output, lineage.tag, state.current) : await openRecorded(plan!.part);
    try {
      part = await FileSink.open(
        opened,
        startOffset,
        {
          onDurable: (offset) => {
            if (state.partial) state.partial.offset = offset;
            cb.onDurable(offset);
          },
        },
        { direct: end != null && end - startOffset >= TUNING.directMinBytes },
      );
    } catch (err) {
      await opened.fh.close().catch(() => {});
      if (fresh) removePartFile(opened);
      throw err instanceof TransferError ? err : fileError(opened.path, err);
    }
    // Recorded (fenced) before a byte of the body goes in; only then may an older file of ours go.
    const owned = cb.onPartFile ? await cb.onPartFile({ path: part.path, id: part.id, offset: startOffset, direct: part.isDirect }, meta) : true;
    if (!owned) {
      if (fresh) await part.discard();
      else await part.close();
      throw fencedError();
    }
    const previous = state.current;
    state.current = { path: part.path, id: part.id };
    if (fresh && previous && previous.path !== part.path) removePartFile(previous);
  } catch (err) {
    incoming?.discard();
    throw err;
  }
  state.partial = { output, offset: startOffset, etag: meta.etag, lastModified: meta.lastModified };

  let received = 0;
  if (incoming) {
    const limits = new BodyLimits({
      dir: path.dirname(output), startOffset, maxSize: req.maxSize ?? null, rule: space ? (req.minFreeSpace ?? null) : null,
      written: () => part.written, free: space?.free ?? 0, reserve: space?.reserve ?? 0,
    });
    try {
      received = await writeBody(incoming, part, (n) => cb.onProgress(startOffset + n, meta.totalBytes), (n) => limits.admit(n));
    } catch (err) {
      if (err instanceof TransferError && err.code === 'E_TOO_LARGE') {
        // Permanent: nothing of this file is kept.
        state.partial = null;
        await part.discard();
        throw err;
      }
      await part.abort();
      throw bodyFailure(err, part, part.written - startOffset, bodyBytes);
    }
  }
  // Written, not yet fsync'd: verified first, then made durable once with its final mode (finish).
  bodyIn();
  const size = startOffset + received;
  await verifyLength(part, size, meta.totalBytes ?? (bodyBytes != null ? startOffset + bodyBytes : null), state);
  let sha256: string;
  try {
    // Every byte is written before the digest is taken: a write error shows here, not after the rename.
    await part.settle();
    if (part.failure) throw part.failure;
    sha256 = part.digest();
  } catch (err) {
    await part.abort();
    throw fileError(part.path, err);
  }
  await verifyChecksum(part, sha256, req.sha256Expected, state);
  const used = await placeFile(part, output, req, cb);
  return { output: used, finalUrl: meta.finalUrl, httpStatus: meta.status, bytes: size, sha256 };
}

/**
 * Step 7, for a complete and verified partial file (one connection or a split): still this attempt's,
 * the destination not turned into something other than a regular file meanwhile, then into place.
 * Returns the path used (a derived name never replaces a file).
 */
export async function placeFile(part: FileSink, output: string, req: Pick<DownloadRequest, 'outputFixed'>, cb: Pick<DownloadCallbacks, 'stillOwner'>): Promise<string> {
  // Cheap, and not what safety rests on (finish renames only a file still under its name).
  if (cb.stillOwner && !(await cb.stillOwner())) {
    await part.close();
    throw fencedError();
  }
  try {
    await refuseNonRegular(output, req);
  } catch (err) {
    await part.abort();
    throw err;
  }
  try {
    return await part.finish(output, req.outputFixed, fencedError);
  } catch (err) {
    await part.close();
    throw fileError(output, err);
  }
}

/** Step 6a: a body that ended early is resumable (E_SHORT_BODY); one longer than announced is not trusted. */
async function verifyLength(part: FileSink, size: number, expected: number | null, state: AttemptState): Promise<void> {
  if (expected == null || size === expected) return;
  if (size > expected) {
    // Nothing of it can be trusted, and a later attempt would keep every byte of it: it goes.
    state.partial = null;
    await part.discard();
    throw new TransferError('E_LENGTH', `received ${size} bytes, more than the ${expected} announced`, false);
  }
  await part.abort();
  throw new TransferError('E_SHORT_BODY', `the connection ended after ${size} of ${expected} bytes`, true);
}

/** Step 6b: a checksum mismatch removes the part file; the destination is never touched. */
async function verifyChecksum(part: FileSink, actual: string, expected: string | null, state: AttemptState): Promise<void> {
  if (!expected || actual === expected.toLowerCase()) return;
  state.partial = null;
  await part.discard();
  throw new TransferError('E_CHECKSUM', `sha256 mismatch: expected ${expected.toLowerCase()}, got ${actual}`, false);
}

/** A failure while the body was streaming: a full disk waits, a cut-off body is E_SHORT_BODY; all keep the partial. */
function bodyFailure(err: unknown, part: FileSink, received: number, bodyBytes: number | null): unknown {
  const writeErr = part.failure ?? (isFsError(err) ? err : null);
  if (writeErr) return fileError(part.path, writeErr);
  const e = classifyError(err);
  if ((e.code === 'E_CONNECTION' || e.code === 'E_SHORT_BODY') && bodyBytes != null && received < bodyBytes) {
    return new TransferError('E_SHORT_BODY', `the connection ended after ${received} of ${bodyBytes} body bytes (${e.message})`, true);
  }
  return e;
}

function isFsError(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException;
  return typeof e?.syscall === 'string' && ['write', 'writev', 'fsync', 'ftruncate', 'open'].includes(e.syscall);
}
