// One transfer attempt of one task: hand it to src/transfer, then record what happened: completed,
// failed for good, back in the queue to retry, waiting for disk space, or stopped by pause/cancel.

import path from 'node:path';
import type { Config } from '../shared/config.js';
import { removePartFile } from '../shared/files.js';
import type { Logger } from '../shared/log.js';
import { formatDuration } from '../shared/parse.js';
import { redactUrl } from '../shared/redact.js';
import type { Task } from '../shared/model.js';
import { partPathFor } from '../shared/paths.js';
import type { Store } from '../store/index.js';
import { backoffDelay, classifyError, download, nameFromResponse, pickFreePath, TokenBucket, TransferError, upload } from '../transfer/index.js';
import type { DownloadRequest, ResponseMeta } from '../transfer/index.js';
import { conditionalFor, derivedDecision, DestinationExists, existingFile, expectedSha256, finishUnfetched, type Conditional } from './batch.js';

/** Why the worker stopped an attempt itself. */
export type StopReason = 'pause' | 'cancel' | 'shutdown' | 'conditions' | 'timeout';

export interface Active {
  task: Task;
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
}

export interface AttemptContext {
  store: Store;
  log: Logger;
  config: () => Config;
  /** Paths chosen by attempts still in flight, so two tasks never derive the same name. */
  reserved: Set<string>;
}

/** A task waiting for disk space looks again this often. */
const DISK_RECHECK_MS = 5_000;

export async function runAttempt(ctx: AttemptContext, a: Active): Promise<void> {
  const { store, log } = ctx;
  const t = a.task;
  const cfg = ctx.config();
  let chosen: string | null = null;
  let conditional: Conditional | null = null;
  try {
    if (t.kind === 'upload') {
      const r = await upload(
        {
          file: t.uploadFile!, expectedSize: t.uploadSize ?? 0, url: t.url, method: t.method === 'POST' ? 'POST' : 'PUT', headers: t.headers,
          allowDowngrade: t.allowDowngrade, stallTimeoutMs: cfg.stallTimeout, insecure: t.insecure, caFile: t.caFile,
          proxy: t.proxy, netrcFile: t.netrcFile, cookiesFile: t.cookiesFile,
        },
        { signal: a.abort.signal, onProgress: (sent) => ((a.bytes = sent), (a.dirty = true)), throttle: (n) => a.bucket.take(n, Date.now()) },
      );
      if (r.methodChangedTo) log.write(t.session, `task ${t.id}: redirect changed the request to ${r.methodChangedTo}`);
      if (r.protocol) await store.recordResponse(t.id, { protocol: r.protocol });
      await store.finishTask(t.id, { state: 'completed', httpStatus: r.httpStatus, finalUrl: r.finalUrl, bytesSent: r.bytesSent, responseBody: r.responseBody });
      log.write(t.session, `task ${t.id}: uploaded ${r.bytesSent} bytes to ${r.finalUrl} (HTTP ${r.httpStatus})`);
      return;
    }
    const resume = t.output && t.resumeOffset > 0 ? { offset: t.resumeOffset, etag: t.etag, lastModified: t.lastModified } : null;
    if (resume) log.write(t.session, `task ${t.id}: resuming at byte ${resume.offset}`);
    // --skip-existing / --if-changed decide before a request when the destination is known (a resume
    // has decided already: an earlier attempt of it found something to fetch).
    if (!resume && t.skipExisting && t.output && existingFile(t.output)) return void (await finishUnfetched(ctx, t, 'skipped', t.output, null));
    if (!resume && t.ifChanged) conditional = await conditionalFor(store, t);
    const req: DownloadRequest = {
      url: t.url, method: t.method, headers: conditional ? [...t.headers, ...conditional.headers] : t.headers, allowDowngrade: t.allowDowngrade,
      output: t.output,
      // --if-changed replaces a changed file, derived name or not.
      outputFixed: t.outputFixed || t.ifChanged,
      resume, sha256Expected: expectedSha256(t, t.output), expectReceive: t.expectReceive, stallTimeoutMs: cfg.stallTimeout,
      insecure: t.insecure, caFile: t.caFile, proxy: t.proxy, netrcFile: t.netrcFile, cookiesFile: t.cookiesFile,
      maxSize: t.maxSize ?? cfg.maxFileSize, minFreeSpace: cfg.minFreeSpace, dir: t.dir,
    };
    const r = await download(
      req,
      {
        signal: a.abort.signal,
        throttle: (n) => a.bucket.take(n, Date.now()),
        chooseOutput: async (meta: ResponseMeta) => {
          chosen = t.output ?? (await deriveOutput(ctx, t, meta));
          // A derived name's line of --checksums applies once the name is known (verified after the body).
          req.sha256Expected = expectedSha256(t, chosen);
          a.total = meta.totalBytes;
          a.bytes = meta.startOffset;
          await store.recordResponse(t.id, {
            finalUrl: meta.finalUrl, httpStatus: meta.status, bytesExpected: meta.totalBytes ?? t.expectReceive, etag: meta.etag,
            lastModified: meta.lastModified, output: chosen, resumeOffset: Math.min(meta.startOffset, t.resumeOffset), bytesReceived: meta.startOffset,
            ...(req.sha256Expected !== t.sha256Expected ? { sha256Expected: req.sha256Expected } : {}),
            protocol: meta.protocol,
          });
          if (meta.startOffset === 0 && resume) log.write(t.session, `task ${t.id}: server sent the whole resource (HTTP ${meta.status}); starting over`);
          return chosen;
        },
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
    if (conditional && r.httpStatus === 304) return void (await finishUnfetched(ctx, t, 'not-modified', conditional.output, r.finalUrl));
    if (t.expectReceive && r.bytes > 2 * t.expectReceive) {
      log.write(t.session, `task ${t.id}: received ${r.bytes} bytes, more than twice the expected ${t.expectReceive}`);
    }
    if (r.output == null) {
      // HEAD, 204, 205, 304: no body, so no file; a fixed -o is not created and is free again.
      const done = await store.finishTask(t.id, { state: 'completed', httpStatus: r.httpStatus, finalUrl: r.finalUrl, output: null, sha256: null, bytesReceived: 0, outcome: 'no-body' });
      if (done) log.write(t.session, `task ${t.id}: completed without a file: HTTP ${r.httpStatus} to ${t.method} has no body`);
      return;
    }
    const done = await store.finishTask(t.id, { state: 'completed', httpStatus: r.httpStatus, finalUrl: r.finalUrl, output: r.output, sha256: r.sha256, bytesReceived: r.bytes });
    log.write(t.session, done ? `task ${t.id}: completed ${r.output} (${r.bytes} bytes, sha256 ${r.sha256})` : `task ${t.id}: finished after it was ${a.stopReason ?? 'changed'}; file kept at ${r.output}`);
  } catch (raw) {
    // Not failures: --skip-existing found a derived destination, or --if-changed got its 304.
    if (raw instanceof DestinationExists && !a.stopReason) return void (await finishUnfetched(ctx, t, 'skipped', raw.output, null));
    if (conditional && !a.stopReason && raw instanceof TransferError && raw.extra.httpStatus === 304) {
      return void (await finishUnfetched(ctx, t, 'not-modified', conditional.output, raw.extra.finalUrl ?? null));
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
    const taken = await ctx.store.outputsInUse(t.dir, t.id);
    for (const p of ctx.reserved) taken.add(p);
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
  const cfg = ctx.config();
  const now = Date.now();
  const partial = err.extra.partial;
  const offset = partial?.offset ?? 0;
  const error = { code: err.code, message: err.message };
  const kept = partial ? { resumeOffset: offset, bytesReceived: offset } : { resumeOffset: 0, bytesReceived: 0 };
  if (partial) await store.recordResponse(t.id, { etag: partial.etag, lastModified: partial.lastModified, output: partial.output });
  switch (a.stopReason) {
    case 'pause':
      await store.recordStopped(t.id, kept);
      log.write(t.session, `task ${t.id}: paused at byte ${offset}`);
      return;
    case 'cancel':
      removePartFile(output);
      log.write(t.session, `task ${t.id}: canceled; partial file removed`);
      return;
    case 'shutdown':
      await store.requeue(t.id, { notBefore: null, reason: null, ...kept });
      log.write(t.session, `task ${t.id}: stopped by worker shutdown at byte ${offset}`);
      return;
    case 'conditions':
      await store.requeue(t.id, { notBefore: null, reason: 'conditions', ...kept });
      log.write(t.session, `task ${t.id}: paused until conditions allow discretionary transfers (byte ${offset})`);
      return;
    case 'timeout':
      await store.finishTask(t.id, { state: 'failed', error: resourceTimeoutError(cfg.resourceTimeout), bytesReceived: offset });
      log.write(t.session, `task ${t.id}: failed: not finished within resourceTimeout`);
      return;
    case null:
      break;
  }
  if (err.extra.waitFor === 'disk-space') {
    await store.requeue(t.id, { notBefore: now + DISK_RECHECK_MS, reason: 'disk-space', error, ...kept });
    log.write(t.session, `task ${t.id}: waiting for disk space: ${err.message}`);
    return;
  }
  if (err.extra.finalUrl || err.extra.httpStatus) await store.recordResponse(t.id, { finalUrl: err.extra.finalUrl, httpStatus: err.extra.httpStatus });
  const maxAttempts = t.maxAttempts ?? cfg.maxAttempts;
  const exhausted = maxAttempts != null && t.attempts >= maxAttempts;
  if (err.transient && exhausted) {
    await store.finishTask(t.id, { state: 'failed', error, bytesReceived: offset, httpStatus: err.extra.httpStatus, finalUrl: err.extra.finalUrl });
    log.write(t.session, `task ${t.id}: failed after ${t.attempts} attempt(s) (maxAttempts ${maxAttempts}): ${err.code}: ${err.message}`);
    return;
  }
  if (err.transient) {
    const delay = Math.max(err.extra.retryAfterMs ?? 0, backoffDelay(t.attempts, cfg.retryBaseDelay, cfg.retryMaxDelay));
    await store.requeue(t.id, { notBefore: now + delay, reason: 'retry', error, ...kept });
    log.write(t.session, `task ${t.id}: attempt ${t.attempts} failed (${err.code}: ${err.message}); retrying in ${formatDuration(delay)}`);
    return;
  }
  await store.finishTask(t.id, { state: 'failed', error, bytesReceived: offset, httpStatus: err.extra.httpStatus, finalUrl: err.extra.finalUrl });
  log.write(t.session, `task ${t.id}: failed: ${err.code}: ${err.message} (${redactUrl(t.url)}${output ? ` -> ${path.basename(output)}` : ''})`);
}

export function resourceTimeoutError(ms: number) {
  return { code: 'E_RESOURCE_TIMEOUT', message: `not finished within resourceTimeout (${formatDuration(ms)}) of being added` };
}
