import { describe, expect, it } from 'vitest';
import {
  applyWork, contiguousDone, decodeTable, durableBytes, encodeTable, initialSegments, nextWork, resumeSegments, splitCount, tableOf, type Seg,
} from '../../src/transfer/segments.js';

const MiB = 1024 * 1024;
const seg = (start: number, end: number, pos = start, busy = false, done = pos): Seg => ({ start, end, pos, done, busy });

describe('splitCount', () => {
  it.each([
    // requested, total, minSplitSize, perHost → connections
    [4, 40 * MiB, 4 * MiB, 6, 4],
    [16, 40 * MiB, 4 * MiB, 6, 10], // no segment below minSplitSize
    [4, 10 * MiB, 4 * MiB, 6, 2],
    [4, 3 * MiB, 4 * MiB, 6, 1], // smaller than one segment: one connection
    [1, 100 * MiB, 4 * MiB, 6, 1],
    [20, 1000 * MiB, 1 * MiB, 30, 16], // never more than 16
    ['auto', 100 * MiB, 4 * MiB, 6, 6], // auto: as many as perHost allows
    ['auto', 100 * MiB, 4 * MiB, 40, 16],
    ['auto', 9 * MiB, 4 * MiB, 6, 2],
    ['auto', 0, 4 * MiB, 6, 1],
  ] as const)('%s of %d bytes (min %d, perHost %d) → %d', (req, total, min, perHost, want) => {
    expect(splitCount(req, total, min, perHost)).toBe(want);
  });
});

describe('initialSegments', () => {
  it('covers the file exactly in nearly equal parts', () => {
    const s = initialSegments(1003, 4);
    expect(s.map((x) => [x.start, x.end])).toEqual([[0, 250], [250, 500], [500, 750], [750, 1003]]);
    expect(s.every((x) => x.pos === x.start && x.done === x.start && !x.busy)).toBe(true);
  });
  it('one segment for one connection', () => {
    expect(initialSegments(10, 1).map((x) => [x.start, x.end])).toEqual([[0, 10]]);
  });
});

describe('nextWork', () => {
  it('takes the unassigned segment with the most left first', () => {
    const segs = [seg(0, 100, 10, true), seg(100, 200, 190), seg(200, 300, 220)];
    expect(nextWork(segs, 10)).toEqual({ kind: 'take', index: 2 });
  });
  it('splits the running segment with the most left, at the middle of what is left', () => {
    const segs = [seg(0, 100, 100), seg(100, 200, 120, true), seg(200, 300, 290, true)];
    expect(nextWork(segs, 10)).toEqual({ kind: 'split', index: 1, at: 160 });
  });
  it('never cuts inside a write in flight', () => {
    const running = { ...seg(100, 200, 120, true), writing: 30 };
    expect(nextWork([seg(0, 100, 100), running], 10)).toEqual({ kind: 'split', index: 1, at: 175 });
    expect(nextWork([seg(0, 100, 100), { ...running, writing: 70 }], 10)).toBeNull();
  });
  it('never splits below minSplitSize (both halves at least that big)', () => {
    expect(nextWork([seg(0, 100, 100), seg(100, 200, 161, true)], 20)).toBeNull(); // 39 left < 2 × 20
    expect(nextWork([seg(0, 100, 100), seg(100, 200, 160, true)], 20)).toEqual({ kind: 'split', index: 1, at: 180 });
  });
  it('nothing left: null', () => {
    expect(nextWork([seg(0, 100, 100), seg(100, 200, 200)], 1)).toBeNull();
  });
});

describe('applyWork', () => {
  it('a split cuts the running segment and the connection takes the second half', () => {
    const segs = [seg(0, 100, 100), seg(100, 200, 120, true, 110)];
    const i = applyWork(segs, { kind: 'split', index: 1, at: 160 });
    expect(i).toBe(2);
    expect(segs).toEqual([seg(0, 100, 100), seg(100, 160, 120, true, 110), seg(160, 200, 160, true)]);
  });
  it('a take marks the segment busy', () => {
    const segs = [seg(0, 100, 40)];
    expect(applyWork(segs, { kind: 'take', index: 0 })).toBe(0);
    expect(segs[0]!.busy).toBe(true);
  });
});

describe('durable bytes', () => {
  it('contiguousDone stops at the first hole', () => {
    expect(contiguousDone([seg(0, 100, 100), seg(100, 200, 150), seg(200, 300, 300)])).toBe(150);
    expect(contiguousDone([seg(0, 100, 30), seg(100, 200, 200)])).toBe(30);
    expect(contiguousDone([seg(0, 100, 100), seg(100, 200, 200)])).toBe(200);
  });
  it('durableBytes counts only fsync’d bytes', () => {
    expect(durableBytes([seg(0, 100, 90, true, 50), seg(100, 200, 200)])).toBe(150);
  });
});

describe('segment table (crash recovery)', () => {
  const file = { part: '1:2', total: 300, etag: '"v1"', lastModified: null };

  it('stores durable offsets only, merging finished neighbours', () => {
    const t = tableOf([seg(0, 100, 100), seg(100, 200, 200), seg(200, 260, 250, true, 230), seg(260, 300, 280, true, 270)], file, 2);
    expect(t.segs).toEqual([[0, 200, 200], [200, 260, 230], [260, 300, 270]]);
    expect(t.running).toBe(2);
  });

  it('round-trips, and every segment resumes from its durable offset, never from a hole', () => {
    const t = tableOf([seg(0, 150, 140, true, 120), seg(150, 300, 290, true, 200)], file, 2);
    const back = decodeTable(encodeTable(t), '1:2')!;
    expect(resumeSegments(back)).toEqual([seg(0, 150, 120), seg(150, 300, 200)]);
  });

  it('trusts its own file seen from another host of a shared directory (same inode, another device number)', () => {
    const t = tableOf([seg(0, 150, 140, true, 120), seg(150, 300, 290, true, 200)], file, 2);
    expect(decodeTable(encodeTable(t), '77:2')?.segs).toEqual(t.segs);
  });

  it.each([
    ['another partial file', { ...file, segs: [[0, 300, 10]] }, '9:9'],
    ['a gap between segments', { ...file, segs: [[0, 100, 10], [120, 300, 130]] }, '1:2'],
    ['overlapping segments', { ...file, segs: [[0, 100, 10], [90, 300, 130]] }, '1:2'],
    ['not reaching the end', { ...file, segs: [[0, 100, 10], [100, 290, 130]] }, '1:2'],
    ['a durable offset outside its segment', { ...file, segs: [[0, 100, 101], [100, 300, 130]] }, '1:2'],
    ['no segments', { ...file, segs: [] }, '1:2'],
    ['not JSON', '{', '1:2'],
  ])('refuses a table with %s', (_what, table, part) => {
    expect(decodeTable(typeof table === 'string' ? table : JSON.stringify(table), part)).toBeNull();
  });

  it('no table or no recorded file: nothing to resume', () => {
    expect(decodeTable(null, '1:2')).toBeNull();
    expect(decodeTable(encodeTable(tableOf(initialSegments(300, 2), file, 0)), null)).toBeNull();
  });
});
