// What "runnable" means, as a predicate on a task's stored fields and the clock. Backends express the
// same conditions in their SQL; the contract tests hold them to these functions.

import type { Task, WaitingFor } from '../../shared/model.js';

type Timing = Pick<Task, 'state' | 'beginAt' | 'notBefore' | 'waitReason'>;

/** Holds that no clock ends: the task waits until the worker (or the disk) releases it. */
export const UNTIMED_HOLDS: readonly WaitingFor[] = ['conditions', 'disk-space'];

/** A scheduling candidate: queued, and its begin-at and not-before times have come. */
export function isCandidate(t: Timing, now: number): boolean {
  return t.state === 'queued' && (t.beginAt == null || t.beginAt <= now) && (t.notBefore == null || t.notBefore <= now);
}

/**
 * Runnable now for the hook's idle test: a candidate not held by conditions or disk space. A session
 * with no running and no runnable task is idle, and its hook may run.
 */
export function isRunnableNow(t: Timing, now: number): boolean {
  return isCandidate(t, now) && !(t.waitReason != null && UNTIMED_HOLDS.includes(t.waitReason));
}

/** When a queued task next becomes a candidate by the clock alone (null: it already is, or never by time). */
export function wakeAt(t: Timing, now: number): number | null {
  if (t.state !== 'queued') return null;
  const times = [t.beginAt, t.notBefore].filter((x): x is number => x != null && x > now);
  return times.length ? Math.min(...times) : null;
}
