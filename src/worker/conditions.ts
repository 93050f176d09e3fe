// Whether discretionary tasks may run now: on mains power, machine not busy, inside the window.
// Reading the machine is separate from deciding, so the decision is a pure function of a snapshot.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface MachineState {
  onMains: boolean;
  load1: number;
  /** Local minutes since midnight. */
  minuteOfDay: number;
}

export interface ConditionLimits {
  maxLoad: number;
  window: { start: number; end: number } | null;
}

export interface Verdict {
  ok: boolean;
  /** Which condition holds discretionary tasks, for `status`. */
  reason: string | null;
}

export function insideWindow(minute: number, w: { start: number; end: number }): boolean {
  if (w.start === w.end) return true;
  return w.start < w.end ? minute >= w.start && minute < w.end : minute >= w.start || minute < w.end;
}

const hhmm = (m: number) => `${String(Math.floor(m / 60) % 24).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;

export function evaluateConditions(m: MachineState, limits: ConditionLimits): Verdict {
  if (!m.onMains) return { ok: false, reason: 'on battery power' };
  if (m.load1 >= limits.maxLoad) return { ok: false, reason: `machine busy (load ${m.load1.toFixed(2)} >= ${limits.maxLoad})` };
  if (limits.window && !insideWindow(m.minuteOfDay, limits.window)) {
    return { ok: false, reason: `outside the window ${hhmm(limits.window.start)}-${hhmm(limits.window.end)}` };
  }
  return { ok: true, reason: null };
}

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

/**
 * Power from /sys/class/power_supply (or BGDL_POWER_SUPPLY_DIR): a machine with no battery is on
 * mains; with a battery, it is on mains when an AC/USB supply is online or the battery is not discharging.
 */
export function readOnMains(dir: string): boolean {
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch {
    return true;
  }
  let battery = false;
  let discharging = false;
  let acOnline = false;
  for (const name of entries) {
    const type = readText(path.join(dir, name, 'type'));
    if (type === 'Battery') {
      if (readText(path.join(dir, name, 'present')) === '0') continue;
      battery = true;
      if (readText(path.join(dir, name, 'status')) === 'Discharging') discharging = true;
    } else if (type && readText(path.join(dir, name, 'online')) === '1') {
      acOnline = true;
    }
  }
  if (!battery) return true;
  return acOnline || !discharging;
}

export function readMachine(env: NodeJS.ProcessEnv, now: Date): MachineState {
  return {
    onMains: readOnMains(env.BGDL_POWER_SUPPLY_DIR || '/sys/class/power_supply'),
    load1: env.BGDL_LOADAVG !== undefined ? Number(env.BGDL_LOADAVG) : os.loadavg()[0]!,
    minuteOfDay: now.getHours() * 60 + now.getMinutes(),
  };
}

/** A running discretionary task keeps going when conditions turn bad only if it is nearly done. */
export function nearlyDone(bytes: number, total: number | null): boolean {
  if (total == null || total <= 0) return false;
  return bytes / total >= 0.9 || total - bytes < 8 * 1024 * 1024;
}
