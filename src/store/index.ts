// The store as the CLI and the worker see it: the TaskStore interface (types.ts) and `openStore`,
// which picks the backend. The shared rules live in rules/, each backend in its own folder.

import { SqliteStore } from './sqlite/store.js';
import type { TaskStore } from './types.js';

export type * from './types.js';
export { ACTION_FROM } from './rules/transitions.js';
export { SqliteStore } from './sqlite/store.js';

/** Open the store of `home` (created when missing). Throws StoreError (exit 4) when it cannot be opened. */
export async function openStore(home: string, _env: NodeJS.ProcessEnv = process.env): Promise<TaskStore> {
  return SqliteStore.open(home);
}
