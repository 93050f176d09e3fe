// How the CLI starts the detached worker (context.ts's ensureWorker decides when), and the head start
// `bgdl add` and `bgdl upload` give it. A worker's start is on the path to a transfer's first byte:
// Node.js boots and loads the worker's modules (~55 ms here) before it reads the store, and the
// command that started it had already spent as long booting itself and writing the task. So these
// commands start a worker first thing, held: it loads its modules while the command parses and
// writes, then waits for one byte on its stdin. If the command then starts a worker (ensureWorker
// finds work and no live lease), it records the held one's pid in the lease and sends that byte;
// otherwise (a live worker took the work, bad input, the command died) its stdin ends, and the held
// worker exits having touched nothing: no store, no log line.
// Measured (a 1-byte file, fresh BGDL_HOME, medians of 10): `bgdl add` to the request at the server
// 177-188 ms -> 129-145 ms, and 111-125 ms with no V8 flag for the worker (below); an add's own
// time the same (~1 ms for the lease's look).

import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { childProcess } from '../shared/builtins.js';
import { loadConfig, storeUrl } from '../shared/config.js';
import { workerEnvironment } from '../shared/extra-ca.js';
import { pidAlive } from '../shared/lease.js';
import { bgdlHome } from '../shared/paths.js';
import { leaseLooksLive } from '../store/sqlite/lease-peek.js';

export const BIN_PATH = fileURLToPath(new URL('../../bin/bgdl.js', import.meta.url));

/**
 * libuv's thread pool for the worker (it must be in the environment when the process starts: Node
 * sizes the pool before any of our code runs). Every file operation of a transfer goes through it,
 * and each finished file's fsync holds a thread for milliseconds: with the default 4, a batch of small
 * files queued the next files' opens and looks behind other files' fsyncs. 16 (the most running
 * transfers' fsyncs that usually overlap) measured 4-15% less wall time for 2,000 x 16 KiB. A value
 * the user set is kept.
 */
const WORKER_THREADPOOL = '16';

/** In a held worker's environment (held-worker.ts takes it out first thing): wait for the go on stdin. */
export const HELD = 'BGDL_WORKER_HELD';

/**
 * Start `bgdl worker` detached: at once, or held until releaseHeldWorker (see above).
 *
 * No V8 flags on its command line. Node.js loads its built-in modules (node:net, node:crypto, …) from
 * code compiled and cached when Node.js was built, and V8 refuses that cache when any V8 flag differs
 * from the build's: every builtin is then compiled from source. `--max-semi-space-size=1`, which the
 * worker was once started with to cap its young generation, cost ~20 ms of its start (a fresh `bgdl
 * add` to the request at the server: 133 -> 111 ms, medians of 8) for ~1.3 MiB of peak RSS on a
 * 1 GiB download (62.4 against 61 MiB). The worker sets its V8 flags itself once its modules are
 * loaded (tuneV8 in src/worker/worker.ts).
 */
export function spawnWorker(env: NodeJS.ProcessEnv, sharedStore: boolean, held = false): ChildProcess {
  const childEnv: NodeJS.ProcessEnv = { ...workerEnvironment(env, sharedStore), UV_THREADPOOL_SIZE: env.UV_THREADPOOL_SIZE ?? WORKER_THREADPOOL };
  if (held) childEnv[HELD] = '1';
  // node:child_process is loaded here only: worker processes import this module too (held-worker.ts)
  // and never start a worker.
  const child = childProcess().spawn(process.execPath, [BIN_PATH, 'worker'], {
    detached: true,
    stdio: [held ? 'pipe' : 'ignore', 'ignore', 'ignore'],
    env: childEnv,
    cwd: '/',
  });
  child.unref();
  // The pipe must not keep this command alive either: it ends when this process exits.
  (child.stdin as (NodeJS.WritableStream & { unref?: () => void }) | null)?.unref?.();
  child.stdin?.on('error', () => {});
  return child;
}

let held: ChildProcess | null = null;

/**
 * The head start: a held worker, when the store is this home's SQLite file and no live worker
 * holds its lease (a shared store's worker may run on another host; a live worker takes the work
 * itself, and a held one would only cost a Node.js start). Any doubt means no head start: the
 * command starts its worker the usual way.
 */
export function startHeldWorker(env: NodeJS.ProcessEnv): void {
  try {
    if (storeUrl(env) || leaseLooksLive(bgdlHome(env), Date.now(), loadConfig(env).leaseTimeout, pidAlive)) return;
    held = spawnWorker(env, false, true);
  } catch {
    held = null;
  }
}

/** The held worker started for real (ensureWorker recorded its pid): its pid, or undefined when it is gone. */
export function releaseHeldWorker(): number | undefined {
  const child = held;
  held = null;
  if (!child?.pid || !pidAlive(child.pid)) return undefined;
  child.stdin?.end('g');
  return child.pid;
}

/** Not needed: its stdin ends and it exits (it would also when this process exits). */
export function dismissHeldWorker(): void {
  held?.stdin?.end();
  held = null;
}
