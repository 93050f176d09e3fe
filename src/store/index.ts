// The store as the CLI and the worker see it: the TaskStore interface (types.ts) and `openStore`,
// which picks the backend: the local SQLite store under BGDL_HOME, or a shared PostgreSQL store
// (BGDL_STORE or config `store`). The shared rules live in rules/, each backend in its own folder.

import fs from 'node:fs';
import { loadConfig, storeUrl } from '../shared/config.js';
import { StoreError } from '../shared/errors.js';
import { SqliteStore } from './sqlite/store.js';
import type { TaskStore } from './types.js';

export type * from './types.js';
export { ACTION_FROM } from './rules/transitions.js';
export { SqliteStore } from './sqlite/store.js';

/** Open the store of `home` (created when missing). Throws StoreError (exit 4) when it cannot be opened, UsageError (2) for a malformed BGDL_STORE. */
export async function openStore(home: string, env: NodeJS.ProcessEnv = process.env): Promise<TaskStore> {
  const url = storeUrl(env);
  if (!url) return SqliteStore.open(home);
  // BGDL_HOME still holds this host's log and hook event files.
  try {
    fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new StoreError(`cannot create ${home}: ${(err as Error).message}`);
  }
  // Loaded only for a shared store: the local one never pays for the PostgreSQL client.
  const { PgStore } = await import('./postgres/store.js');
  return PgStore.open(url, { home, staleMs: loadConfig(env).leaseTimeout });
}
