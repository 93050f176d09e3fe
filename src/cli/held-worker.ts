// The held worker's side of the head start `bgdl add` and `bgdl upload` give their worker
// (worker-start.ts has the command's side): wait for the go on stdin, having loaded the worker's
// modules meanwhile. Loaded only by `bgdl worker` processes.

import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { HELD } from './worker-start.js';

/** Whether this worker was started held; the variable is taken out so that nothing it starts inherits it. */
export function takeHeld(env: NodeJS.ProcessEnv): boolean {
  const held = env[HELD] === '1';
  delete env[HELD];
  return held;
}

/**
 * In the held worker: load what `load` loads, then wait for the go (true) or the end of stdin (false).
 * A burst of adds with no worker alive starts a held worker each, and all but one are dismissed once
 * their adds find the lease taken: only the first of a home loads ahead (it holds a name in Linux's
 * abstract socket namespace until it has its answer; the kernel frees the name if the process ends);
 * the others wait without loading, and load only if they get the go after all. (Measured: 50
 * concurrent adders took 4.7 s with every held worker loading, 3.95 s before held workers, 3.66-3.69 s
 * with only the first loading.)
 */
export async function heldUntilGo(home: string, load: () => Promise<unknown>): Promise<boolean> {
  const go = new Promise<boolean>((resolve) => {
    // The pipe is blocking as the command made it; were it not, a read before the byte is written would answer EAGAIN.
    const read = () => fs.read(0, Buffer.alloc(1), 0, 1, null, (err, n) => (err?.code === 'EAGAIN' ? setTimeout(read, 5) : resolve(!err && n === 1)));
    read();
  });
  const first = await holdName(`\0bgdl-held-worker:${crypto.createHash('sha256').update(home).digest('hex')}`);
  if (first) await load();
  const answer = await go;
  first?.close();
  return answer;
}

/** A listening socket under `name`, or null when another process holds it. It accepts no connection. */
function holdName(name: string): Promise<net.Server | null> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.maxConnections = 0;
    server.once('error', () => resolve(null));
    server.listen({ path: name }, () => resolve(server.unref()));
  });
}
