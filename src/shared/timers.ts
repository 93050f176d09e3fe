// Timers longer than Node's setTimeout allows (2^31-1 ms, about 24.8 days: a longer delay fires at
// once). A long delay is a chain of shorter ones.

export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LongTimer {
  clear(): void;
}

/** Call `fn` once after `ms` milliseconds, however long; `clear()` cancels it. */
export function setLongTimeout(fn: () => void, ms: number): LongTimer {
  let timer: NodeJS.Timeout;
  const due = Date.now() + ms;
  const arm = (left: number) => {
    timer = setTimeout(() => {
      const rest = due - Date.now();
      if (rest > 0) arm(rest);
      else fn();
    }, Math.min(Math.max(0, left), MAX_TIMER_MS));
  };
  arm(ms);
  return { clear: () => clearTimeout(timer) };
}
