// `bgdl status [ID…] [-s NAME]`: the tasks as they stand (starting a worker if work was left behind).

import type { Task } from '../../shared/model.js';
import { ensureWorker, openStore, requireSession, touchSession, type Ctx } from '../context.js';

export interface StatusOptions {
  session?: string;
  /** Only the fields the table shows (faster with many tasks). */
  brief?: boolean;
}

export async function status(ctx: Ctx, ids: number[], o: StatusOptions): Promise<Task[]> {
  const store = await openStore(ctx);
  let tasks: Task[];
  if (ids.length) {
    tasks = await store.getTasks(ids);
    if (o.session) tasks = tasks.filter((t) => t.session === o.session);
  } else {
    if (o.session) {
      await requireSession(store, o.session);
      await touchSession(ctx, store, o.session);
    }
    tasks = await store.listTasks({ session: o.session, brief: o.brief });
  }
  await ensureWorker(ctx, store);
  return tasks;
}
