// A token bucket for one transfer's bytes: how long to hold the next chunk so that, over any window of
// a few seconds, the bytes stay within the rate. Time is a parameter, so the rule is tested without a
// clock. The rate may change at any moment (a new limit, the schedule moving on) without a restart.

import type { Rate } from '../shared/bandwidth.js';
import type { Throttle } from './types.js';

/**
 * The burst a bucket may save up: a fifth of a second of the rate, at least 16 KiB (a few socket reads),
 * so a limited transfer never sends a second's worth at once after a pause yet is not held per chunk.
 */
export const BURST_SECONDS = 0.2;
export const MIN_BURST_BYTES = 16 * 1024;

export class TokenBucket {
  private tokens: number;
  private at: number;
  private rate: Rate;

  constructor(rate: Rate, now: number) {
    this.rate = rate;
    this.at = now;
    this.tokens = this.burst();
  }

  get limit(): Rate {
    return this.rate;
  }

  private burst(): number {
    return this.rate == null ? Infinity : Math.max(MIN_BURST_BYTES, this.rate * BURST_SECONDS);
  }

  private refill(now: number): void {
    if (this.rate == null) return;
    const dt = Math.max(0, now - this.at) / 1000;
    this.tokens = Math.min(this.burst(), this.tokens + dt * this.rate);
    this.at = now;
  }

  /** Change the rate from `now` on; tokens saved at the old rate are kept up to the new burst. */
  setRate(rate: Rate, now: number): void {
    this.refill(now);
    this.rate = rate;
    this.at = now;
    this.tokens = rate == null ? Infinity : Math.min(Number.isFinite(this.tokens) ? this.tokens : this.burst(), this.burst());
  }

  /** This bucket as a transfer's Throttle: each call charged at the time it is made. */
  throttle(): Throttle {
    return Object.assign((n: number) => this.take(n, Date.now()), { limited: () => this.rate != null });
  }

  /**
   * Take `n` bytes at `now`; returns how many milliseconds to wait before reading more (0: go on).
   * The bytes already arrived, so the bucket goes into debt and the wait pays it back.
   */
  take(n: number, now: number): number {
    if (this.rate == null) return 0;
    this.refill(now);
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.rate) * 1000);
  }
}
