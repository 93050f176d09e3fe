import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { evaluateConditions, insideWindow, nearlyDone, readOnMains } from '../../src/worker/conditions.js';

const at = (h: number, m = 0) => h * 60 + m;

describe('discretionary conditions', () => {
  const limits = { maxLoad: 2, window: null };
  it.each([
    [{ onMains: true, load1: 0.5, minuteOfDay: at(12) }, limits, true, null],
    [{ onMains: false, load1: 0.5, minuteOfDay: at(12) }, limits, false, 'on battery power'],
    [{ onMains: true, load1: 2, minuteOfDay: at(12) }, limits, false, 'machine busy (load 2.00 >= 2)'],
    [{ onMains: true, load1: 1.99, minuteOfDay: at(12) }, limits, true, null],
    [{ onMains: true, load1: 0, minuteOfDay: at(0, 30) }, { maxLoad: 2, window: { start: at(1), end: at(6) } }, false, 'outside the window 01:00-06:00'],
    [{ onMains: true, load1: 0, minuteOfDay: at(1) }, { maxLoad: 2, window: { start: at(1), end: at(6) } }, true, null],
    [{ onMains: true, load1: 0, minuteOfDay: at(6) }, { maxLoad: 2, window: { start: at(1), end: at(6) } }, false, 'outside the window 01:00-06:00'],
    [{ onMains: true, load1: 0, minuteOfDay: at(23, 30) }, { maxLoad: 2, window: { start: at(22), end: at(2) } }, true, null],
    [{ onMains: true, load1: 0, minuteOfDay: at(1, 59) }, { maxLoad: 2, window: { start: at(22), end: at(2) } }, true, null],
    [{ onMains: true, load1: 0, minuteOfDay: at(12) }, { maxLoad: 2, window: { start: at(22), end: at(2) } }, false, 'outside the window 22:00-02:00'],
    [{ onMains: false, load1: 9, minuteOfDay: at(12) }, { maxLoad: 2, window: { start: at(22), end: at(2) } }, false, 'on battery power'],
  ])('%j with %j → ok=%s', (machine, lim, ok, reason) => {
    expect(evaluateConditions(machine, lim)).toEqual({ ok, reason });
  });
  it('a window with equal ends is always open', () => expect(insideWindow(at(5), { start: at(3), end: at(3) })).toBe(true));
  it('nearly done: at least 90% or under 8 MiB left', () => {
    expect(nearlyDone(95, 100)).toBe(true);
    expect(nearlyDone(0, 4 * 1024 * 1024)).toBe(true);
    expect(nearlyDone(100e6, 1e9)).toBe(false);
    expect(nearlyDone(5, null)).toBe(false);
  });
});

describe('power supply reading', () => {
  function supplies(spec: Record<string, Record<string, string>>): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-power-'));
    for (const [name, files] of Object.entries(spec)) {
      fs.mkdirSync(path.join(dir, name));
      for (const [f, v] of Object.entries(files)) fs.writeFileSync(path.join(dir, name, f), v + '\n');
    }
    return dir;
  }
  it('no directory or no battery counts as mains', () => {
    expect(readOnMains('/nonexistent/power')).toBe(true);
    expect(readOnMains(supplies({ AC: { type: 'Mains', online: '0' } }))).toBe(true);
  });
  it('a discharging battery without AC is battery', () => {
    expect(readOnMains(supplies({ BAT0: { type: 'Battery', status: 'Discharging' }, AC: { type: 'Mains', online: '0' } }))).toBe(false);
  });
  it('AC online is mains even while the battery reports discharging', () => {
    expect(readOnMains(supplies({ BAT0: { type: 'Battery', status: 'Discharging' }, AC: { type: 'Mains', online: '1' } }))).toBe(true);
  });
  it('a charging battery is mains', () => {
    expect(readOnMains(supplies({ BAT0: { type: 'Battery', status: 'Charging' } }))).toBe(true);
  });
});
