// `bgdl wait [ID…] [-s NAME] [--timeout D]`: follow tasks until each is final, with progress on a
// terminal. Exit 1 when a waited task failed or was canceled, or the timeout came first.

import { WaitFailedError } from '../../shared/errors.js';
import { isFinal, type Task } from '../../shared/model.js';
import { formatDuration, parseDuration } from '../../shared/parse.js';
import { ensureWorker, openStore, requireSession, touchSession, type Ctx } from '../context.js';
import { makeReporter } from '../progress.js';

export interface WaitOptions {
  session?: string;
  timeout?: string;
}

const POLL_MS = 200;
const ENSURE_MS = 2_000;

/** Waits; `onSettled` sees the final tasks before a failure is thrown (so --json can print them). */
export async function waitFor(ctx: Ctx, ids: number[], o: WaitOptions, onSettled: (tasks: Task[]) => void = () => {}): Promise<Task[]> {
  const timeoutMs = o.timeout !== undefined ? parseDuration(o.timeout, '--timeout') : null;
  const store = await openStore(ctx);
  let watched: number[];
  if (ids.length) {
    watched = (await store.getTasks(ids)).map((t) => t.id);
  } else {
    if (o.session) {
      await requireSession(store, o.session);
      await touchSession(ctx, store, o.session);
    }
    watched = (await store.listTasks({ session: o.session, states: ['queued', 'running', 'paused'] })).map((t) => t.id);
  }
  const reporter = await makeReporter(ctx.isTTY);
  const started = Date.now();
  let lastEnsure = 0;
  let tasks: Task[] = [];
  try {
    for (;;) {
      tasks = await store.getTasks(watched);
      reporter.update(tasks);
      if (tasks.every((t) => isFinal(t.state))) break;
      const now = Date.now();
      if (now - lastEnsure >= ENSURE_MS) {
        lastEnsure = now;
        await ensureWorker(ctx, store); // a worker that died is replaced, so waiting never hangs on a crash
      }
      if (timeoutMs != null && now - started >= timeoutMs) {
        onSettled(tasks);
        const open = tasks.filter((t) => !isFinal(t.state)).length;
        throw new WaitFailedError(`timed out after ${formatDuration(timeoutMs)} with ${open} task(s) unfinished (they continue in the background)`, 'E_WAIT_TIMEOUT');
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    reporter.stop();
  }
  onSettled(tasks);
  const bad = tasks.filter((t) => t.state !== 'completed');
  if (bad.length) {
    const what = bad.map((t) => `${t.id} ${t.state}${t.error ? ` (${t.error.code})` : ''}`).join(', ');
    throw new WaitFailedError(`${bad.length} of ${tasks.length} task(s) did not complete: ${what}`);
  }
  return tasks;
}
