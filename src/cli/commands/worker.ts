// `bgdl worker [--ensure]`: run the worker in the foreground (systemd, debugging), or with --ensure
// start a detached one only when there is work and none is alive (cron @reboot). A worker on a shared
// store that loses its connection stops its transfers (the worker does that on any store failure)
// and is run again once the store answers, with backoff.

import { StoreError } from '../../shared/errors.js';
import { Logger } from '../../shared/log.js';
import { ensureWorker, openStore, type Ctx } from '../context.js';

/** Waits between reconnection attempts: 1 s doubling to 30 s. */
export function reconnectDelay(failures: number): number {
  return Math.min(1_000 * 2 ** Math.max(0, failures), 30_000);
}

/** What `bgdl worker` says when it ends, if anything (both ways of starting it print this). */
export function workerNotice(result: string): string | null {
  return result === 'another-worker' ? 'another worker is already running for this BGDL_HOME' : null;
}

export async function worker(ctx: Ctx, o: { ensure?: boolean }): Promise<string> {
  if (o.ensure) {
    const store = await openStore(ctx);
    return ensureWorker(ctx, store);
  }
  const { runWorker } = await import('../../worker/index.js');
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGHUP', () => {}); // a worker started from a terminal outlives it
  try {
    for (let failures = 0; ; failures++) {
      try {
        return await runWorker({ home: ctx.home, env: ctx.env, signal: ac.signal });
      } catch (err) {
        if (!(err instanceof StoreError) || err.code !== 'E_STORE_UNREACHABLE' || ac.signal.aborted) throw err;
        const delay = reconnectDelay(failures);
        new Logger(ctx.home).write('worker', `${err.message}; trying again in ${Math.round(delay / 1000)}s`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, delay);
          ac.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
        });
        if (ac.signal.aborted) return 'stopped';
      }
    }
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
  }
}
