// Bandwidth rules both programs need: parsing a rate (`--limit-rate`, `maxRate`), parsing and reading a
// rate schedule (`rateSchedule`), and splitting a global cap fairly between running transfers. Pure
// functions of their inputs and the clock; the worker applies them, the CLI validates with them.

import { UsageError } from './errors.js';
import { parseSize } from './parse.js';

/** A rate in bytes per second; null means unlimited. */
export type Rate = number | null;

/**
 * `500K`, `2M`, `1MiB`, `500K/s`, `0` → bytes per second (units as for sizes: K/M/G are 1000s,
 * KiB/MiB/GiB 1024s). `0`, `none` and `unlimited` mean no limit (null).
 */
export function parseRate(text: string, what = 'rate'): Rate {
  const s = text.trim().replace(/\/s$/i, '');
  if (/^(none|unlimited)$/i.test(s)) return null;
  let n: number;
  try {
    n = parseSize(s, what);
  } catch {
    throw new UsageError(`invalid ${what} '${text}': use bytes per second with an optional unit (500K, 2M, 1MiB), or 0 for no limit`);
  }
  if (n === 0) return null;
  // Below this a transfer could not even send its headers in reasonable time.
  if (n < 1024) throw new UsageError(`invalid ${what} '${text}': the smallest limit is 1KiB (1024 bytes per second)`);
  return n;
}

export function formatRate(rate: Rate): string {
  if (rate == null) return 'unlimited';
  for (const [unit, size] of [['G', 1e9], ['M', 1e6], ['K', 1e3]] as const) {
    if (rate >= size) return `${+(rate / size).toFixed(rate % size === 0 ? 0 : 1)}${unit}/s`;
  }
  return `${rate}B/s`;
}

/** One entry of a schedule: minutes after local midnight [start, end) (end ≤ start wraps midnight), or `*`. */
export interface ScheduleEntry {
  start: number | null;
  end: number | null;
  rate: Rate;
}

const CLOCK_RE = /^([01]?\d|2[0-3]):([0-5]\d)$/;

function clockMinutes(text: string, whole: string): number {
  const m = CLOCK_RE.exec(text.trim());
  if (!m) throw new UsageError(`invalid rateSchedule '${whole}': '${text}' is not a time of day such as 08:00`);
  return Number(m[1]) * 60 + Number(m[2]);
}

/**
 * `08:00-18:00=500K,18:00-23:00=2M,*=0`: comma-separated `HH:MM-HH:MM=RATE` windows in local time (a
 * window may wrap midnight: `22:00-06:00`) and an optional `*=RATE` for every other time. The first
 * window that contains the time wins; outside every window and without `*`, no limit. `none` clears.
 */
export function parseRateSchedule(text: string): ScheduleEntry[] {
  const s = text.trim();
  if (s === '' || /^none$/i.test(s)) return [];
  const entries: ScheduleEntry[] = [];
  for (const part of s.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new UsageError(`invalid rateSchedule '${text}': each entry is HH:MM-HH:MM=RATE or *=RATE (e.g. 08:00-18:00=500K,*=0)`);
    const when = part.slice(0, eq).trim();
    const rate = parseRate(part.slice(eq + 1), `rate in rateSchedule '${text}'`);
    if (when === '*') {
      if (entries.some((e) => e.start == null)) throw new UsageError(`invalid rateSchedule '${text}': '*' may appear once`);
      entries.push({ start: null, end: null, rate });
      continue;
    }
    const dash = when.indexOf('-');
    if (dash <= 0) throw new UsageError(`invalid rateSchedule '${text}': '${when}' is not a window such as 08:00-18:00`);
    const start = clockMinutes(when.slice(0, dash), text);
    const end = clockMinutes(when.slice(dash + 1), text);
    if (start === end) throw new UsageError(`invalid rateSchedule '${text}': the window '${when}' is empty`);
    entries.push({ start, end, rate });
  }
  return entries;
}

function contains(e: ScheduleEntry, minute: number): boolean {
  if (e.start == null || e.end == null) return false;
  return e.start < e.end ? minute >= e.start && minute < e.end : minute >= e.start || minute < e.end;
}

/** The schedule's rate at local time `at`: the first window containing it, else `*`, else unlimited. */
export function scheduledRate(schedule: ScheduleEntry[], at: Date): Rate {
  const minute = at.getHours() * 60 + at.getMinutes();
  const hit = schedule.find((e) => contains(e, minute)) ?? schedule.find((e) => e.start == null);
  return hit ? hit.rate : null;
}

/** The tightest of several limits (null = that one does not limit). */
export function tightest(...rates: Rate[]): Rate {
  let out: Rate = null;
  for (const r of rates) if (r != null && (out == null || r < out)) out = r;
  return out;
}

/**
 * Share a global cap between running transfers, each with its own limit (null: none), max-min fair:
 * a transfer whose own limit is below an equal share keeps its limit, and what it leaves is split
 * equally among the others. Without a cap every transfer keeps its own limit.
 */
export function fairShares(cap: Rate, limits: Rate[]): Rate[] {
  if (cap == null) return [...limits];
  const out: Rate[] = new Array(limits.length).fill(null);
  let left = cap;
  let open = limits.map((_, i) => i);
  // Settle the transfers limited below the current equal share, smallest first, until none is.
  for (;;) {
    if (open.length === 0) return out;
    const share = left / open.length;
    const under = open.filter((i) => limits[i] != null && limits[i]! <= share);
    if (under.length === 0) {
      for (const i of open) out[i] = Math.max(1, Math.floor(share));
      return out;
    }
    for (const i of under) {
      out[i] = limits[i]!;
      left -= limits[i]!;
    }
    open = open.filter((i) => !under.includes(i));
  }
}
