// Worker-lease and task-lease rules: when a holder is gone, and how fencing tokens move. Pure.

/** A lease as stored: who holds it and when it last proved alive (pid 0: released). */
export interface LeaseRow {
  pid: number;
  host: string;
  heartbeat: number;
}

/**
 * A lease is stale (free to take over) when it was released, its heartbeat is older than `staleMs`,
 * or its holder is on this host and its pid is gone.
 */
export function leaseIsStale(r: LeaseRow, now: number, staleMs: number, isAlive: (pid: number) => boolean, thisHost: string): boolean {
  if (r.pid === 0) return true;
  if (now - r.heartbeat > staleMs) return true;
  return r.host === thisHost && !isAlive(r.pid);
}

/** Every takeover raises the token, so writes fenced by an older one are refused; tokens never go down. */
export const nextToken = (current: number | null | undefined): number => (current ?? 0) + 1;
