// The worker lease rules both sides apply: a lease is stale when its pid is gone (same host) or its
// heartbeat is older than LEASE_STALE_MS.

import fs from 'node:fs';

/** A worker refreshes its heartbeat every couple of seconds; this long without one means it is gone. */
export const LEASE_STALE_MS = 60_000;

export function pidAlive(pid: number): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return !isZombie(pid);
}

/** A killed worker nobody has reaped yet still answers kill(pid, 0); on Linux /proc tells. */
function isZombie(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X';
  } catch {
    return false;
  }
}
