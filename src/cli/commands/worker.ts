// `bgdl worker [--ensure]`: run the worker in the foreground (systemd, debugging), or with --ensure
// start a detached one only when there is work and none is alive (cron @reboot).

import { ensureWorker, openStore, type Ctx } from '../context.js';

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
    return await runWorker({ home: ctx.home, env: ctx.env, signal: ac.signal });
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
  }
}
