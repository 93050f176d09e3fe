// A look at a local store's worker lease without opening it as a store (no schema check, nothing
// written), for the head start `bgdl add` and `bgdl upload` give their worker
// (src/cli/worker-start.ts), which must decide before the command has loaded the store. SQLite
// removes a store's write-ahead log when its last connection closes, and a worker keeps its
// connection for its whole life: no log beside the file, no worker, and no need to load
// better-sqlite3 (a few milliseconds) to know it.

import type Database from 'better-sqlite3';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { storePath } from '../../shared/paths.js';
import { leaseIsStale, type LeaseRow } from '../rules/leases.js';
import { LEASE_ID } from './schema.js';

/** Whether the store of `home` names a live worker in its lease; true also when it cannot tell. */
export function leaseLooksLive(home: string, now: number, staleMs: number, isAlive: (pid: number) => boolean): boolean {
  const file = storePath(home);
  if (!fs.existsSync(file + '-wal')) return false;
  let db: Database.Database | undefined;
  try {
    const Sqlite = createRequire(import.meta.url)('better-sqlite3') as typeof Database;
    db = new Sqlite(file, { readonly: true, fileMustExist: true, timeout: 100 });
    const cur = db.prepare('SELECT pid, host, heartbeat FROM lease WHERE id = ?').get(LEASE_ID) as LeaseRow | undefined;
    return !!cur && !leaseIsStale(cur, now, staleMs, isAlive, os.hostname());
  } catch {
    return true;
  } finally {
    db?.close();
  }
}
