// How the status summary shares its rows out between states, and how times and totals read.

import { describe, expect, it } from 'vitest';
import { rowQuota } from '../../src/cli/commands/status.js';
import { countsText, localIso, totalsLine } from '../../src/cli/render.js';

const counts = (c: Partial<Record<string, number>>) => ({ queued: 0, running: 0, paused: 0, completed: 0, failed: 0, canceled: 0, ...c });

describe('rowQuota', () => {
  it.each([
    ['only unfinished: all rows to them, running first', counts({ running: 5, queued: 100, paused: 100 }), 40, { running: 5, queued: 35, paused: 0, completed: 0 }],
    ['a quarter to the finished', counts({ queued: 100, completed: 100 }), 40, { queued: 30, completed: 10 }],
    ['at least 3 finished on a small screen', counts({ queued: 100, failed: 100 }), 10, { queued: 7, completed: 3 }],
    ['few unfinished: the finished fill the rest', counts({ running: 2, completed: 500 }), 40, { running: 2, completed: 38 }],
    ['few finished: the unfinished fill the rest', counts({ paused: 500, canceled: 1 }), 40, { paused: 39, completed: 1 }],
    ['queued before paused', counts({ queued: 20, paused: 100 }), 40, { queued: 20, paused: 20 }],
  ])('%s', (_name, c, rows, want) => {
    const q = rowQuota(c, rows);
    expect(q).toMatchObject(want);
    expect(q.running + q.queued + q.paused + q.completed).toBeLessThanOrEqual(rows);
  });
});

describe('summary text', () => {
  it('lists non-zero counts in a fixed order, bytes of the known total and the speed while running', () => {
    expect(countsText(counts({ failed: 2, running: 1 }))).toBe('1 running, 2 failed');
    expect(totalsLine({ session: 's', counts: counts({ running: 1, completed: 2 }), bytesDone: 2048, bytesExpected: 4096, speed: 1024 })).toBe(
      's: 3 tasks (1 running, 2 completed); 2.0 KiB of 4.0 KiB; 1.0 KiB/s',
    );
  });

  it('writes local ISO 8601 times with their offset', () => {
    const ms = Date.UTC(2026, 11, 1, 13, 5, 9);
    const s = localIso(ms);
    expect(s).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$/);
    expect(Date.parse(s)).toBe(ms);
    expect(localIso(null)).toBe('-');
  });
});

describe('fitWidth', () => {
  it('keeps lines that fit and cuts longer ones in the middle to the terminal width', async () => {
    const { fitWidth } = await import('../../src/cli/progress.js');
    expect(fitWidth('short line', 80)).toBe('short line');
    const long = `task 1 completed: /a/${'x'.repeat(200)}/file.bin (1.4 MiB)`;
    const cut = fitWidth(long, 80);
    expect(cut).toHaveLength(79);
    expect(cut.startsWith('task 1 completed: /a/')).toBe(true);
    expect(cut.endsWith('/file.bin (1.4 MiB)')).toBe(true);
    expect(cut).toContain('\u2026');
  });
});
