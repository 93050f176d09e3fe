// `bgdl prune [-s NAME] [--older-than DURATION] [--state completed|failed|canceled]`: remove finished
// tasks and their delivered events from the store. The only command that deletes tasks.

import { FINAL_STATES } from '../../shared/model.js';
import { parseDuration } from '../../shared/parse.js';
import { openStore, requireSession, type Ctx } from '../context.js';
import { filterOf } from '../selection.js';

export interface PruneOptions {
  session?: string;
  state?: string;
  olderThan?: string;
}

export async function prune(ctx: Ctx, o: PruneOptions, now = Date.now()): Promise<{ tasks: number; events: number }> {
  const filter = filterOf(o, FINAL_STATES);
  const age = o.olderThan !== undefined ? parseDuration(o.olderThan, '--older-than') : undefined;
  const store = await openStore(ctx);
  if (filter.session) await requireSession(store, filter.session);
  return store.prune({ ...filter, ...(age !== undefined ? { finishedBefore: now - age } : {}) });
}
