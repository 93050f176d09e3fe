import { describe, expect, it } from 'vitest';
import type { BgdlEvent, Session } from '../../src/shared/model.js';
import { nextRateLimitCount, rateLimitDelay } from '../../src/store/rules/ratelimit.js';
import { hookDue, hookRetryDelay, planHook } from '../../src/worker/hooks.js';

const session = (p: Partial<Session> = {}): Session => ({
  name: 'nightly', hook: 'true', launchEvents: true, discretionary: false, createdAt: 0, hookFailures: 0, hookNextAt: null,
  hookLastError: null, hookLastRunAt: null, hookRuns: 0, rateLimitCount: 0, rateLimitLastRunAt: null, limitRate: null, ...p,
});

describe('the idle rule', () => {
  it('runs only when nothing is running or runnable', () => {
    expect(hookDue(session(), { active: 0, runnable: 0 }, 1000)).toBe(true);
    expect(hookDue(session(), { active: 1, runnable: 0 }, 1000)).toBe(false);
    expect(hookDue(session(), { active: 0, runnable: 3 }, 1000)).toBe(false);
  });
  it('needs a hook and launch events', () => {
    expect(hookDue(session({ hook: null }), { active: 0, runnable: 0 }, 1000)).toBe(false);
    expect(hookDue(session({ launchEvents: false }), { active: 0, runnable: 0 }, 1000)).toBe(false);
  });
  it('waits for the retry time after a failure', () => {
    expect(hookDue(session({ hookNextAt: 2000 }), { active: 0, runnable: 0 }, 1000)).toBe(false);
    expect(hookDue(session({ hookNextAt: 2000 }), { active: 0, runnable: 0 }, 2000)).toBe(true);
  });
});

describe('hook retry backoff', () => {
  it('doubles from hookRetryDelay up to an hour', () => {
    expect([0, 1, 2, 3].map((n) => hookRetryDelay(n, 30_000))).toEqual([30_000, 60_000, 120_000, 240_000]);
    expect(hookRetryDelay(20, 30_000)).toBe(3_600_000);
  });
});

describe('the relaunch rate limiter', () => {
  const base = 10_000;
  const max = 3_600_000;
  it('is 0 for the first run of a streak, then base, doubling, capped', () => {
    expect([0, 1, 2, 3, 4].map((n) => rateLimitDelay(n, base, max))).toEqual([0, 0, 10_000, 20_000, 40_000]);
    expect(rateLimitDelay(30, base, max)).toBe(max);
  });
  it('counts runs that come soon after the previous one', () => {
    expect(nextRateLimitCount(0, null, 1000, base, max)).toBe(1);
    expect(nextRateLimitCount(1, 0, base, base, max)).toBe(2); // within 2×0 + base
    expect(nextRateLimitCount(2, 0, 30_000, base, max)).toBe(3); // within 2×10s + 10s
  });
  it('starts a new streak when the delay elapsed without a hook run', () => {
    expect(nextRateLimitCount(1, 0, base + 1, base, max)).toBe(1);
    expect(nextRateLimitCount(3, 0, 2 * 20_000 + base + 1, base, max)).toBe(1);
  });
});

describe('planHook', () => {
  const ev = (id: number): BgdlEvent => ({
    id, session: 'nightly', taskId: id, type: 'completed', url: 'http://x.test/$(touch pwned)', finalUrl: null, output: '/tmp/a',
    bytes: 1, httpStatus: 200, sha256: null, error: null, at: '2026-01-01T00:00:00.000Z', deliveredAt: null,
  });
  it('passes events by environment, file and stdin, never in the command', () => {
    const plan = planHook('/h', session({ hook: 'my-hook --flag' }), [ev(1), ev(2)], { HOME: '/home/me', PATH: '/bin' }, null, 42);
    expect(plan.command).toBe('my-hook --flag');
    expect(plan.env).toMatchObject({ BGDL_SESSION: 'nightly', BGDL_EVENT_COUNT: '2', BGDL_HOOK: '1', BGDL_EVENTS: plan.eventsFile, PATH: '/bin' });
    expect(plan.eventsFile.startsWith('/h/hooks/nightly-42-')).toBe(true);
    const lines = plan.input.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.id)).toEqual([1, 2]);
    expect(lines[0]).not.toHaveProperty('deliveredAt');
    expect(plan.cwd).toBe('/tmp'); // every event's output is in /tmp
  });
  it('runs in $HOME when the batch has no single download directory and no downloadDir is set', () => {
    const other = { ...ev(3), output: '/nonexistent-dir/x' };
    const plan = planHook('/h', session(), [ev(1), other], { HOME: '/home/me' }, null, 1);
    expect(plan.cwd).toBe('/home/me');
    expect(planHook('/h', session(), [other], { HOME: '/home/me' }, '/tmp', 1).cwd).toBe('/tmp');
  });
});
