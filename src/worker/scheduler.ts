// Which queued tasks start now: a pure function of the candidates, what is running and the limits.

import { priorityRank } from '../shared/model.js';
import type { Candidate } from '../store/index.js';
import type { Verdict } from './conditions.js';

export interface SlotState {
  running: number;
  runningByOrigin: Map<string, number>;
  maxConcurrent: number;
  perHost: number;
  /**
   * Pipelining: by origin, how many more requests could be sent behind another on its busy
   * connections (src/transfer/h1.ts), and which candidates may go that way. Absent: none.
   */
  behind?: { room: Map<string, number>; fits: (t: Candidate) => boolean };
}

export interface Decision {
  start: Candidate[];
  /**
   * Tasks to start with their request sent behind another on a busy connection to their origin:
   * once that origin is at perHost, while fewer than maxConcurrent transfers run. Until its response
   * begins such a task moves no bytes and holds no connection of its own, so it takes no slot.
   */
  behind: Candidate[];
  /** Discretionary tasks held by conditions (with the reason shown in status). */
  hold: { id: number; reason: 'conditions'; detail: string | null }[];
  /** Tasks previously held by conditions that no longer are. */
  release: number[];
}

/** Origins of URLs seen lately: a scheduling pass looks at up to a window of candidates, and parsing each URL again was most of its cost. */
const origins = new Map<string, string>();
const ORIGINS_KEPT = 4096;

export function originOf(url: string): string {
  let origin = origins.get(url);
  if (origin !== undefined) return origin;
  try {
    origin = new URL(url).origin;
  } catch {
    origin = url;
  }
  if (origins.size >= ORIGINS_KEPT) origins.clear();
  origins.set(url, origin);
  return origin;
}

const expected = (t: Candidate) => (t.kind === 'upload' ? (t.expectSend ?? t.uploadSize) : t.expectReceive) ?? Number.MAX_SAFE_INTEGER;

/**
 * Highest priority first; within a priority, ordinary tasks oldest first, then discretionary tasks
 * smallest expected transfer first (the seed: prefer small transfers when a window opens).
 */
export function orderCandidates<T extends Candidate>(tasks: T[]): T[] {
  // The store returns candidates priority then age: sort only when that is not already the order.
  for (let i = 1; i < tasks.length; i++) if (compareCandidates(tasks[i - 1]!, tasks[i]!) > 0) return [...tasks].sort(compareCandidates);
  return [...tasks];
}

function compareCandidates(a: Candidate, b: Candidate): number {
  const p = priorityRank(b.priority) - priorityRank(a.priority);
  if (p) return p;
  if (a.discretionary !== b.discretionary) return a.discretionary ? 1 : -1;
  if (a.discretionary) {
    const e = expected(a) - expected(b);
    if (e) return e;
  }
  return a.id - b.id;
}

/**
 * How many tasks placing a received file may leave their slot, per slot of maxConcurrent. Placing
 * (verify, fsync, link, directory fsync) waits on the disk for two journal commits: for 2,000 small
 * files at the defaults it took 6 ms at the median and 15 ms at the 90th percentile, against ~3.5 ms
 * for the transfer itself, so with one per slot the placing ones often took the transfers' slots (3.8
 * of 6 transfers running on average). With pipelining four deep a batch finishes ~1.4 files a
 * millisecond, so 10-20 ms of placing keeps 15-30 files placing at once, about the 32 that four per
 * slot allowed at the defaults: sixteen per slot measured 1.38-1.90 s against 2.01-2.37 s for the
 * batch, and 0.97-1.07 s of main-thread CPU against 1.10-1.21 s (eight interleaved pairs, the real
 * CLI; 64 per slot measured as 16; at 16 connections, where four per slot allowed 64, 1.45-1.53 s
 * against 1.49-1.59 s). It still bounds the open files when the disk is slow.
 */
export const PLACING_PER_SLOT = 16;
/** …and never more than four per slot allowed at maxConcurrent's top (1000): the open files stay bounded as before. */
export const PLACING_MAX = 4000;

/**
 * Running tasks as maxConcurrent counts them: those placing a received file (no bytes moving, no
 * connection held) leave their slot, up to PLACING_PER_SLOT × `maxConcurrent` of them (PLACING_MAX at
 * most); more than that count again. Those waiting behind another response (`behind`: at most what
 * h1.ts's pipelineCapacity allows, up to PIPELINE_DEPTH per busy connection) take none.
 */
export function transfersCounted(running: Iterable<{ placing: boolean; behind?: boolean }>, maxConcurrent: number): number {
  let all = 0;
  let placing = 0;
  for (const t of running) {
    if (t.behind) continue;
    all++;
    if (t.placing) placing++;
  }
  return all - Math.min(placing, PLACING_PER_SLOT * maxConcurrent, PLACING_MAX);
}

/**
 * A view of the queue, for a pass that may stop early: `origins` holds every origin among the
 * candidates (or more), and the caller knows no candidate needs a hold or a release (none is held,
 * and conditions allow every candidate). The pass then stops once maxConcurrent is reached or every
 * one of those origins is at perHost: what is left could not start. The decision is the same; one
 * host's batch at the defaults (perHost binding) no longer walks the whole window for every started
 * transfer. `ordered`: the candidates are already in orderCandidates' order (kept so as read), so
 * the pass does not look at every one of them to know it.
 */
export interface QueueShape {
  origins: ReadonlySet<string>;
  ordered?: boolean;
}

export function schedule(candidates: Candidate[], slots: SlotState, conditions: Verdict, view?: QueueShape): Decision {
  const decision: Decision = { start: [], behind: [], hold: [], release: [] };
  const origins = view?.origins;
  const byOrigin = new Map(slots.runningByOrigin);
  const room = new Map(slots.behind?.room);
  /** An origin no candidate can start for: at perHost, with no room behind its connections. */
  const closed = (o: string) => (byOrigin.get(o) ?? 0) >= slots.perHost && !((room.get(o) ?? 0) > 0);
  let running = slots.running;
  let full = 0;
  if (origins) for (const o of origins) if (closed(o)) full++;
  for (const t of view?.ordered ? candidates : orderCandidates(candidates)) {
    if (origins && (running >= slots.maxConcurrent || full >= origins.size)) break;
    if (t.discretionary && !conditions.ok) {
      if (t.waitReason !== 'conditions' || t.waitDetail !== conditions.reason) decision.hold.push({ id: t.id, reason: 'conditions', detail: conditions.reason });
      continue;
    }
    if (t.waitReason === 'conditions') decision.release.push(t.id);
    if (running >= slots.maxConcurrent) continue;
    const origin = originOf(t.url);
    const n = byOrigin.get(origin) ?? 0;
    if (n >= slots.perHost) {
      const r = room.get(origin) ?? 0;
      if (r > 0 && slots.behind!.fits(t)) {
        room.set(origin, r - 1);
        decision.behind.push(t);
        if (origins && r === 1 && origins.has(origin)) full++;
      }
      continue;
    }
    byOrigin.set(origin, n + 1);
    if (origins && closed(origin) && origins.has(origin)) full++;
    running++;
    decision.start.push(t);
  }
  return decision;
}
