// The segment planner of a split download (`--split N`): how many connections a file gets, where its
// segments lie, which work a free connection takes next (an unassigned segment, else the second half
// of the largest one still running, never below minSplitSize), and the segment table kept with the
// task so that a crash resumes every segment from what it had durably written. Pure: no I/O, no clock.

import { sameFileId } from '../shared/files.js';

/** One segment of the file: bytes [start, end). `pos`: written so far; `done`: of those, fsync'd. */
export interface Seg {
  start: number;
  end: number;
  /** End of the bytes written (in memory of this attempt); `start + written`. */
  pos: number;
  /** End of the bytes known durable (fsync'd): what a crash keeps. */
  done: number;
  /** A connection is working on it. */
  busy: boolean;
  /** Bytes past `pos` being written right now (a split never cuts inside them). */
  writing?: number;
}

/** The segment table as stored with the task (JSON): which partial file, which version, which bytes are durable. */
export interface SegmentTable {
  /** `dev:ino` of the partial file the table describes: a table of another file is never trusted (the inode decides, as for every recorded file: `sameFileId`). */
  part: string;
  total: number;
  etag: string | null;
  lastModified: string | null;
  /** Connections running when it was written (for status; 0 once stopped). */
  running: number;
  /** [start, end, done] for each segment, in file order, covering [0, total). */
  segs: Array<[number, number, number]>;
}

export const MAX_SPLIT = 16;

/**
 * Connections for a file of `total` bytes: N as asked (`auto`: as many as perHost allows, at most 16),
 * but never so many that a segment would be smaller than minSplitSize; at least 1.
 */
export function splitCount(requested: number | 'auto', total: number, minSplitSize: number, perHost: number): number {
  const want = requested === 'auto' ? Math.min(MAX_SPLIT, perHost) : Math.min(MAX_SPLIT, requested);
  const fit = Math.floor(total / Math.max(1, minSplitSize));
  return Math.max(1, Math.min(want, fit));
}

/** `n` segments of (nearly) equal size covering [0, total). */
export function initialSegments(total: number, n: number): Seg[] {
  const count = Math.max(1, Math.min(n, total || 1));
  const size = Math.floor(total / count);
  const segs: Seg[] = [];
  for (let i = 0; i < count; i++) {
    const start = i * size;
    const end = i === count - 1 ? total : start + size;
    segs.push({ start, end, pos: start, done: start, busy: false });
  }
  return segs;
}

export type Work = { kind: 'take'; index: number } | { kind: 'split'; index: number; at: number };

/** Where the segment's next unclaimed byte is: past what is written and what is being written. */
const front = (s: Seg): number => s.pos + (s.writing ?? 0);
const remaining = (s: Seg): number => s.end - front(s);

/**
 * What a free connection does next: the unassigned unfinished segment with the most left, else split
 * the running segment with the most left at the middle of what it has left, past any write in flight (both halves at least
 * minSplitSize), else nothing (null): the connection goes.
 */
export function nextWork(segs: Seg[], minSplitSize: number): Work | null {
  let take = -1;
  let split = -1;
  segs.forEach((s, i) => {
    if (remaining(s) <= 0) return;
    if (!s.busy) {
      if (take === -1 || remaining(s) > remaining(segs[take]!)) take = i;
    } else if (split === -1 || remaining(s) > remaining(segs[split]!)) {
      split = i;
    }
  });
  if (take !== -1) return { kind: 'take', index: take };
  if (split === -1) return null;
  const s = segs[split]!;
  const left = remaining(s);
  if (left < 2 * Math.max(1, minSplitSize)) return null;
  return { kind: 'split', index: split, at: front(s) + Math.floor(left / 2) };
}

/**
 * Apply `work`: mark the segment busy (a split cuts the running segment at `at` and inserts the
 * second half after it). Returns the index of the segment the connection now works on.
 */
export function applyWork(segs: Seg[], work: Work): number {
  if (work.kind === 'take') {
    segs[work.index]!.busy = true;
    return work.index;
  }
  const s = segs[work.index]!;
  const half: Seg = { start: work.at, end: s.end, pos: work.at, done: work.at, busy: true };
  s.end = work.at;
  segs.splice(work.index + 1, 0, half);
  return work.index + 1;
}

/** Bytes from the start of the file durable without a hole: what a single connection could resume from. */
export function contiguousDone(segs: Seg[]): number {
  let at = 0;
  for (const s of segs) {
    if (s.start !== at) break;
    at = s.done;
    if (s.done < s.end) break;
  }
  return at;
}

export const durableBytes = (segs: Seg[]): number => segs.reduce((n, s) => n + (s.done - s.start), 0);
export const writtenBytes = (segs: Seg[]): number => segs.reduce((n, s) => n + (s.pos - s.start), 0);
export const complete = (segs: Seg[]): boolean => segs.every((s) => s.pos >= s.end);

/** The table to store: durable offsets only, neighbouring finished segments merged into one (the table stays small). */
export function tableOf(segs: Seg[], file: { part: string; total: number; etag: string | null; lastModified: string | null }, running: number): SegmentTable {
  const out: Array<[number, number, number]> = [];
  for (const s of segs) {
    const last = out[out.length - 1];
    if (last && last[2] === last[1] && last[1] === s.start && s.done === s.end) {
      last[1] = s.end;
      last[2] = s.done;
    } else {
      out.push([s.start, s.end, s.done]);
    }
  }
  return { ...file, running, segs: out };
}

export const encodeTable = (t: SegmentTable): string => JSON.stringify(t);

/**
 * A stored table, if it can be trusted for the partial file `part`: the same file, segments in order
 * covering [0, total) exactly, each durable offset inside its segment. Anything else: null (start over).
 */
export function decodeTable(json: string | null, part: string | null): SegmentTable | null {
  if (!json || !part) return null;
  let t: SegmentTable;
  try {
    t = JSON.parse(json);
  } catch {
    return null;
  }
  if (!t || typeof t !== 'object' || typeof t.part !== 'string' || !sameFileId(t.part, part) || !Number.isSafeInteger(t.total) || t.total <= 0 || !Array.isArray(t.segs) || t.segs.length === 0) return null;
  let at = 0;
  for (const s of t.segs) {
    if (!Array.isArray(s) || s.length !== 3 || !s.every(Number.isSafeInteger)) return null;
    const [start, end, done] = s;
    if (start !== at || end <= start || done < start || done > end) return null;
    at = end;
  }
  if (at !== t.total) return null;
  return { part: t.part, total: t.total, etag: t.etag ?? null, lastModified: t.lastModified ?? null, running: 0, segs: t.segs };
}

/** The segments a stored table resumes: every segment from its durable offset (a hole is never data). */
export function resumeSegments(t: SegmentTable): Seg[] {
  return t.segs.map(([start, end, done]) => ({ start, end, pos: done, done, busy: false }));
}
