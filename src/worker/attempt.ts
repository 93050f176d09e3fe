// One transfer attempt of one task: hand it to src/transfer, then record what happened: completed,
// failed for good, back in the queue to retry, waiting for disk space, or stopped by pause/cancel.
// Every write carries the attempt's claim: once another worker has taken the task over, or the task
// was canceled, they are refused and the attempt stops without changing anything more.

import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../shared/config.js';
import { bootId } from '../shared/boot.js';
import { recordedPart, removePartFile, type PartRef } from '../shared/files.js';
import { pidAlive } from '../shared/lease.js';
import type { Logger } from '../shared/log.js';
import { formatDuration } from '../shared/parse.js';
import { redactUrl } from '../shared/redact.js';
import type { Split, Task } from '../shared/model.js';
import { partPathFor } from '../shared/paths.js';
import type { ResponseInfo, TaskStore, TaskFence } from '../store/index.js';
import { backoffDelay, classifyError, download, downloadSplit, fencedError, nameFromResponse, pickFreePath, TokenBucket, TransferError, upload } from '../transfer/index.js';
import type { DownloadCallbacks, DownloadRequest, ResponseMeta } from '../transfer/index.js';
import { conditionalFor, derivedDecision, DestinationExists, existingFile, expectedSha256, finishUnfetched, type Conditional } from './batch.js';
import { formatPartBoot, planPart } from './ownership.js';

/**
 * Why the worker stopped an attempt itself. `lease-lost`: the worker lost its lease; `fenced`: the
 * task's claim moved on (taken over). Both stop the attempt without any further write.
 */
export type StopReason = 'pause' | 'cancel' | 'shutdown' | 'conditions' | 'timeout' | 'lease-lost' | 'fenced';

export interface Active {
  task: Task;
  /** The task and the claim this attempt holds: every store write of the attempt carries it. */
  fence: TaskFence;
  /**
   * The claim, when the attempt started while it was committing (null: claimed before it started).
   * Until it is known the attempt may send its request, nothing more (`claimHeld`).
   */
  claim: Promise<Task | null> | null;
  /** The partial file this attempt writes, once recorded. */
  part: PartRef | null;
  origin: string;
  abort: AbortController;
  stopReason: StopReason | null;
  bytes: number;
  total: number | null;
  durable: number;
  /** For the speed shown in status: bytes and time at the last sample. */
  sample: { bytes: number; at: number; speed: number | null };
  dirty: boolean;
  /** The transfer's bandwidth limit; the worker sets its rate (see applyRates in worker.ts). */
  bucket: TokenBucket;
  /** A split download's segment table as last made durable, for the next progress flush. */
  segments: string | null;
  /** Connections to its origin beyond the first that a split download holds (perHost counts them). */
  extra: number;
  /** The body is all in: the file is being verified and placed, and the transfer's slot is free (see worker.ts). */
  placing: boolean;
  /**
   * Started to send its request behind another response on a busy connection (pipelining), and
   * still waiting: it takes no slot until its response is the connection's current one (worker.ts).
   */
  behind: boolean;
}

export interface AttemptContext {
  store: TaskStore;
  log: Logger;
  config: () => Config;
  /** Paths chosen by attempts still in flight, so two tasks never derive the same name. */
  reserved: Set<string>;
  /** More connections for a split download, within perHost across every task (absent: none). */
  connections?: { acquire(a: Active): Promise<boolean>; release(a: Active): void };
  /** The attempt's body is all in: its slot may go to the next transfer (absent: it holds it to the end). */
  received?(a: Active): void;
}

/** A task waiting for disk space looks again this often. */
const DISK_RECHECK_MS = 5_000;
/** A task this host cannot write is left to the other workers of a shared store for at least this long. */
const LEAVE_MS = 5_000;

/**
 * A destination error on a shared store, where this host cannot write the task's directory (a share
 * not mounted here, say): another host's worker may well can. The task is left to them, not failed.
 */
export function leaveToOthers(shared: boolean, code: string, dirWritable: boolean): boolean {
  return shared && code === 'E_DEST' && !dirWritable;
}

function writableDir(dir: string): boolean {
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
    return fs.statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/** Whether the attempt holds its claim: at once when it was claimed before starting, else once the claim is known. */
async function claimHeld(a: Active): Promise<boolean> {
  return !a.claim || (await a.claim) !== null;
}

/**
 * May this attempt go as far as its request before its claim is known? A plain GET of a fresh file:
 * its request changes nothing, and nothing else happens before the response's output is chosen
 * (which waits for the claim). Uploads, split downloads, resumes, --skip-existing and --if-changed
 * do more first, so they wait for the claim before anything.
 */
function requestsAhead(t: Task, split: Split): boolean {
  return t.kind === 'download' && t.method === 'GET' && !t.skipExisting && !t.ifChanged && !splits(t, split) && t.partPath == null;
}

/** Does a GET of this task go to the split download (--split, or a split file to continue)? */
export function splits(t: Pick<Task, 'method' | 'segments'>, split: Split): boolean {
  return t.method === 'GET' && (split !== 1 || t.segments != null);
}

export async function runAttempt(ctx: AttemptContext, a: Active): Promise<void> {
  const { store, log } = ctx;
  const t = a.task;
  const fence = a.fence;
  const cfg = ctx.config();
  let chosen: string | null = null;
  let conditional: Conditional | null = null;
  const fencedOut = () => log.write(t.session, `task ${t.id}: taken over by another worker (or canceled); this attempt stopped without changing anything`);
  if (!requestsAhead(t, t.split ?? cfg.split) && !(await claimHeld(a))) return void fencedOut();
  try {
    if (t.kind === 'upload') {
      const r = await upload(
        {
          file: t.uploadFile!, expectedSize: t.uploadSize ?? 0, url: t.url, method: t.method === 'POST' ? 'POST' : 'PUT', headers: t.headers,
          allowDowngrade: t.allowDowngrade, stallTimeoutMs: cfg.stallTimeout, insecure: t.insecure, caFile: t.caFile,
          proxy: t.proxy, netrcFile: t.netrcFile, cookiesFile: t.cookiesFile,
        },
        { signal: a.abort.signal, onProgress: (sent) => ((a.bytes = sent), (a.dirty = true)), throttle: a.bucket.throttle() },
      );
      if (r.methodChangedTo) log.write(t.session, `task ${t.id}: redirect changed the request to ${r.methodChangedTo}`);
      if (r.protocol && !(await store.recordResponse(fence, { protocol: r.protocol }))) return void fencedOut();
      const ok = await store.finishTask(fence, { state: 'completed', httpStatus: r.httpStatus, finalUrl: r.finalUrl, bytesSent: r.bytesSent, responseBody: r.responseBody });
      if (ok) log.write(t.session, `task ${t.id}: uploaded ${r.bytesSent} bytes to ${r.finalUrl} (HTTP ${r.httpStatus})`);
      else fencedOut();
      return;
    }
    const part = planPart(t, { boot: bootId(), pid: process.pid, alive: pidAlive, shared: store.shared });
    const resume = t.output && part.recorded ? { offset: t.resumeOffset, etag: t.etag, lastModified: t.lastModified } : null;
    // (A split file's resume is logged by the split download: segment by segment.)
    if (resume && !t.segments) log.write(t.session, `task ${t.id}: resuming from ${part.trustLength ? 'the bytes in' : `byte ${t.resumeOffset} of`} ${part.recorded!.path}${part.copy ? ' (copied: its previous worker may still be running)' : ''}`);
    // --skip-existing / --if-changed decide before a request when the destination is known (a resume
    // has decided already: an earlier attempt of it found something to fetch).
    if (!resume && t.skipExisting && t.output && existingFile(t.output)) return void (await finishUnfetched(ctx, fence, t, 'skipped', t.output, null));
    if (!resume && t.ifChanged) conditional = await conditionalFor(store, t);
    /** What the response said, recorded together with the partial file (one write). */
    let response: ResponseInfo = {};
    const req: DownloadRequest = {
      url: t.url, method: t.method, headers: conditional ? [...t.headers, ...conditional.headers] : t.headers, allowDowngrade: t.allowDowngrade,
      output: t.output,
      // --if-changed replaces a changed file, derived name or not.
      outputFixed: t.outputFixed || t.ifChanged,
      resume, part, sha256Expected: expectedSha256(t, t.output), expectReceive: t.expectReceive, stallTimeoutMs: cfg.stallTimeout,
      insecure: t.insecure, caFile: t.caFile, proxy: t.proxy, netrcFile: t.netrcFile, cookiesFile: t.cookiesFile,
      maxSize: t.maxSize ?? cfg.maxFileSize, minFreeSpace: cfg.minFreeSpace, dir: t.dir,
    };
    // --split (or a split file to continue): several range connections, else one.
    const split = t.split ?? cfg.split;
    const fetchFile = !conditional && splits(t, split)
      ? (rq: DownloadRequest, cb: DownloadCallbacks) => downloadSplit(rq, {
        ...cb,
        extraConnection: async () => (await ctx.connections?.acquire(a)) ?? false,
        releaseConnection: () => ctx.connections?.release(a),
        onSegments: (table) => {
          a.segments = table;
          a.dirty = true;
        },
        log: (message) => log.write(t.session, `task ${t.id}: ${message}`),
      }, { split, minSplitSize: cfg.minSplitSize, perHost: cfg.perHost, table: t.segments })
      : download;
    const r = await fetchFile(
      req,
      {
        signal: a.abort.signal,
        throttle: a.bucket.throttle(),
        chooseOutput: async (meta: ResponseMeta) => {
          if (!(await claimHeld(a))) throw fencedError();
          // Asked again when a split download starts the file over: the name chosen first stays.
          chosen = t.output ?? chosen ?? (await deriveOutput(ctx, t, meta));
          // A derived name's line of --checksums applies once the name is known (verified after the body).
          req.sha256Expected = expectedSha256(t, chosen);
          a.total = meta.totalBytes;
          a.bytes = meta.startOffset;
          response = {
            finalUrl: meta.finalUrl, httpStatus: meta.status, bytesExpected: meta.totalBytes ?? t.expectReceive, etag: meta.etag,
            lastModified: meta.lastModified, output: chosen, bytesReceived: meta.startOffset, protocol: meta.protocol,
            ...(req.sha256Expected !== t.sha256Expected ? { sha256Expected: req.sha256Expected } : {}),
          };
          if (meta.startOffset === 0 && resume) log.write(t.session, `task ${t.id}: server sent the whole resource (HTTP ${meta.status}); starting over`);
          return chosen;
        },
        onPartFile: async (p, meta) => {
          // The kept prefix is fsync'd when the part file is opened or copied: it is the durable offset now.
          // The segment table goes with its file (null: not a split download's file, an older table no longer applies).
          const info: ResponseInfo = {
            ...(meta ? response : {}), partPath: p.path, partId: p.id, partBoot: formatPartBoot(bootId(), process.pid, p.direct), resumeOffset: p.offset, segments: p.segments ?? null,
          };
          if (!meta) info.bytesReceived = p.offset;
          if (!(await store.recordResponse(fence, info))) return false;
          a.part = { path: p.path, id: p.id };
          a.segments = p.segments ?? null;
          a.durable = p.offset;
          a.bytes = p.offset;
          return true;
        },
        stillOwner: () => store.holdsClaim(fence),
        onReceived: () => ctx.received?.(a),
        ...(a.behind ? { behind: () => void (a.behind = false) } : {}),
        onProgress: (bytes, total) => {
          a.bytes = bytes;
          a.total = total;
          a.dirty = true;
        },
        onDurable: (offset) => {
          a.durable = offset;
          a.dirty = true;
        },
      },
    );
    if (conditional && r.httpStatus === 304) return void (await finishUnfetched(ctx, fence, t, 'not-modified', conditional.output, r.finalUrl));
    if (t.expectReceive && r.bytes > 2 * t.expectReceive) {
      log.write(t.session, `task ${t.id}: received ${r.bytes} bytes, more than twice the expected ${t.expectReceive}`);
    }
    if (r.output == null) {
      // HEAD, 204, 205, 304: no body, so no file; a fixed -o is not created and is free again.
      const none = await store.finishTask(fence, { state: 'completed', httpStatus: r.httpStatus, finalUrl: r.finalUrl, output: null, sha256: null, bytesReceived: 0, outcome: 'no-body' });
      if (!none) return void fencedOut();
      log.write(t.session, `task ${t.id}: completed without a file: HTTP ${r.httpStatus} to ${t.method} has no body`);
      // A resumed task's partial file has nothing left to become: the lineage's, so ours to remove (the commit above held the claim).
      if (removePartFile(a.part ?? recordedPart(t))) log.write(t.session, `task ${t.id}: removed its partial file`);
      return;
    }
    const done = await store.finishTask(fence, { state: 'completed', httpStatus: r.httpStatus, finalUrl: r.finalUrl, output: r.output, sha256: r.sha256, bytesReceived: r.bytes });
    log.write(t.session, done ? `task ${t.id}: completed ${r.output} (${r.bytes} bytes, sha256 ${r.sha256})` : `task ${t.id}: finished after it was ${a.stopReason ?? 'taken over or changed'}; file kept at ${r.output}`);
  } catch (raw) {
    // Not failures: --skip-existing found a derived destination, or --if-changed got its 304.
    if (raw instanceof DestinationExists && !a.stopReason) return void (await finishUnfetched(ctx, fence, t, 'skipped', raw.output, null));
    if (conditional && !a.stopReason && raw instanceof TransferError && raw.extra.httpStatus === 304) {
      return void (await finishUnfetched(ctx, fence, t, 'not-modified', conditional.output, raw.extra.finalUrl ?? null));
    }
    const err = raw instanceof TransferError ? raw : classifyError(raw);
    await settleFailure(ctx, a, err, chosen ?? t.output);
  } finally {
    if (chosen) ctx.reserved.delete(chosen);
  }
}

/**
 * Choose a free name for a derived output. Attempts look concurrently (each look waits on the disk),
 * and the name is reserved in one synchronous step: one that another attempt reserved while this one
 * looked is looked for again, so two attempts in flight never pick the same free name.
 */
async function deriveOutput(ctx: AttemptContext, t: Task, meta: ResponseMeta): Promise<string> {
  const name = nameFromResponse(meta.dispositionName, meta.finalUrl);
  for (;;) {
    const inUse = await ctx.store.outputsInUse(t.dir, t.id);
    const taken = { has: (p: string) => ctx.reserved.has(p) || inUse.has(p) };
    let out = await pickFreePath(t.dir, name, taken);
    if (t.skipExisting || t.ifChanged) {
      // A batch run again finds its own files: the server's name itself, never a numbered copy.
      const wanted = path.join(path.resolve(t.dir), name);
      const decision = derivedDecision({
        skipExisting: t.skipExisting, ifChanged: t.ifChanged, wanted, free: out, taken: taken.has(wanted),
        exists: !!existingFile(wanted), hasPart: !!existingFile(partPathFor(wanted)),
      });
      if (decision === 'skip') throw new DestinationExists(wanted);
      if (decision === 'use') out = wanted;
    }
    if (!ctx.reserved.has(out)) {
      ctx.reserved.add(out);
      return out;
    }
  }
}

async function settleFailure(ctx: AttemptContext, a: Active, err: TransferError, output: string | null): Promise<void> {
  const { store, log } = ctx;
  const t = a.task;
  const fence = a.fence;
  const cfg = ctx.config();
  const now = Date.now();
  // Another worker owns the task now, this worker lost its lease, or the claim this attempt started
  // ahead of was refused (a command paused or canceled the task first): nothing more is written anywhere.
  if (a.stopReason === 'lease-lost' || a.stopReason === 'fenced' || err.code === 'E_FENCED' || !(await claimHeld(a))) {
    log.write(t.session, `task ${t.id}: taken over by another worker (or canceled); this attempt stopped without changing anything`);
    return;
  }
  const partial = err.extra.partial;
  const offset = partial?.offset ?? 0;
  const error = { code: err.code, message: err.message };
  const splitKept = err.extra.bytesKept != null ? ` (${err.extra.bytesKept} bytes kept over its segments)` : '';
  // A split file keeps more than its first contiguous bytes: every segment's durable part counts as received.
  const kept = partial ? { resumeOffset: offset, bytesReceived: err.extra.bytesKept ?? offset } : { resumeOffset: 0, bytesReceived: 0 };
  const fenced = (applied: boolean) => {
    if (!applied) log.write(t.session, `task ${t.id}: not recorded: the task was taken over or changed meanwhile`);
    return applied;
  };
  if (a.stopReason === 'cancel') {
    // The canceled task's partial file is this lineage's: the attempt removes it (cancel moved the claim on).
    removePartFile(a.part ?? recordedPart(t));
    log.write(t.session, `task ${t.id}: canceled; partial file removed`);
    return;
  }
  const segments = err.extra.segments !== undefined ? { segments: err.extra.segments } : {};
  if (partial && !fenced(await store.recordResponse(fence, { etag: partial.etag, lastModified: partial.lastModified, output: partial.output, ...segments }))) return;
  switch (a.stopReason) {
    case 'pause':
      if (fenced(await store.recordStopped(fence, kept))) log.write(t.session, `task ${t.id}: paused at byte ${offset}${splitKept}`);
      return;
    case 'shutdown':
      if (fenced(await store.requeue(fence, { notBefore: null, reason: null, ...kept }))) log.write(t.session, `task ${t.id}: stopped by worker shutdown at byte ${offset}${splitKept}`);
      return;
    case 'conditions':
      if (fenced(await store.requeue(fence, { notBefore: null, reason: 'conditions', ...kept }))) {
        log.write(t.session, `task ${t.id}: paused until conditions allow discretionary transfers (byte ${offset}${splitKept})`);
      }
      return;
    case 'timeout':
      if (fenced(await store.finishTask(fence, { state: 'failed', error: resourceTimeoutError(cfg.resourceTimeout), bytesReceived: offset }))) {
        log.write(t.session, `task ${t.id}: failed: not finished within resourceTimeout`);
      }
      return;
    case null:
      break;
  }
  if (err.extra.waitFor === 'disk-space') {
    if (fenced(await store.requeue(fence, { notBefore: now + DISK_RECHECK_MS, reason: 'disk-space', error, ...kept }))) log.write(t.session, `task ${t.id}: waiting for disk space: ${err.message}`);
    return;
  }
  if (leaveToOthers(store.shared, err.code, writableDir(t.dir))) {
    if (fenced(await store.requeue(fence, { notBefore: now + LEAVE_MS, reason: 'retry', error, leave: true, ...kept }))) {
      log.write(t.session, `task ${t.id}: this host cannot write ${t.dir} (${err.message}); left to another worker of the shared store`);
    }
    return;
  }
  if ((err.extra.finalUrl || err.extra.httpStatus) && !fenced(await store.recordResponse(fence, { finalUrl: err.extra.finalUrl, httpStatus: err.extra.httpStatus }))) return;
  const maxAttempts = t.maxAttempts ?? cfg.maxAttempts;
  if (err.transient && maxAttempts != null && t.attempts >= maxAttempts) {
    if (fenced(await store.finishTask(fence, { state: 'failed', error, bytesReceived: offset, httpStatus: err.extra.httpStatus, finalUrl: err.extra.finalUrl }))) {
      log.write(t.session, `task ${t.id}: failed after ${t.attempts} attempt(s) (maxAttempts ${maxAttempts}): ${err.code}: ${err.message}`);
    }
    return;
  }
  if (err.transient) {
    const delay = Math.max(err.extra.retryAfterMs ?? 0, backoffDelay(t.attempts, cfg.retryBaseDelay, cfg.retryMaxDelay));
    if (fenced(await store.requeue(fence, { notBefore: now + delay, reason: 'retry', error, ...kept }))) {
      log.write(t.session, `task ${t.id}: attempt ${t.attempts} failed (${err.code}: ${err.message}); retrying in ${formatDuration(delay)}`);
    }
    return;
  }
  if (fenced(await store.finishTask(fence, { state: 'failed', error, bytesReceived: offset, httpStatus: err.extra.httpStatus, finalUrl: err.extra.finalUrl }))) {
    log.write(t.session, `task ${t.id}: failed: ${err.code}: ${err.message} (${redactUrl(t.url)}${output ? ` -> ${path.basename(output)}` : ''})`);
  }
}

export function resourceTimeoutError(ms: number) {
  return { code: 'E_RESOURCE_TIMEOUT', message: `not finished within resourceTimeout (${formatDuration(ms)}) of being added` };
}
