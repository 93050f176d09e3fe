// The contract between the worker and the transfer code. src/transfer knows nothing of the store:
// the worker hands it a request and callbacks, and gets back a result or a TransferError.

import type { PartRef } from '../shared/files.js';
import type { Header, ProxySettings } from '../shared/model.js';
import type { FreeSpaceRule } from '../shared/parse.js';

export type { PartRef } from '../shared/files.js';

export interface TlsOptions {
  /** Skip certificate verification (per task, `--insecure`). */
  insecure: boolean;
  /** A PEM file of extra CAs to trust (`--ca-file`). */
  caFile: string | null;
}

/**
 * Where a request goes and which credentials it may carry besides its own headers, as recorded with
 * the task at `add`. The files are read when the transfer starts; their contents are never stored.
 */
export interface NetworkOptions {
  /** null or absent: every request goes direct (the worker's own environment is never used). */
  proxy?: ProxySettings | null;
  /** Credentials per host for requests whose URL and headers carry none. */
  netrcFile?: string | null;
  /** A Netscape cookie file: the matching cookies go with every request (each redirect hop too). */
  cookiesFile?: string | null;
}

export interface ResumePoint {
  /** Bytes of the partial file known to be durable (fsync'd): where a resume starts unless `part.trustLength`. */
  offset: number;
  etag: string | null;
  lastModified: string | null;
}

export interface DownloadRequest extends TlsOptions, NetworkOptions {
  url: string;
  method: string;
  headers: Header[];
  /** `https` → `http` redirects are refused unless this is set. */
  allowDowngrade: boolean;
  /**
   * The destination when it is already known (`-o`, or a resume of a task whose name was derived
   * earlier). null: the name is chosen from the final response through `chooseOutput`.
   */
  output: string | null;
  /** The user chose the path (`-o`): the final rename may replace an existing file. */
  outputFixed: boolean;
  /** Continue from the lineage's partial file (see `part`). Only meaningful when `output` is set. */
  resume: ResumePoint | null;
  /**
   * Which partial file this attempt may use and how. Absent: a task recorded by an older bgdl, whose
   * partial file is `<output>.bgdl-part` by name when `resume` is set, trusted up to `resume.offset`.
   */
  part?: PartPlan;
  sha256Expected: string | null;
  /** Used for the free-space check when the server sends no length. */
  expectReceive: number | null;
  /** The file may not grow past this many bytes (E_TOO_LARGE, permanent); null or absent: no bound. */
  maxSize?: number | null;
  /** The directory a derived output goes to: its free space is checked before the request. */
  dir?: string | null;
  /** Free space never written below: the attempt waits for disk-space instead. Absent: no reserve. */
  minFreeSpace?: FreeSpaceRule | null;
  /** No body bytes (or no response headers) for this long aborts the attempt (E_STALL, transient). */
  stallTimeoutMs: number;
  /** At most this many redirects (default 20). */
  maxRedirects?: number;
}

/**
 * The partial-file ownership rules for one attempt, decided by the worker (see planPart): only the
 * recorded file of the task's lineage is ever opened, adopted or removed; any other file at the usual
 * name `<output>.bgdl-part` makes the attempt wait (E_OUTPUT_BUSY).
 */
export interface PartPlan {
  /** The lineage's recorded partial file, or null when it has none yet. */
  recorded: PartRef | null;
  /** Resume from the recorded file's whole length (written since this boot), not only from `resume.offset`. */
  trustLength: boolean;
  /** Its previous writer may still be running (a frozen worker): continue in a copy, never in place. */
  copy: boolean;
  /** Unique in the lineage (the claim): names a fresh file `<output>.<tag>.bgdl-part` when the usual name is ours already. */
  tag: string;
}

/** The partial file an attempt writes: recorded (fenced) before a byte of the body goes into it. */
export interface PartInUse {
  path: string;
  /** `dev:ino`. */
  id: string;
  /** Bytes it holds that the attempt keeps (fsync'd). */
  offset: number;
  /** A split download's segment table for this file (recorded with it); null or absent: not split. */
  segments?: string | null;
  /**
   * Written with direct I/O, several writes at once: should its writer die, its length may run past a
   * byte not yet written, so only the durable offset is kept (see ownership.ts).
   */
  direct?: boolean;
}

/** What the final response said, before its body is written. */
export interface ResponseMeta {
  finalUrl: string;
  status: number;
  /** The whole resource's length when known (Content-Length of a 200, the total of a 206's Content-Range). */
  totalBytes: number | null;
  etag: string | null;
  lastModified: string | null;
  /** The filename from Content-Disposition (`filename*` preferred), raw (not yet made safe). */
  dispositionName: string | null;
  /** Where the body starts in the file: the resume offset for an accepted 206, else 0. */
  startOffset: number;
  /** `HTTP/1.1` or `HTTP/2`: what the final response came over. */
  protocol: string | null;
}

/**
 * A transfer's bandwidth limit: charges `bytes` and returns how long to wait (ms) before reading more.
 * `limited()` says whether a rate applies now (it may come or go during a transfer): while none does,
 * a body's chunks go on whole instead of in pieces of the smallest burst.
 */
export interface Throttle {
  (bytes: number): number;
  limited(): boolean;
}

export interface DownloadCallbacks {
  /** Aborting stops the attempt; the transfer fsyncs the part file and throws a TransferError with code E_ABORTED. */
  signal: AbortSignal;
  throttle?: Throttle;
  /**
   * Called once per attempt with the final response, before any body byte is written. Returns the
   * destination path to use (the known `output`, or one derived from the response). It may throw
   * a TransferError (e.g. to wait for disk space).
   */
  chooseOutput(meta: ResponseMeta): Promise<string>;
  /** Called often while bytes arrive; the caller throttles what it stores. */
  onProgress(bytesReceived: number, totalBytes: number | null): void;
  /** Called after an fsync: the first `offset` bytes of the part file are durable, with these validators. */
  onDurable(offset: number): void;
  /**
   * The partial file this attempt will write, before a byte goes into it: after a takeover's copy
   * (`meta` null), and once the response is judged (`meta` set, after chooseOutput). The caller records
   * it together with what the response said, fenced; false means this attempt no longer owns the task:
   * it stops (E_FENCED) and removes only a file it created itself. Absent: always owned (tests).
   */
  onPartFile?(part: PartInUse, meta: ResponseMeta | null): Promise<boolean>;
  /** Asked just before the final rename (cheap): does this attempt still own the task? */
  stillOwner?(): Promise<boolean>;
  /**
   * Every byte of the body has come from the network and the connection is done with: what remains
   * is writing what is still in memory (a small body that came with its head: naming, creating and
   * recording its file first), verifying the file and placing it (fsync, rename, directory fsync).
   * Called at most once; not called when the body fails before it is all in.
   */
  onReceived?(): void;
  /**
   * The request may be sent behind another response on a busy HTTP/1.1 connection to its origin
   * (pipelining, src/transfer/h1.ts); called once it no longer waits: its response is the
   * connection's current one, or the request went another way. Absent: it waits for a connection
   * of its own.
   */
  behind?(): void;
}

export interface DownloadResult {
  /** null when the response had no body (HEAD, 204, 205, 304): no file was created. */
  output: string | null;
  finalUrl: string;
  httpStatus: number;
  bytes: number;
  sha256: string | null;
  /** 'no-body': completed without a file. */
  outcome?: 'no-body';
}

export interface UploadRequest extends TlsOptions, NetworkOptions {
  file: string;
  /** The size recorded at `bgdl upload`: a file whose size changed since fails the task. */
  expectedSize: number;
  url: string;
  method: 'PUT' | 'POST';
  headers: Header[];
  allowDowngrade: boolean;
  stallTimeoutMs: number;
  maxRedirects?: number;
}

export interface UploadCallbacks {
  signal: AbortSignal;
  onProgress(bytesSent: number): void;
  throttle?: Throttle;
}

export interface UploadResult {
  finalUrl: string;
  httpStatus: number;
  bytesSent: number;
  /** The first 64 KiB of the response body, as text. */
  responseBody: string;
  /** A 301/302/303 turned the request into a GET (recorded on the task). */
  methodChangedTo: string | null;
  protocol: string | null;
}

/** Where a waiting task goes instead of failing. */
export type WaitKind = 'disk-space';

/** A failed attempt, classified. `transient` failures are retried with backoff by the worker. */
export class TransferError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly transient: boolean,
    readonly extra: {
      httpStatus?: number;
      finalUrl?: string;
      /** From Retry-After, in milliseconds. */
      retryAfterMs?: number;
      /** The task should wait for this rather than count a failure. */
      waitFor?: WaitKind;
      /** What survives on disk for the next attempt (absent: nothing to resume from). */
      partial?: ResumePoint & { output: string };
      /** A split download's segment table as last made durable (what survives of each segment). */
      segments?: string;
      /** The durable bytes of all its segments together (`partial.offset` is only the first contiguous run). */
      bytesKept?: number;
    } = {},
  ) {
    super(message);
    this.name = 'TransferError';
  }
}
