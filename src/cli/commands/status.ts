// `bgdl status [ID…] [-s NAME] [--state STATE] [--all]`: the tasks as they stand (starting a worker if
// work was left behind). With more tasks than fit on a screen, a summary: per-session totals and a
// screenful of rows.

import { FINAL_STATES, type Task, type TaskState } from '../../shared/model.js';
import type { TaskBrief, TaskTotals } from '../../store/index.js';
import { ensureWorker, openStore, requireSession, touchSession, type Ctx } from '../context.js';
import { filterOf } from '../selection.js';

export interface StatusOptions {
  session?: string;
  /** `--state STATE[,STATE…]`. */
  state?: string;
  /** Only the fields the table shows (faster with many tasks). */
  brief?: boolean;
}

export async function status(ctx: Ctx, ids: number[], o: StatusOptions & { brief: true }): Promise<TaskBrief[]>;
export async function status(ctx: Ctx, ids: number[], o: StatusOptions & { brief?: false }): Promise<Task[]>;
export async function status(ctx: Ctx, ids: number[], o: StatusOptions): Promise<Task[] | TaskBrief[]> {
  const filter = filterOf(o);
  const store = await openStore(ctx);
  let tasks: Task[] | TaskBrief[];
  if (ids.length) {
    tasks = await store.getTasks(ids);
    tasks = tasks.filter((t) => (!filter.session || t.session === filter.session) && (!filter.states || filter.states.includes(t.state)));
  } else {
    if (filter.session) {
      await requireSession(store, filter.session);
      await touchSession(ctx, store, filter.session);
    }
    tasks = o.brief ? await store.listBriefTasks(filter) : await store.listTasks(filter);
  }
  await ensureWorker(ctx, store);
  return tasks;
}

/** What `bgdl status` without IDs shows: every row, or (too many for the screen) a summary. */
export interface StatusView {
  /** Per-session totals; null when every task is listed. */
  totals: TaskTotals[] | null;
  /** The rows to show: every task, or the chosen screenful (recently finished, running, queued, paused). */
  tasks: TaskBrief[];
  /** Tasks left out of the rows, by state (all zero when every task is listed). */
  hidden: Record<TaskState, number>;
}

/** How many rows of each state a summary shows, in `rows` rows at most. */
export type RowQuota = Record<TaskState, number>;

const UNFINISHED: readonly TaskState[] = ['running', 'queued', 'paused'];

/**
 * Share `rows` rows out between states: the most recently finished tasks get a quarter (at least 3),
 * the unfinished the rest (running first, then queued, then paused); a share one side cannot fill
 * goes to the other.
 */
export function rowQuota(counts: Record<TaskState, number>, rows: number): RowQuota {
  const unfinished = UNFINISHED.reduce((n, s) => n + counts[s], 0);
  const finished = FINAL_STATES.reduce((n, s) => n + counts[s], 0);
  let f = Math.min(finished, Math.max(3, Math.floor(rows / 4)));
  const u = Math.min(unfinished, rows - f);
  f = Math.min(finished, rows - u);
  const quota = { queued: 0, running: 0, paused: 0, completed: 0, failed: 0, canceled: 0 };
  let left = u;
  for (const s of UNFINISHED) left -= quota[s] = Math.min(counts[s], left);
  // Finished rows are picked by time across the three states (see statusView); the quota is their total.
  quota.completed = f;
  return quota;
}

/**
 * `screenRows`: lines the table may take (the terminal's height, or a fixed number off a terminal).
 * `all` lists every task whatever their number.
 */
export async function statusView(ctx: Ctx, o: { session?: string; all?: boolean; screenRows: number }): Promise<StatusView> {
  const store = await openStore(ctx);
  if (o.session) {
    await requireSession(store, o.session);
    await touchSession(ctx, store, o.session);
  }
  const none = { queued: 0, running: 0, paused: 0, completed: 0, failed: 0, canceled: 0 };
  let view: StatusView;
  const totals = o.all ? null : await store.taskTotals({ session: o.session });
  const total = totals?.reduce((n, t) => n + Object.values(t.counts).reduce((a, b) => a + b, 0), 0) ?? 0;
  // The table is a header and a row a task; keep a line for the prompt.
  if (!totals || total <= o.screenRows - 2) {
    view = { totals: null, tasks: await store.listBriefTasks({ session: o.session }), hidden: none };
  } else {
    const counts = { ...none };
    for (const t of totals) for (const s of Object.keys(counts) as TaskState[]) counts[s] += t.counts[s];
    // Summary lines (one a session), a blank line, the header, the "not shown" line and the prompt.
    const rows = Math.max(10, o.screenRows - totals.length - 4);
    const quota = rowQuota(counts, rows);
    let finished: TaskBrief[] = [];
    if (quota.completed > 0) {
      for (const state of FINAL_STATES) finished.push(...(await store.briefTasksPage({ session: o.session, state, limit: quota.completed })));
      finished = finished.sort((a, b) => (b.finishedAt ?? 0) - (a.finishedAt ?? 0) || b.id - a.id).slice(0, quota.completed).reverse();
    }
    const tasks = [...finished];
    for (const state of UNFINISHED) if (quota[state] > 0) tasks.push(...(await store.briefTasksPage({ session: o.session, state, limit: quota[state] })));
    const hidden = { ...counts };
    for (const t of tasks) hidden[t.state]--;
    view = { totals, tasks, hidden };
  }
  await ensureWorker(ctx, store);
  return view;
}
