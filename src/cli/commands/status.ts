// `bgdl status [ID…] [-s NAME] [--state STATE]`: the tasks as they stand (starting a worker if work
// was left behind).

import type { Task } from '../../shared/model.js';
import { ensureWorker, openStore, requireSession, touchSession, type Ctx } from '../context.js';
import { filterOf } from '../selection.js';

export interface StatusOptions {
  session?: string;
  /** `--state STATE[,STATE…]`. */
  state?: string;
  /** Only the fields the table shows (faster with many tasks). */
  brief?: boolean;
}

export async function status(ctx: Ctx, ids: number[], o: StatusOptions): Promise<Task[]> {
  const filter = filterOf(o);
  const store = await openStore(ctx);
  let tasks: Task[];
  if (ids.length) {
    tasks = await store.getTasks(ids);
    tasks = tasks.filter((t) => (!filter.session || t.session === filter.session) && (!filter.states || filter.states.includes(t.state)));
  } else {
    if (filter.session) {
      await requireSession(store, filter.session);
      await touchSession(ctx, store, filter.session);
    }
    tasks = await store.listTasks({ ...filter, brief: o.brief });
  }
  await ensureWorker(ctx, store);
  return tasks;
}
