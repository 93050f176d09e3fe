// A download over several connections (`--split N`): when the server answers a range request with 206
// and the file's length, the file is cut into segments (segments.ts), each fetched with its own
// `Range` + `If-Range` request and written at its offset into the lineage's partial file. A free
// connection takes an unassigned segment or the second half of the largest running one. About once
// a second the file is fsync'd and the segment table (what of each segment is durable) goes to the
// caller, which records it with the task: a crash resumes every segment from there, and a hole is
// never taken for data. A 200 where a 206 was asked, or a changed validator, starts the whole file
// over. The finished file is hashed by reading it back, verified, and moved into place like any other.
// Without ranges (or without a length) it falls back to one connection (download.ts).

import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { partIdOf, removePartFile, type Descriptor, type PartRef } from '../shared/files.js';
import type { Split } from '../shared/model.js';
import { classifyError, classifyStatus } from './classify.js';
import { checkFreeSpace, download, parseContentRange, placeFile, refuseNonRegular } from './download.js';
import { DEFAULT_MAX_REDIRECTS, firstHop, headerValue, requestFollowingRedirects, type FinalResponse } from './http.js';
import { tooLargeError } from './limits.js';
import { parseContentDisposition } from './naming.js';
import { createFresh, fencedError, fileError, inspectRecorded, openRecorded, type OpenedPart } from './partfile.js';
import { FileSink } from './sink.js';
import {
  applyWork, complete, contiguousDone, decodeTable, durableBytes, encodeTable, initialSegments, nextWork, resumeSegments, splitCount, tableOf, writtenBytes, type Seg,
} from './segments.js';
import { TransferError, type DownloadCallbacks, type DownloadRequest, type DownloadResult, type PartPlan, type ResponseMeta } from './types.js';

/** fsync and record the segment table this often while bytes arrive. */
const SYNC_INTERVAL_MS = 1000;

export interface SplitOptions {
  /** Connections wanted: 1-16 or 'auto' (see splitCount). */
  split: Split;
  minSplitSize: number;
  perHost: number;
  /** The segment table stored with the task (JSON), if any. */
  table: string | null;
}

export interface SplitCallbacks extends DownloadCallbacks {
  /**
   * May the download open one more connection to its origin now (perHost counts every connection of
   * every task, across the workers of a shared store)? true: granted; `releaseConnection` gives it back
   * when that connection is done.
   */
  extraConnection(): Promise<boolean>;
  releaseConnection(): void;
  /** The segment table, fsync'd: record it with the task (it is what a crash resumes from). */
  onSegments(table: string): void;
  /** A line for the session's log (fallback to one connection, restarts). */
  log(message: string): void;
}

/** The file changed on the server (or stopped honouring ranges): start the whole file over. */
class Restart extends Error {}

interface FileFacts {
  total: number;
  etag: string | null;
  lastModified: string | null;
}

const isStrongEtag = (etag: string | null): etag is string => !!etag && !etag.startsWith('W/');

/** Send a GET (following redirects) with these extra headers, under `signal`. */
function get(req: DownloadRequest, signal: AbortSignal, extra: Array<[string, string]>): Promise<FinalResponse> {
  const hop = firstHop(req.url, 'GET', req.headers);
  hop.withBody = false;
  hop.headers.push(...extra);
  return requestFollowingRedirects(hop, {
    insecure: req.insecure, caFile: req.caFile, proxy: req.proxy, netrcFile: req.netrcFile, cookiesFile: req.cookiesFile,
    signal, stallTimeoutMs: req.stallTimeoutMs, maxRedirects: req.maxRedirects ?? DEFAULT_MAX_REDIRECTS,
    rules: { allowDowngrade: req.allowDowngrade, anyRedirectDropsBody: false },
  });
}

const drain = (r: FinalResponse) => r.response.body.dump({ limit: 64 * 1024 }).catch(() => {});

/** The headers asking for bytes [from, to) of the version `file` describes. */
function segmentHeaders(from: number, to: number, file: FileFacts): Array<[string, string]> {
  const h: Array<[string, string]> = [['Range', `bytes=${from}-${to - 1}`]];
  const validator = isStrongEtag(file.etag) ? file.etag : file.lastModified;
  if (validator) h.push(['If-Range', validator]);
  return h;
}

/**
 * Is this the answer to a range request for bytes from `from` of the version `file` describes? A 206
 * of the same length and validators starting there: yes. A 200, another length or another validator:
 * the file changed (Restart). Any other status: the attempt fails as that status says.
 */
function checkSegmentResponse(final: FinalResponse, from: number, file: FileFacts): void {
  const { statusCode: status, headers } = final.response;
  if (status === 200 || status === 416) throw new Restart(`the server sent HTTP ${status} to a range request`);
  if (status !== 206) throw classifyStatus(status, headers, Date.now(), final.hop.url.href);
  const range = parseContentRange(headerValue(headers, 'content-range'));
  if (!range || range.start !== from || range.total !== file.total) throw new Restart('the server sent a different range or length');
  const etag = headerValue(headers, 'etag');
  const lastModified = headerValue(headers, 'last-modified');
  if ((file.etag && etag && etag !== file.etag) || (file.lastModified && lastModified && lastModified !== file.lastModified)) {
    throw new Restart('the file changed on the server');
  }
}

function metaOf(final: FinalResponse, file: FileFacts, startOffset: number): ResponseMeta {
  return {
    finalUrl: final.hop.url.href,
    protocol: final.protocol,
    status: final.response.statusCode,
    totalBytes: file.total,
    etag: file.etag,
    lastModified: file.lastModified,
    dispositionName: parseContentDisposition(headerValue(final.response.headers, 'content-disposition')),
    startOffset,
  };
}

/** The state of one split attempt on one partial file. */
interface SplitRun {
  req: DownloadRequest;
  cb: SplitCallbacks;
  opts: SplitOptions;
  output: string;
  part: OpenedPart;
  file: FileFacts;
  segs: Seg[];
  finalUrl: string;
  status: number;
  /** The connection the attempt opened first, and the segment it serves. */
  first?: { seg: Seg; response: FinalResponse };
}

export async function downloadSplit(req: DownloadRequest, cb: SplitCallbacks, opts: SplitOptions): Promise<DownloadResult> {
  // A method other than GET, or the user's own Range: one connection, as asked.
  if (req.method !== 'GET' || req.headers.some(([n]) => n.toLowerCase() === 'range')) return download(req, cb);
  const lineage: PartPlan = req.part ?? { recorded: null, trustLength: false, copy: false, tag: 'n' };
  let current: PartRef | null = lineage.recorded;
  let run: SplitRun | null = null;
  try {
    if (current && req.output) {
      const st = await inspectRecorded(current);
      const table = st ? decodeTable(opts.table, partIdOf(st)) : null;
      // A partial file of one connection (no segment table): it goes on as it began.
      if (st && !table) return download(req, cb);
      // Its previous writer may still run (copy): nothing of it is reused (a copy of a file with holes
      // would copy the holes); the fresh file replaces it once recorded.
      if (table && !lineage.copy) {
        run = await resumeSplit(req, cb, opts, current, table, req.output);
      }
    }
    for (let restarts = 0; ; restarts++) {
      try {
        if (!run) {
          const fresh = await freshSplit(req, cb, opts, lineage, current);
          if ('fallback' in fresh) return download({ ...req, resume: null, part: { ...lineage, recorded: current, trustLength: false, copy: false } }, cb, fresh.fallback ?? undefined);
          run = fresh;
          current = { path: run.part.path, id: run.part.id };
          if (run.segs.length > 1) cb.log(`split into ${run.segs.length} segments of about ${Math.round(run.file.total / run.segs.length)} bytes`);
        }
        await fetchAll(run);
        break;
      } catch (err) {
        if (!(err instanceof Restart) || cb.signal.aborted) throw err;
        if (run) await run.part.fh.close().catch(() => {});
        run = null;
        if (restarts >= 1) {
          // Validators that differ from request to request (servers behind a balancer, say): one connection can still do it.
          cb.log(`${err.message} again: the file looks different on every request; using one connection`);
          return download({ ...req, resume: null, part: { ...lineage, recorded: current, trustLength: false, copy: false } }, cb);
        }
        cb.log(`${err.message}; starting the whole file over`);
      }
    }
    return await finish(run!);
  } catch (err) {
    if (run) await run.part.fh.close().catch(() => {});
    throw failure(err, cb.signal, run);
  }
}

/** A failure as the worker needs it: E_ABORTED when stopped; with the partial file's durable state when there is one. */
function failure(err: unknown, signal: AbortSignal, run: SplitRun | null): TransferError {
  const e = signal.aborted ? new TransferError('E_ABORTED', 'stopped', true) : err instanceof Restart ? new TransferError('E_RESUME', err.message, true) : classifyError(err);
  if (!run || e.code === 'E_CHECKSUM' || e.code === 'E_TOO_LARGE' || e.code === 'E_FENCED') return e;
  const partial = { output: run.output, offset: contiguousDone(run.segs), etag: run.file.etag, lastModified: run.file.lastModified };
  const segments = encodeTable(tableOf(run.segs, { part: run.part.id, ...run.file }, 0));
  return new TransferError(e.code, e.message, e.transient, { ...e.extra, partial, segments, bytesKept: durableBytes(run.segs) });
}

/**
 * A new file: ask for the first minSplitSize bytes. A 206 with the length: the file is split, the
 * first connection goes on with the first segment. Anything else: a fallback to one connection, which
 * handles every other answer (given to it when it is one it would have got itself).
 */
async function freshSplit(
  req: DownloadRequest, cb: SplitCallbacks, opts: SplitOptions, lineage: PartPlan, current: PartRef | null,
): Promise<SplitRun | { fallback: FinalResponse | null }> {
  // A bounded first range: the answer tells whether ranges work and the length; its connection then
  // goes on with the rest of the first segment.
  const final = await get(req, cb.signal, [['Range', `bytes=0-${Math.max(1, opts.minSplitSize) - 1}`]]);
  const { statusCode: status, headers } = final.response;
  const range = status === 206 ? parseContentRange(headerValue(headers, 'content-range')) : null;
  if (!range || range.start !== 0 || !range.total) {
    if (status >= 200 && status < 300) {
      const why = status === 206 ? 'no usable length in its answer to a range request' : `HTTP ${status} to a range request: no ranges`;
      cb.log(`split: the server cannot split this file (${why}); using one connection`);
    }
    // The whole file (200) or an error is what one connection would get too: it goes on with this
    // answer. A slice without a length, or 416 (an empty file), is asked for again without a range.
    if (status === 206 || status === 416) {
      await drain(final);
      return { fallback: null };
    }
    return { fallback: final };
  }
  const file: FileFacts = { total: range.total, etag: headerValue(headers, 'etag'), lastModified: headerValue(headers, 'last-modified') };
  const meta = metaOf(final, file, 0);
  let opened: OpenedPart | null = null;
  try {
    if (req.maxSize != null && file.total > req.maxSize) throw tooLargeError(file.total, req.maxSize, true, { httpStatus: status, finalUrl: meta.finalUrl });
    const output = await cb.chooseOutput(meta);
    await refuseNonRegular(output, req);
    await checkFreeSpace(path.dirname(output), file.total, null, req.minFreeSpace ?? null);
    opened = await createFresh(output, lineage.tag, current);
    const segs = initialSegments(file.total, splitCount(opts.split, file.total, opts.minSplitSize, opts.perHost));
    const table = encodeTable(tableOf(segs, { part: opened.id, ...file }, 0));
    // Recorded (fenced) with its segment table before a byte goes in; only then may an older file of ours go.
    const owned = cb.onPartFile ? await cb.onPartFile({ path: opened.path, id: opened.id, offset: 0, segments: table }, meta) : true;
    if (!owned) throw fencedError();
    if (current && current.id !== opened.id) removePartFile(current);
    const run: SplitRun = { req, cb, opts, output, part: opened, file, segs, finalUrl: meta.finalUrl, status };
    segs[0]!.busy = true;
    run.first = { seg: segs[0]!, response: final };
    return run;
  } catch (err) {
    await drain(final);
    if (opened) {
      await opened.fh.close().catch(() => {});
      removePartFile({ path: opened.path, id: opened.id });
    }
    throw err;
  }
}

/**
 * The lineage's split file: every segment from its durable offset. The first request must still be a
 * 206 of the same version; a 200 or another validator starts the file over (Restart, after which the
 * caller makes a fresh file).
 */
async function resumeSplit(
  req: DownloadRequest, cb: SplitCallbacks, opts: SplitOptions, rec: PartRef, table: NonNullable<ReturnType<typeof decodeTable>>, output: string,
): Promise<SplitRun | null> {
  const file: FileFacts = { total: table.total, etag: table.etag, lastModified: table.lastModified };
  const segs = resumeSegments(table);
  const opened = await openRecorded(rec);
  const run: SplitRun = { req, cb, opts, output, part: opened, file, segs, finalUrl: req.url, status: 206 };
  try {
    const owned = cb.onPartFile ? await cb.onPartFile({ path: opened.path, id: opened.id, offset: contiguousDone(segs), segments: encodeTable(tableOf(segs, { part: opened.id, ...file }, 0)) }, null) : true;
    if (!owned) throw fencedError();
    const work = nextWork(segs, opts.minSplitSize);
    if (!work) {
      // Every byte is durable already: only the ending is left.
      await cb.chooseOutput({ finalUrl: req.url, protocol: null, status: 206, totalBytes: file.total, etag: file.etag, lastModified: file.lastModified, dispositionName: null, startOffset: file.total });
      return run;
    }
    const seg = segs[applyWork(segs, work)]!;
    const final = await get(req, cb.signal, segmentHeaders(seg.pos, seg.end, file));
    try {
      checkSegmentResponse(final, seg.pos, file);
      run.finalUrl = final.hop.url.href;
      const chosen = await cb.chooseOutput(metaOf(final, file, contiguousDone(segs)));
      if (chosen !== output) throw new TransferError('E_RESUME', `cannot resume into ${chosen}: the partial file belongs to ${output}`, true);
    } catch (err) {
      await drain(final);
      throw err;
    }
    cb.log(`split: resuming ${segs.filter((s) => s.pos < s.end).length} unfinished segment(s) of ${segs.length} from their durable offsets`);
    run.first = { seg, response: final };
    return run;
  } catch (err) {
    await opened.fh.close().catch(() => {});
    if (err instanceof Restart) {
      cb.log(`${err.message}; starting the whole file over`);
      return null;
    }
    throw failure(err, cb.signal, run);
  }
}

/** Write `buf` at `pos` completely. */
async function writeAt(fh: Descriptor, buf: Buffer, pos: number): Promise<void> {
  for (let off = 0; off < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos + off);
    if (bytesWritten === 0) throw Object.assign(new Error('no progress writing the partial file'), { code: 'EIO', syscall: 'write' });
    off += bytesWritten;
  }
}

/**
 * Run the connections until every segment is written: the first one on the response already open,
 * more as `extraConnection` grants them (up to the split count), each taking work from the planner
 * until none is left. The first failure stops them all; what was written is fsync'd and kept.
 */
async function fetchAll(run: SplitRun): Promise<void> {
  const { cb, opts, segs, file, part } = run;
  const want = splitCount(opts.split, file.total, opts.minSplitSize, opts.perHost);
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  cb.signal.addEventListener('abort', onAbort, { once: true });
  let error: unknown = null;
  const fail = (err: unknown) => {
    error ??= err;
    stop.abort();
  };
  const running = new Set<Promise<void>>();
  let connections = 0;

  const progress = () => cb.onProgress(writtenBytes(segs), file.total);

  /**
   * One segment over one connection: request it (unless a response is already open), write its bytes
   * at their offsets; a response that covers less than the segment (the first, bounded one) is
   * followed by a request for the rest.
   */
  const fetchSegment = async (seg: Seg, open: FinalResponse | null): Promise<void> => {
    let given = open;
    while (seg.pos < seg.end) {
      const final = given ?? (await get(run.req, stop.signal, segmentHeaders(seg.pos, seg.end, file)));
      if (!given) {
        try {
          checkSegmentResponse(final, seg.pos, file);
        } catch (err) {
          await drain(final);
          throw err;
        }
      }
      given = null;
      // Where this response's bytes end (checked: a 206 with its Content-Range).
      const promised = parseContentRange(headerValue(final.response.headers, 'content-range'))!.end + 1;
      const body = final.response.body;
      try {
        for await (const chunk of body as AsyncIterable<Buffer>) {
          const room = seg.end - seg.pos;
          // The segment was cut by a re-split: this connection is done with it.
          if (room <= 0) break;
          const buf = chunk.length > room ? chunk.subarray(0, room) : chunk;
          seg.writing = buf.length;
          try {
            await writeAt(part.fh, buf, seg.pos);
          } catch (err) {
            throw fileError(part.path, err);
          } finally {
            seg.writing = 0;
          }
          seg.pos += buf.length;
          progress();
          const wait = cb.throttle ? cb.throttle(buf.length) : 0;
          if (wait > 0) await sleep(wait, undefined, { signal: stop.signal });
        }
      } finally {
        if (!body.destroyed && seg.pos < Math.min(seg.end, promised)) body.destroy();
      }
      if (stop.signal.aborted) return;
      if (seg.pos < Math.min(seg.end, promised)) {
        throw new TransferError('E_SHORT_BODY', `the connection ended at byte ${seg.pos}, before byte ${Math.min(seg.end, promised)} it was sending`, true);
      }
    }
  };

  /** A connection: its first segment, then whatever the planner gives it, until nothing is left. */
  const connection = async (first: { seg: Seg; response: FinalResponse | null } | null): Promise<void> => {
    let next = first;
    for (;;) {
      if (!next) {
        const work = nextWork(segs, opts.minSplitSize);
        if (!work) return;
        next = { seg: segs[applyWork(segs, work)]!, response: null };
      }
      try {
        await fetchSegment(next.seg, next.response);
      } finally {
        next.seg.busy = false;
      }
      next = null;
      if (stop.signal.aborted) return;
    }
  };

  const launch = (first: { seg: Seg; response: FinalResponse | null } | null, extra: boolean) => {
    connections++;
    const p: Promise<void> = connection(first)
      .catch(fail)
      .finally(() => {
        connections--;
        running.delete(p);
        if (extra) cb.releaseConnection();
      });
    running.add(p);
  };

  /** Open more connections while there is work, the split count allows and perHost grants them. */
  const more = async (): Promise<void> => {
    const wanted = () => !stop.signal.aborted && connections < want && nextWork(segs, opts.minSplitSize) !== null;
    while (wanted()) {
      if (!(await cb.extraConnection())) return;
      // Asking took a moment (a shared store): the work or the download itself may be gone meanwhile.
      if (!wanted()) return void cb.releaseConnection();
      launch(null, true);
    }
  };

  /** fsync what is written, then hand on the table of what is durable. */
  const syncTable = async (): Promise<void> => {
    const at = new Map(segs.map((s) => [s, s.pos]));
    await part.fh.datasync();
    for (const [s, pos] of at) if (pos > s.done) s.done = Math.min(pos, s.end);
    cb.onSegments(encodeTable(tableOf(segs, { part: part.id, ...file }, stop.signal.aborted ? 0 : connections)));
    cb.onDurable(contiguousDone(segs));
  };

  progress();
  launch(run.first ? { seg: run.first.seg, response: run.first.response } : null, false);
  run.first = undefined;
  await more();
  // The connections now running (status shows them); the durable offsets are those recorded already.
  cb.onSegments(encodeTable(tableOf(segs, { part: part.id, ...file }, connections)));
  try {
    while (running.size > 0) {
      await Promise.race([Promise.allSettled([...running]), sleep(SYNC_INTERVAL_MS, undefined, { ref: false })]);
      if (stop.signal.aborted || running.size === 0) continue;
      await syncTable().catch((err) => fail(fileError(part.path, err)));
      await more();
    }
  } finally {
    cb.signal.removeEventListener('abort', onAbort);
    // Keep what was written: every byte fsync'd and recorded before the attempt ends.
    await syncTable().catch((err) => fail(fileError(part.path, err)));
  }
  if (error) throw error;
  if (!complete(segs)) throw new TransferError('E_SHORT_BODY', 'the segments ended before the file was complete', true);
}

/** Every segment written and fsync'd: hash the file by reading it back, verify, move it into place. */
async function finish(run: SplitRun): Promise<DownloadResult> {
  const { req, cb, part, file, output } = run;
  await part.fh.close().catch(() => {});
  const opened = await openRecorded({ path: part.path, id: part.id });
  let whole: FileSink;
  try {
    // Opening at the file's full length reads it back through the hash: the SHA-256 of the whole file.
    whole = await FileSink.open(opened, file.total, { onDurable: () => {} });
  } catch (err) {
    await opened.fh.close().catch(() => {});
    throw fileError(part.path, err);
  }
  let sha256: string;
  try {
    sha256 = await whole.digest();
  } catch (err) {
    await whole.close();
    throw fileError(part.path, err);
  }
  if (req.sha256Expected && sha256 !== req.sha256Expected.toLowerCase()) {
    await whole.discard();
    throw new TransferError('E_CHECKSUM', `sha256 mismatch: expected ${req.sha256Expected.toLowerCase()}, got ${sha256}`, false);
  }
  const used = await placeFile(whole, output, req, cb);
  return { output: used, finalUrl: run.finalUrl, httpStatus: run.status, bytes: file.total, sha256 };
}
