// The store's shared rules (src/store/rules): pure, so every backend decides the same way.

import { describe, expect, it } from 'vitest';
import { TASK_STATES, type Task } from '../../src/shared/model.js';
import { eventFor } from '../../src/store/rules/events.js';
import { leaseIsStale, nextToken } from '../../src/store/rules/leases.js';
import { enqueueDelay, hookRunStep } from '../../src/store/rules/ratelimit.js';
import { isCandidate, isRunnableNow, wakeAt } from '../../src/store/rules/runnable.js';
import { ACTION_FROM, retryOutputRefusal, transitionRefusal, type TaskAction } from '../../src/store/rules/transitions.js';

describe('transitions', () => {
  it('each action applies exactly to the states ACTION_FROM lists', () => {
    for (const action of Object.keys(ACTION_FROM) as TaskAction[]) {
      for (const state of TASK_STATES) expect(transitionRefusal(state, action) === null, `${action} from ${state}`).toBe(ACTION_FROM[action].includes(state));
    }
  });
  it.each([
    ['paused', 'pause', 'already paused'],
    ['completed', 'pause', 'already completed'],
    ['running', 'resume', 'already running'],
    ['failed', 'resume', 'already failed (use bgdl retry for failed or canceled tasks)'],
    ['canceled', 'cancel', 'already canceled'],
    ['queued', 'retry', 'is queued (only failed or canceled tasks can be retried)'],
  ] as const)('%s + %s: %s', (state, action, reason) => expect(transitionRefusal(state, action)).toBe(reason));
  it('retry is refused when another live task took the output', () => {
    expect(retryOutputRefusal(1, '/d/f', { id: 2, state: 'queued' })).toBe('its output /d/f is now the output of task 2 (queued)');
    expect(retryOutputRefusal(1, '/d/f', { id: 1, state: 'queued' })).toBeNull();
    expect(retryOutputRefusal(1, null, { id: 2, state: 'queued' })).toBeNull();
    expect(retryOutputRefusal(1, '/d/f', undefined)).toBeNull();
  });
});

describe('runnable', () => {
  const t = (p: Partial<Task>) => ({ state: 'queued' as const, beginAt: null, notBefore: null, waitReason: null, ...p });
  it.each([
    [t({}), true, true],
    [t({ state: 'paused' }), false, false],
    [t({ beginAt: 2000 }), false, false],
    [t({ beginAt: 1000 }), true, true],
    [t({ notBefore: 1500, waitReason: 'retry' }), false, false],
    [t({ waitReason: 'conditions' }), true, false],
    [t({ waitReason: 'disk-space' }), true, false],
  ])('%o: candidate %s, runnable %s', (task, candidate, runnable) => {
    expect(isCandidate(task, 1000)).toBe(candidate);
    expect(isRunnableNow(task, 1000)).toBe(runnable);
  });
  it('wakes at the later of its future times, never for a past one', () => {
    expect(wakeAt(t({ beginAt: 2000, notBefore: 3000 }), 1000)).toBe(2000);
    expect(wakeAt(t({ beginAt: 500, notBefore: 3000 }), 1000)).toBe(3000);
    expect(wakeAt(t({ beginAt: 500 }), 1000)).toBeNull();
  });
});

describe('leases', () => {
  const alive = (pid: number) => pid === 7;
  it.each([
    [{ pid: 0, host: 'h', heartbeat: 1000 }, 'h', true],
    [{ pid: 7, host: 'h', heartbeat: 1000 }, 'h', false],
    [{ pid: 8, host: 'h', heartbeat: 1000 }, 'h', true],
    [{ pid: 8, host: 'other', heartbeat: 1000 }, 'h', false],
    [{ pid: 7, host: 'h', heartbeat: -60_000 }, 'h', true],
  ])('%o seen from %s: stale %s', (row, host, stale) => expect(leaseIsStale(row, 1000, 30_000, alive, host)).toBe(stale));
  it('tokens only grow', () => {
    expect(nextToken(undefined)).toBe(1);
    expect(nextToken(4)).toBe(5);
  });
});

describe('rate limiter step', () => {
  const rl = { base: 10, max: 100 };
  it('hook runs in a streak double the delay of hook-added tasks', () => {
    let s = { rateLimitCount: 0, rateLimitLastRunAt: null as number | null };
    const delays: number[] = [];
    for (const at of [0, 1, 2, 3]) {
      s = hookRunStep(s, at, rl);
      delays.push(enqueueDelay(s, true, rl));
    }
    expect(delays).toEqual([0, 10, 20, 40]);
    expect(enqueueDelay(s, false, rl)).toBe(0);
    expect(hookRunStep(s, 10_000, rl).rateLimitCount).toBe(1);
  });
});

describe('events', () => {
  it('redacts credentials and carries the bytes of its kind', () => {
    const base = { session: 's', id: 3, url: 'http://u:p@h/x?token=abc', finalUrl: null, output: '/d/x', bytesSent: 5, bytesReceived: 9, httpStatus: 200, sha256: null, error: null, outcome: null, responseBody: 'ok' };
    const d = eventFor({ ...base, kind: 'download' }, 'completed', 0);
    expect(d).toMatchObject({ url: 'http://***:***@h/x?token=***', bytes: 9, taskId: 3, at: '1970-01-01T00:00:00.000Z' });
    expect('responseBody' in d).toBe(false);
    expect(eventFor({ ...base, kind: 'upload' }, 'failed', 0)).toMatchObject({ bytes: 5, responseBody: 'ok', outcome: null });
  });
});
