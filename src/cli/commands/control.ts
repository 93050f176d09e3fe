// `bgdl pause|resume|cancel|retry (ID… | -s NAME | --state STATE | --all)`: change task states; the
// worker notices within a moment and stops (pause, cancel) or starts (resume, retry) the transfer.

import { recordedPart, removePartFile } from '../../shared/files.js';
import { pidAlive } from '../../shared/lease.js';
import type { TaskAction, TransitionResult } from '../../store/index.js';
import { ensureWorker, leaseTimeout, openStore, requireSession, touchSession, type Ctx } from '../context.js';
import { controlTarget, type SelectionOptions } from '../selection.js';

export async function control(ctx: Ctx, action: TaskAction, ids: number[], o: SelectionOptions = {}): Promise<TransitionResult> {
  const target = controlTarget(action, ids, o);
  const store = await openStore(ctx);
  if (!Array.isArray(target) && target.session) await requireSession(store, target.session);
  const result = await store.transition(target, action);
  if (action === 'cancel') {
    // Cancel moved each task's claim on, so a late writer is fenced. A running transfer's partial file
    // is removed by its worker as it stops; with no live worker (it died, or is frozen past its
    // lease), and for tasks not running, the command removes the lineage's recorded file itself.
    let live: boolean | null = null;
    for (const t of result.changed) {
      if (t.kind !== 'download') continue;
      if (result.previous.get(t.id) === 'running') {
        live ??= await store.liveWorker(Date.now(), leaseTimeout(ctx), pidAlive);
        if (live) continue;
      }
      removePartFile(recordedPart(t));
    }
    // A partial file left to a worker that then loses its lease (frozen) is removed by the next worker.
  }
  for (const s of new Set(result.changed.map((t) => t.session))) await touchSession(ctx, store, s);
  await ensureWorker(ctx, store);
  return result;
}
