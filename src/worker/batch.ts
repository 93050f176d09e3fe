// Cron-batch decisions for one attempt: --skip-existing (is the destination already there?),
// --if-changed (which conditional headers, from the file's recorded validators or its mtime), and
// --checksums (which expected sum a destination name takes). Pure functions plus one file look.

import fs from 'node:fs';
import path from 'node:path';
import type { Header, Task } from '../shared/model.js';
import type { DownloadRecord, TaskStore, TaskFence } from '../store/index.js';
import { nameFromResponse, TransferError } from '../transfer/index.js';
import type { AttemptContext } from './attempt.js';

/** What is at a destination: a regular file (followed through a symlink) with its size and mtime, or nothing. */
export interface ExistingFile {
  size: number;
  mtimeMs: number;
}

export function existingFile(p: string): ExistingFile | null {
  try {
    const st = fs.statSync(p);
    return st.isFile() ? { size: st.size, mtimeMs: st.mtimeMs } : null;
  } catch {
    return null;
  }
}

/**
 * The conditional headers of an --if-changed request for a destination that exists. The store's
 * record of the download that wrote it gives If-None-Match (its ETag) and If-Modified-Since (its
 * Last-Modified), but only when it fetched this URL and the file still has the size it wrote; a file
 * with no usable record is compared by its mtime (as `wget -N`). A file whose size differs from what
 * the download wrote was changed here: no condition, fetch it again. No file: no condition.
 */
export function conditionalHeaders(file: ExistingFile | null, record: DownloadRecord | null, url: string): Header[] {
  if (!file) return [];
  if (record && record.url === url) {
    if (record.bytes !== file.size) return [];
    const out: Header[] = [];
    if (record.etag) out.push(['If-None-Match', record.etag]);
    if (record.lastModified) out.push(['If-Modified-Since', record.lastModified]);
    if (out.length) return out;
  }
  return [['If-Modified-Since', new Date(Math.floor(file.mtimeMs / 1000) * 1000).toUTCString()]];
}

/** Whether the user's own headers already make the request conditional (theirs win). */
export function hasConditionalHeader(headers: Header[]): boolean {
  return headers.some(([n]) => /^if-(none-match|modified-since|match|unmodified-since|range)$/i.test(n));
}

/** The expected SHA-256 of a destination: --sha256, else its base name's line of --checksums, else none. */
export function expectedSha256(t: Pick<Task, 'sha256Expected' | 'checksums'>, output: string | null): string | null {
  if (t.sha256Expected) return t.sha256Expected;
  if (!output || !t.checksums) return null;
  return Object.hasOwn(t.checksums, path.basename(output)) ? t.checksums[path.basename(output)]! : null;
}

/**
 * For a derived name under --skip-existing or --if-changed: the destination is the server's name
 * itself, `free` being what pickFreePath found. 'skip': it exists and --skip-existing; 'use': write
 * there (replacing it under --if-changed); 'numbered': the name belongs to another live task or a
 * partial file, so take the free numbered name as usual.
 */
export function derivedDecision(o: { skipExisting: boolean; ifChanged: boolean; wanted: string; free: string; taken: boolean; exists: boolean; hasPart: boolean }):
  'skip' | 'use' | 'numbered' {
  if (o.free === o.wanted) return 'use';
  if (o.taken || o.hasPart || !o.exists) return 'numbered';
  return o.skipExisting ? 'skip' : o.ifChanged ? 'use' : 'numbered';
}

/** Thrown from chooseOutput when --skip-existing finds a derived destination: the body is not wanted. */
export class DestinationExists extends TransferError {
  constructor(readonly output: string) {
    super('E_SKIPPED', `${output} exists (--skip-existing)`, false);
  }
}

/** An --if-changed request: the file it compares and the headers that say so. */
export interface Conditional {
  output: string;
  headers: Header[];
}

/** --if-changed: the file to compare (the destination, or where this URL last landed in its directory, or its URL's name) and the headers. */
export async function conditionalFor(store: TaskStore, t: Task): Promise<Conditional | null> {
  if (hasConditionalHeader(t.headers)) return null;
  const output = t.output ?? (await store.lastOutputOf(t.url, t.dir)) ?? path.join(path.resolve(t.dir), nameFromResponse(null, t.url));
  const headers = conditionalHeaders(existingFile(output), await store.lastDownloadOf(output), t.url);
  return headers.length ? { output, headers } : null;
}

/** Complete a task that wrote nothing: its destination was there (skipped) or the server said 304 (not-modified). */
export async function finishUnfetched(
  ctx: AttemptContext,
  fence: TaskFence,
  t: Task,
  outcome: 'skipped' | 'not-modified',
  output: string,
  finalUrl: string | null,
): Promise<void> {
  const done = await ctx.store.finishTask(fence, {
    state: 'completed', outcome, output, bytesReceived: 0, sha256: null,
    ...(outcome === 'not-modified' ? { httpStatus: 304, finalUrl } : {}),
  });
  const why = outcome === 'skipped' ? 'exists (--skip-existing); not fetched' : 'not modified on the server (HTTP 304); file left as it was';
  if (done) ctx.log.write(t.session, `task ${t.id}: completed: ${output} ${why}`);
}
