// `bgdl wait [ID…] [-s NAME] [--timeout D]`: follow tasks until each is final, with progress on a
// terminal. Exit 1 when a waited task failed or was canceled, or the timeout came first; Ctrl-C stops
// waiting at once (exit 130) and leaves the tasks to the worker.

import { setTimeout as sleep } from 'node:timers/promises';
import { BgdlError, WaitFailedError } from '../../shared/errors.js';
import { isFinal, type Task } from '../../shared/model.js';
import { formatBytes, formatDuration, parseDuration } from '../../shared/parse.js';
import type { TaskStore } from '../../store/index.js';
import { ensureWorker, openStore, requireSession, touchSession, type Ctx } from '../context.js';
import { makeReporter } from '../progress.js';

export interface WaitOptions {
  session?: string;
  timeout?: string;
}

/** The longest wait between two looks (bars move on their own); a commit to the store ends it sooner. */
const POLL_MS = 200;
const ENSURE_MS = 2_000;
/** How often a look also asks whether a command acted again on a task that had ended (see `look`). */
const RECHECK_MS = 1_000;
/**
 * A look at the watched tasks is followed by a pause of at least this many times the CPU time it
 * took, so following a batch costs this process at most about a tenth of a core (its wall time, on
 * a machine the batch keeps busy, was up to ten times its CPU time): a worker commits hundreds of
 * times a second during a batch of small files, and re-reading 2,000 tasks at every commit made
 * `add -i --wait` of 2,000 × 16 KiB take 2.49 s where the same batch without --wait took 1.70 s. A
 * look reads whole only the tasks not final at the last one (see `look`), so as a batch ends its
 * looks shrink to its last few tasks and its end is seen at once.
 */
const LOOK_SHARE = 10;
/** Failed tasks named in the closing error line; the rest are counted. */
const NAMED_FAILURES = 10;

/** The closing line of a wait on several tasks: counts by outcome and the bytes moved. */
export function waitSummary(tasks: Task[], ms: number): string {
  const n = (s: Task['state']) => tasks.filter((t) => t.state === s).length;
  const bytes = tasks.reduce((sum, t) => sum + (t.kind === 'upload' ? t.bytesSent : t.bytesReceived), 0);
  return `${tasks.length} tasks: ${n('completed')} completed, ${n('failed')} failed, ${n('canceled')} canceled; ${formatBytes(bytes)} in ${formatDuration(ms)}`;
}

/** Resolves with the signal's name at the first SIGINT, SIGTERM or SIGQUIT while waiting. */
function interruption(): { signal: Promise<NodeJS.Signals>; done: () => void } {
  let resolve!: (s: NodeJS.Signals) => void;
  const signal = new Promise<NodeJS.Signals>((r) => (resolve = r));
  const handlers = (['SIGINT', 'SIGTERM', 'SIGQUIT'] as const).map((s) => [s, () => resolve(s)] as const);
  for (const [s, h] of handlers) process.on(s, h);
  return { signal, done: () => handlers.forEach(([s, h]) => process.off(s, h)) };
}

/** Sleep `ms` (nothing when not positive), ended early by `signal`. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return ms > 0 ? sleep(ms, undefined, { signal }).catch(() => {}) : Promise.resolve();
}

const EXIT_FOR: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 130, SIGQUIT: 131, SIGTERM: 143 };

/**
 * The watched tasks now. Read whole are only those not final at the last look (`last`, in
 * `watched`'s order): reading every task at every look made `add -i --wait` of 2,000 × 16 KiB notice
 * the batch's end 110-210 ms after its last task ended (each look ~15-20 ms, then a pause ten times
 * as long); now 35-65 ms, most of it the last read of them all. A final task changes again only when
 * a command acts on it (a retry), so with `recheck` the state and claim of the others are looked at
 * too, and those that moved are read again.
 */
async function look(store: TaskStore, watched: number[], last: Task[], recheck: boolean): Promise<Task[]> {
  let stale = last.filter((t) => !isFinal(t.state));
  if (recheck) {
    const now = await store.statesOf(watched);
    stale = last.filter((t) => !isFinal(t.state) || now.get(t.id)?.state !== t.state || now.get(t.id)?.claim !== t.claim);
  }
  if (stale.length === 0) return last;
  const fresh = new Map((await store.getTasks(stale.map((t) => t.id))).map((t) => [t.id, t]));
  return last.map((t) => fresh.get(t.id) ?? t);
}

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
  const stop = interruption();
  const reporter = await makeReporter(ctx.isTTY);
  const started = Date.now();
  let lastEnsure = 0;
  let lastRecheck = 0;
  let tasks: Task[] = [];
  let interrupted: NodeJS.Signals | null = null;
  const interrupted$ = new AbortController();
  void stop.signal.then((s) => {
    interrupted = s;
    interrupted$.abort();
  });
  try {
    for (;;) {
      // What the store looked like before this read: a commit after it (progress, an end) wakes the wait.
      const seen = store.changes();
      const lookStarted = performance.now();
      const cpuBefore = process.cpuUsage();
      const recheck = Date.now() - lastRecheck >= RECHECK_MS;
      if (recheck) lastRecheck = Date.now();
      const first = tasks.length === 0;
      tasks = first ? await store.getTasks(watched) : await look(store, watched, tasks, recheck);
      // What the wait ends with (the summary, --json) is every task read afresh, as it was before looks
      // read only some: the end as this look sees it is checked against all of them.
      if (!first && tasks.every((t) => isFinal(t.state))) tasks = await store.getTasks(watched);
      reporter.update(tasks);
      const lookCpu = process.cpuUsage(cpuBefore);
      const lookCpuMs = (lookCpu.user + lookCpu.system) / 1000;
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
      await store.waitForChange(seen, POLL_MS, interrupted$.signal);
      await pause(lookStarted + LOOK_SHARE * lookCpuMs - performance.now(), interrupted$.signal);
      if (interrupted) {
        const open = tasks.filter((t) => !isFinal(t.state)).length;
        throw new BgdlError(
          `stopped waiting; ${open} task(s) go on in the background (bgdl status shows them, bgdl wait waits again)`,
          EXIT_FOR[interrupted] ?? 130,
          'E_INTERRUPTED',
        );
      }
    }
  } finally {
    stop.done();
    reporter.stop();
  }
  if (tasks.length > 1) process.stderr.write(`bgdl: ${waitSummary(tasks, Date.now() - started)}\n`);
  onSettled(tasks);
  const bad = tasks.filter((t) => t.state !== 'completed');
  if (bad.length) {
    const named = bad.slice(0, NAMED_FAILURES).map((t) => `${t.id} ${t.state}${t.error ? ` (${t.error.code})` : ''}`);
    if (bad.length > NAMED_FAILURES) named.push(`${bad.length - NAMED_FAILURES} more`);
    throw new WaitFailedError(`${bad.length} of ${tasks.length} task(s) did not complete: ${named.join(', ')}`);
  }
  return tasks;
}
