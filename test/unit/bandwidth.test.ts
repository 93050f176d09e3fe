import { describe, expect, it } from 'vitest';
import { fairShares, formatRate, parseRate, parseRateSchedule, scheduledRate, tightest } from '../../src/shared/bandwidth.js';
import { Incoming } from '../../src/transfer/body.js';
import { TokenBucket } from '../../src/transfer/throttle.js';

describe('parseRate', () => {
  it.each([
    ['500K', 500_000],
    ['2M', 2_000_000],
    ['1MiB', 1_048_576],
    ['500K/s', 500_000],
    ['1.5M', 1_500_000],
    ['4096', 4096],
    ['0', null],
    ['none', null],
    ['unlimited', null],
  ])('%s → %s bytes/s', (text, want) => {
    expect(parseRate(text)).toBe(want);
  });

  it.each(['', 'fast', '-1K', '500', '1Q', '1K/h'])('refuses %j', (text) => {
    expect(() => parseRate(text, '--limit-rate')).toThrow(/--limit-rate|rate/);
  });

  it('formats rates for people', () => {
    expect(formatRate(null)).toBe('unlimited');
    expect(formatRate(500_000)).toBe('500K/s');
    expect(formatRate(2_000_000)).toBe('2M/s');
    expect(formatRate(1_500_000)).toBe('1.5M/s');
  });
});

describe('rate schedules', () => {
  const at = (hh: number, mm = 0) => new Date(2026, 0, 15, hh, mm);
  const s = parseRateSchedule('08:00-18:00=500K,18:00-23:00=2M,*=0');

  it.each([
    [7, 59, null],
    [8, 0, 500_000],
    [17, 59, 500_000],
    [18, 0, 2_000_000],
    [22, 59, 2_000_000],
    [23, 0, null],
  ])('%i:%i → %s', (h, m, want) => {
    expect(scheduledRate(s, at(h, m))).toBe(want);
  });

  it('a window may wrap midnight, and * covers the rest', () => {
    const night = parseRateSchedule('22:00-06:00=10M,*=100K');
    expect(scheduledRate(night, at(23))).toBe(10_000_000);
    expect(scheduledRate(night, at(3))).toBe(10_000_000);
    expect(scheduledRate(night, at(6))).toBe(100_000);
    expect(scheduledRate(night, at(12))).toBe(100_000);
  });

  it('the first matching window wins; no window and no * is unlimited', () => {
    const s2 = parseRateSchedule('09:00-17:00=1M,12:00-13:00=5M');
    expect(scheduledRate(s2, at(12, 30))).toBe(1_000_000);
    expect(scheduledRate(s2, at(20))).toBeNull();
    expect(parseRateSchedule('none')).toEqual([]);
  });

  it.each(['08:00-18:00', '8-18=1M', '25:00-26:00=1M', '08:00-08:00=1M', '*=1M,*=2M', '08:00-18:00=fast'])('refuses %j', (text) => {
    expect(() => parseRateSchedule(text)).toThrow(/rateSchedule|rate/);
  });
});

describe('sharing a global cap', () => {
  it('the tightest limit wins', () => {
    expect(tightest(null, 500, null, 300)).toBe(300);
    expect(tightest(null, null)).toBeNull();
  });

  it('splits equally when nobody has a lower limit of its own', () => {
    expect(fairShares(900, [null, null, null])).toEqual([300, 300, 300]);
  });

  it('a transfer limited below its share keeps its limit and the rest goes to the others', () => {
    expect(fairShares(1000, [100, null, null])).toEqual([100, 450, 450]);
    expect(fairShares(1000, [100, 200, 5000])).toEqual([100, 200, 700]);
  });

  it('without a cap each keeps its own limit', () => {
    expect(fairShares(null, [100, null])).toEqual([100, null]);
  });

  it('never hands out more than the cap in total', () => {
    for (const limits of [[null, null, null, null, null, null, null], [10, 20, null, 5000, null], [1, 1, 1]]) {
      const shares = fairShares(1000, limits);
      const total = shares.reduce((a: number, b) => a + (b ?? 0), 0);
      expect(total).toBeLessThanOrEqual(1000);
    }
  });
});

describe('TokenBucket', () => {
  /** A reader that takes chunks as fast as the bucket lets it; returns bytes per millisecond tick. */
  function simulate(bucket: TokenBucket, ms: number, chunk: number, onTick?: (t: number) => void): number[] {
    const perMs = new Array(ms).fill(0);
    let t = 0;
    while (t < ms) {
      onTick?.(t);
      perMs[t] += chunk;
      t += Math.max(1, bucket.take(chunk, t));
    }
    return perMs;
  }
  const windowSum = (a: number[], from: number, len: number) => a.slice(from, from + len).reduce((x, y) => x + y, 0);

  it('keeps every 10-second window within ±10% of the rate', () => {
    const rate = 500_000;
    const perMs = simulate(new TokenBucket(rate, 0), 60_000, 64 * 1024);
    for (let from = 0; from + 10_000 <= 60_000; from += 1_000) {
      const got = windowSum(perMs, from, 10_000);
      expect(got).toBeGreaterThanOrEqual(rate * 10 * 0.9);
      expect(got).toBeLessThanOrEqual(rate * 10 * 1.1);
    }
  });

  it('a rate change acts at once, without a burst of saved-up bytes', () => {
    const bucket = new TokenBucket(200_000, 0);
    const perMs = simulate(bucket, 40_000, 16 * 1024, (t) => {
      if (t >= 20_000 && bucket.limit === 200_000) bucket.setRate(1_000_000, t);
    });
    const before = windowSum(perMs, 10_000, 10_000);
    const after = windowSum(perMs, 30_000, 10_000);
    expect(before).toBeGreaterThanOrEqual(2_000_000 * 0.9);
    expect(before).toBeLessThanOrEqual(2_000_000 * 1.1);
    expect(after).toBeGreaterThanOrEqual(10_000_000 * 0.9);
    expect(after).toBeLessThanOrEqual(10_000_000 * 1.1);
  });

  it('unlimited never waits; limited after unlimited starts from a small burst', () => {
    const bucket = new TokenBucket(null, 0);
    expect(bucket.take(10_000_000, 0)).toBe(0);
    bucket.setRate(100_000, 1);
    expect(bucket.take(100_000, 1)).toBeGreaterThan(500);
  });
});

describe('a body under a throttle (Incoming)', () => {
  /** The least ResponseBody: chunks pushed by the test, handed to the one taker. */
  function body() {
    let taker: ((chunk: Buffer, owned: boolean) => void) | null = null;
    const b = {
      take: (t: (chunk: Buffer, owned: boolean) => void) => void (taker = t),
      done: new Promise<void>(() => {}),
      pause: () => {},
      resume: () => {},
      destroy: () => {},
      destroyed: false,
      dump: async () => {},
      [Symbol.asyncIterator]: () => ({ next: async () => ({ value: undefined, done: true as const }) }),
    };
    return { b, push: (chunk: Buffer) => taker!(chunk, false) };
  }

  it('hands a chunk over whole while no rate applies, in pieces of the smallest burst while one does', () => {
    const bucket = new TokenBucket(null, Date.now());
    const { b, push } = body();
    const incoming = new Incoming(b, bucket.throttle());
    const sizes: number[] = [];
    incoming.start((chunk) => sizes.push(chunk.length));
    push(Buffer.alloc(1024 * 1024));
    expect(sizes).toEqual([1024 * 1024]);
    // A rate comes (a limit set while the transfer runs): the next chunk is charged piece by piece.
    bucket.setRate(100 * 1024 * 1024, Date.now());
    sizes.length = 0;
    push(Buffer.alloc(64 * 1024));
    expect(sizes).toEqual([16 * 1024, 16 * 1024, 16 * 1024, 16 * 1024]);
  });
});
