// `bgdl session create|set|list|show|rm`: a session's own settings (hook, launch events,
// discretionary) live in the store.

import { parseRate } from '../../shared/bandwidth.js';
import { NotFoundError, UsageError } from '../../shared/errors.js';
import type { Session } from '../../shared/model.js';
import { parseSessionName } from '../../shared/parse.js';
import type { SessionPatch, SessionSummary } from '../../store/index.js';
import { ensureWorker, openStore, touchSession, type Ctx } from '../context.js';

export interface SessionOptions {
  /** commander: a string for --hook CMD, false for --no-hook. */
  hook?: string | false;
  launchEvents?: boolean;
  discretionary?: boolean;
  /** commander: a string for --limit-rate RATE, false for --no-limit-rate. */
  limitRate?: string | false;
}

function patchFrom(o: SessionOptions): SessionPatch {
  if (typeof o.hook === 'string' && o.hook.trim() === '') throw new UsageError('--hook needs a command; use --no-hook to remove the hook');
  return {
    hook: o.hook === false ? null : o.hook,
    launchEvents: o.launchEvents,
    discretionary: o.discretionary,
    limitRate: o.limitRate === false ? null : o.limitRate === undefined ? undefined : parseRate(o.limitRate, '--limit-rate'),
  };
}

export async function sessionCreate(ctx: Ctx, name: string, o: SessionOptions): Promise<Session> {
  const store = await openStore(ctx);
  const s = await store.createSession(parseSessionName(name), patchFrom(o));
  await touchSession(ctx, store, s.name);
  return s;
}

export async function sessionSet(ctx: Ctx, name: string, o: SessionOptions): Promise<Session> {
  const patch = patchFrom(o);
  if (Object.values(patch).every((v) => v === undefined)) {
    throw new UsageError(
      'nothing to set: give --hook CMD, --no-hook, --launch-events, --no-launch-events, --discretionary, --no-discretionary, --limit-rate RATE or --no-limit-rate',
    );
  }
  const store = await openStore(ctx);
  const s = await store.updateSession(parseSessionName(name), patch);
  await touchSession(ctx, store, s.name);
  // A hook set on a session with undelivered events is work for the worker.
  await ensureWorker(ctx, store);
  return s;
}

export async function sessionList(ctx: Ctx): Promise<SessionSummary[]> {
  const store = await openStore(ctx);
  return store.listSessions();
}

export async function sessionShow(ctx: Ctx, name: string): Promise<SessionSummary> {
  const store = await openStore(ctx);
  const s = (await store.listSessions()).find((x) => x.name === parseSessionName(name));
  if (!s) throw new NotFoundError(`no session named '${name}': see bgdl session list`);
  await touchSession(ctx, store, s.name);
  return s;
}

export async function sessionRm(ctx: Ctx, name: string): Promise<void> {
  const store = await openStore(ctx);
  await store.removeSession(parseSessionName(name));
}
