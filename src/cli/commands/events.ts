// `bgdl events [-s NAME] [--ack] [--follow]`: undelivered events, the alternative to a hook.

import type { BgdlEvent } from '../../shared/model.js';
import { openStore, requireSession, type Ctx } from '../context.js';

export interface EventsOptions {
  session?: string;
  ack?: boolean;
  follow?: boolean;
}

export async function events(ctx: Ctx, o: EventsOptions): Promise<BgdlEvent[]> {
  const store = await openStore(ctx);
  if (o.session) await requireSession(store, o.session);
  const list = await store.listEvents({ session: o.session, undeliveredOnly: true });
  if (o.ack) await store.ackEvents(list.map((e) => e.id));
  return list;
}

/** Stream events recorded after `afterId` until `signal` aborts; each batch goes to `emit`. */
export async function followEvents(ctx: Ctx, o: EventsOptions, afterId: number, emit: (e: BgdlEvent) => void, signal: AbortSignal): Promise<void> {
  const store = await openStore(ctx);
  let last = afterId;
  while (!signal.aborted) {
    const batch = await store.listEvents({ session: o.session, afterId: last, undeliveredOnly: true });
    for (const e of batch) emit(e);
    if (batch.length) {
      last = batch[batch.length - 1]!.id;
      if (o.ack) await store.ackEvents(batch.map((e) => e.id));
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
