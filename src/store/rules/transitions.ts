// The task state machine of the control commands (pause, resume, cancel, retry): which states each
// action applies to and why a task is left alone. Pure; every backend asks these before it writes.

import type { TaskState } from '../../shared/model.js';

export type TaskAction = 'pause' | 'resume' | 'cancel' | 'retry';

/** The states each control action applies to (a bulk selection takes only these). */
export const ACTION_FROM: Record<TaskAction, readonly TaskState[]> = {
  pause: ['queued', 'running'],
  resume: ['paused'],
  cancel: ['queued', 'running', 'paused'],
  retry: ['failed', 'canceled'],
};

/** Why `action` leaves a task in `state` alone, or null when it applies. */
export function transitionRefusal(state: TaskState, action: TaskAction): string | null {
  switch (action) {
    case 'pause':
      if (state === 'paused') return 'already paused';
      return state === 'queued' || state === 'running' ? null : `already ${state}`;
    case 'resume':
      if (state === 'queued' || state === 'running') return `already ${state}`;
      return state === 'paused' ? null : `already ${state} (use bgdl retry for failed or canceled tasks)`;
    case 'cancel':
      return state === 'completed' || state === 'failed' || state === 'canceled' ? `already ${state}` : null;
    case 'retry':
      return state === 'failed' || state === 'canceled' ? null : `is ${state} (only failed or canceled tasks can be retried)`;
  }
}

/**
 * Retrying a task whose output another live task has taken since: why it is refused (two live tasks
 * never share an output), or null.
 */
export function retryOutputRefusal(taskId: number, output: string | null, owner: { id: number; state: string } | undefined): string | null {
  if (!output || !owner || owner.id === taskId) return null;
  return `its output ${output} is now the output of task ${owner.id} (${owner.state})`;
}
