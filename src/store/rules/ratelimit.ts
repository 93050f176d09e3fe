// The hook relaunch rate limiter (man page, HOOKS): tasks added from inside a hook start after a delay that
// doubles with each hook run of the session in a streak: 0 for the first run, then base, 2×base, … up
// to max. A streak ends when a person runs bgdl for the session at a terminal, or when the next hook
// run comes later than twice the current delay plus base after the previous one (the delay elapsed,
// and the tasks it held had time to run, without the session relaunching its hook).

export function rateLimitDelay(count: number, base: number, max: number): number {
  if (count <= 1) return 0;
  return Math.min(base * 2 ** (count - 2), max);
}

/** The streak count after a hook run at `now`, given the previous count and previous run time. */
export function nextRateLimitCount(prevCount: number, prevRunAt: number | null, now: number, base: number, max: number): number {
  if (prevCount === 0 || prevRunAt == null) return 1;
  const window = 2 * rateLimitDelay(prevCount, base, max) + base;
  return now - prevRunAt > window ? 1 : prevCount + 1;
}

/** The rate-limiter state a session keeps. */
export interface RateLimitState {
  rateLimitCount: number;
  rateLimitLastRunAt: number | null;
}

export interface RateLimitConfig {
  base: number;
  max: number;
}

/** The start delay of a task added now (from a hook or not) to a session in this state. */
export function enqueueDelay(s: RateLimitState, fromHook: boolean, rl: RateLimitConfig): number {
  return fromHook ? rateLimitDelay(s.rateLimitCount, rl.base, rl.max) : 0;
}

/** The state after a hook run starts at `now` (the step every backend stores). */
export function hookRunStep(s: RateLimitState, now: number, rl: RateLimitConfig): RateLimitState {
  return { rateLimitCount: nextRateLimitCount(s.rateLimitCount, s.rateLimitLastRunAt, now, rl.base, rl.max), rateLimitLastRunAt: now };
}
