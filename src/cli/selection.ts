// Which tasks a command means: IDs, or a selection by session and state (`-s NAME`, `--state STATE`,
// `--all`). The control commands, `status` and `prune` all read it here; the store turns the filter
// into its query (TaskFilter).

import { UsageError } from '../shared/errors.js';
import { TASK_STATES, type TaskState } from '../shared/model.js';
import { parseSessionName } from '../shared/parse.js';
import type { TaskFilter } from '../store/index.js';

export interface SelectionOptions {
  session?: string;
  state?: string;
  all?: boolean;
}

/** `failed` or `failed,canceled` → states; anything else is exit 2 naming the states there are. */
export function parseStates(text: string, allowed: readonly TaskState[] = TASK_STATES): TaskState[] {
  const states = text.split(',').map((s) => s.trim().toLowerCase());
  for (const s of states) {
    if (!(allowed as readonly string[]).includes(s)) {
      throw new UsageError(`invalid state '${s}' for --state: use one of ${allowed.join(', ')} (several joined by commas)`);
    }
  }
  return [...new Set(states)] as TaskState[];
}

/** The filter of `-s` and `--state` (either may be absent). */
export function filterOf(o: SelectionOptions, allowed?: readonly TaskState[]): TaskFilter {
  return {
    ...(o.session !== undefined ? { session: parseSessionName(o.session) } : {}),
    ...(o.state !== undefined ? { states: parseStates(o.state, allowed) } : {}),
  };
}

/**
 * The tasks a control command acts on: the IDs given, or the selection. IDs and a selection together
 * are refused, and so is no selection at all (a bare `bgdl cancel` must not mean every task).
 */
export function controlTarget(command: string, ids: number[], o: SelectionOptions): number[] | TaskFilter {
  const bySelection = o.session !== undefined || o.state !== undefined;
  if (ids.length && o.all) throw new UsageError(`${command}: give task IDs or --all, not both`);
  if (ids.length && bySelection) throw new UsageError(`${command}: give task IDs or select with -s/--state, not both`);
  if (o.all && bySelection) throw new UsageError(`${command}: --all means every task; leave it out to select by -s/--state`);
  if (ids.length) return ids;
  if (!o.all && !bySelection) throw new UsageError(`${command}: which tasks? give task IDs, -s NAME, --state STATE or --all`);
  return filterOf(o);
}
