// `bgdl pause|resume|cancel|retry (ID… | -s NAME | --state STATE | --all)`: change task states; the
// worker notices within a moment and stops (pause, cancel) or starts (resume, retry) the transfer.

import { removePartFile } from '../../shared/files.js';
import type { TaskAction, TransitionResult } from '../../store/index.js';
import { ensureWorker, openStore, requireSession, touchSession, type Ctx } from '../context.js';
import { controlTarget, type SelectionOptions } from '../selection.js';

export async function control(ctx: Ctx, action: TaskAction, ids: number[], o: SelectionOptions = {}): Promise<TransitionResult> {
  const target = controlTarget(action, ids, o);
  const store = await openStore(ctx);
  if (!Array.isArray(target) && target.session) await requireSession(store, target.session);
  const result = await store.transition(target, action);
  for (const t of result.changed) {
    // A running transfer's partial file is removed by the worker as it stops; the others' here.
    if (action === 'cancel' && t.kind === 'download' && result.previous.get(t.id) !== 'running') removePartFile(t.output);
  }
  for (const s of new Set(result.changed.map((t) => t.session))) await touchSession(ctx, store, s);
  await ensureWorker(ctx, store);
  return result;
}
