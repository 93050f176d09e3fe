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

/** The state a task is in after `action` applied to it. */
export const ACTION_TO: Record<TaskAction, TaskState> = { pause: 'paused', resume: 'queued', cancel: 'canceled', retry: 'queued' };

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

/** Does the action record an event (a final state)? Only cancel, of the control actions. */
export const actionRecordsEvent = (action: TaskAction): boolean => action === 'cancel';

/**
 * Does the action move the task's claim on (so a late write of an attempt still running, or of a
 * worker long gone, is refused)? Cancel does; pause keeps it so the stopping attempt can record its offset.
 */
export const actionMovesClaim = (action: TaskAction): boolean => action === 'cancel';
