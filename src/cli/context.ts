// What every command needs: the environment, the store, and the promise that a command which leaves
// work behind makes sure a worker is alive to do it (a detached `bgdl worker`).

import { NotFoundError } from '../shared/errors.js';
import { loadConfig } from '../shared/config.js';
import { pidAlive } from '../shared/lease.js';
import { DEFAULT_SESSION, bgdlHome } from '../shared/paths.js';
import { parseSessionName } from '../shared/parse.js';
import { openStore as openBackend, type TaskStore } from '../store/index.js';
import { dismissHeldWorker, releaseHeldWorker, spawnWorker } from './worker-start.js';

export interface Ctx {
  env: NodeJS.ProcessEnv;
  home: string;
  cwd: string;
  /** A person at a terminal (resets the hook rate limiter), not a hook. */
  interactive: boolean;
  fromHook: boolean;
  isTTY: boolean;
}

/**
 * The context of this run. `interactive` and `isTTY` are looked up when first asked (only `wait` and
 * the commands that touch a session ask): process.stdin and process.stderr are streams that Node.js
 * builds, modules and all, at their first use, which cost the worker's start ~6 ms (its stdio is
 * /dev/null, so stdin was a file stream) for answers it never reads.
 */
export function makeCtx(env: NodeJS.ProcessEnv = process.env): Ctx {
  const fromHook = env.BGDL_HOOK === '1';
  let interactive: boolean | undefined;
  let isTTY: boolean | undefined;
  return {
    env,
    home: bgdlHome(env),
    cwd: process.cwd(),
    fromHook,
    get interactive() {
      return (interactive ??= !!process.stdin.isTTY && !fromHook);
    },
    // A terminal with no size (columns 0, as under some `script` set-ups) would make the spinner and
    // bars compute an infinite number of lines: treat it like a pipe.
    get isTTY() {
      return (isTTY ??= !!process.stderr.isTTY && (process.stderr.columns ?? 0) > 0 && !env.CI);
    },
  };
}

export function sessionName(ctx: Ctx, given: string | undefined): string {
  return parseSessionName(given ?? (ctx.env.BGDL_SESSION || DEFAULT_SESSION));
}

let opened: TaskStore | null = null;

export async function openStore(ctx: Ctx): Promise<TaskStore> {
  opened ??= await openBackend(ctx.home, ctx.env);
  return opened;
}

export async function closeStore(): Promise<void> {
  await opened?.close();
  opened = null;
}

/** A session that must exist (status -s, session show, …): exit 3 otherwise. */
export async function requireSession(store: TaskStore, name: string): Promise<void> {
  if (!(await store.getSession(name))) throw new NotFoundError(`no session named '${name}': see bgdl session list`);
}

/** A person touched this session at a terminal: its hook relaunch delay starts over. */
export async function touchSession(ctx: Ctx, store: TaskStore, name: string): Promise<void> {
  if (ctx.interactive) await store.resetRateLimit(name);
}

/** How long a worker may stay silent before its lease is taken over (config leaseTimeout). */
export function leaseTimeout(ctx: Ctx): number {
  return loadConfig(ctx.env).leaseTimeout;
}

/**
 * Start a detached worker when there is work and none is alive (the held one this command started,
 * if any: worker-start.ts). Cheap when one is.
 */
export async function ensureWorker(ctx: Ctx, store: TaskStore): Promise<'running' | 'started' | 'idle'> {
  try {
    return await store.ensureWorker(Date.now(), leaseTimeout(ctx), pidAlive, () => releaseHeldWorker() ?? spawnWorker(ctx.env, store.shared).pid);
  } finally {
    dismissHeldWorker();
  }
}
