// `bgdl pause|resume|cancel|retry ID…`: change task states; the worker notices within a moment and
// stops (pause, cancel) or starts (resume, retry) the transfer.

import { removePartFile } from '../../shared/files.js';
import type { TaskAction, TransitionResult } from '../../store/index.js';
import { ensureWorker, openStore, touchSession, type Ctx } from '../context.js';

export async function control(ctx: Ctx, action: TaskAction, ids: number[]): Promise<TransitionResult> {
  const store = await openStore(ctx);
  const before = new Map((await store.getTasks(ids)).map((t) => [t.id, t.state]));
  const result = await store.transition(ids, action);
  for (const t of result.changed) {
    // A running transfer's partial file is removed by the worker as it stops; the others' here.
    if (action === 'cancel' && t.kind === 'download' && before.get(t.id) !== 'running') removePartFile(t.output);
  }
  for (const s of new Set(result.changed.map((t) => t.session))) await touchSession(ctx, store, s);
  await ensureWorker(ctx, store);
  return result;
}
