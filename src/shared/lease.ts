// The worker lease rules both sides apply: a lease is stale when its pid is gone (same host) or its
// heartbeat is older than LEASE_STALE_MS.

/** A worker refreshes its heartbeat every couple of seconds; this long without one means it is gone. */
export const LEASE_STALE_MS = 60_000;

export function pidAlive(pid: number): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
