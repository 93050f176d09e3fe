// The worker lease rules both sides apply: a lease is stale when its pid is gone (same host) or its
// heartbeat is older than the configured leaseTimeout.

import fs from 'node:fs';

/** How often a worker refreshes its heartbeat: a few times within leaseTimeout, at most every 2 s. */
export function heartbeatInterval(leaseTimeoutMs: number): number {
  return Math.max(100, Math.min(2_000, Math.floor(leaseTimeoutMs / 4)));
}

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
