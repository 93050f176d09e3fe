// The task state machine: which states each control command (pause, resume, cancel, retry) applies to
// and why a task is left alone, who may own an output, and what a task looks like as it ends. Pure;
// every backend asks these before it writes.

import { UsageError } from '../../shared/errors.js';
import type { Task, TaskState } from '../../shared/model.js';
import type { FinishInfo } from '../types.js';

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

/**
 * Two live tasks never share an output: the first fixed output of `fixed` that a live task already
 * has (`live`: output → owner), or that the batch names twice, refused with what to do. Derived
 * names are kept apart by the worker (outputsInUse). Throws a UsageError; nothing was added.
 */
export function refuseSharedOutputs(fixed: Array<{ output: string | null }>, live: Map<string, { id: number; state: string }>): void {
  const batch = new Set<string>();
  for (const { output } of fixed) {
    if (!output) continue;
    const owner = live.get(output);
    if (owner) {
      throw new UsageError(
        `${output} is already the output of task ${owner.id} (${owner.state}): wait for it, cancel it (bgdl cancel ${owner.id}) or choose another output; nothing was added`,
        'E_OUTPUT_IN_USE',
      );
    }
    if (batch.has(output)) throw new UsageError(`${output} is the output of two tasks of this batch: two tasks cannot share a file; nothing was added`, 'E_OUTPUT_IN_USE');
    batch.add(output);
  }
}

/** A task as it ends: `info` applied over what the store held (a field left out keeps its value). */
export function finishedTask(t: Task, info: FinishInfo, now: number): Task {
  const keep = <T>(v: T | undefined, old: T): T => (v !== undefined ? v : old);
  return {
    ...t,
    state: info.state,
    error: info.error ?? (info.state === 'completed' ? null : t.error),
    httpStatus: keep(info.httpStatus, t.httpStatus),
    finalUrl: keep(info.finalUrl, t.finalUrl),
    output: keep(info.output, t.output),
    sha256: keep(info.sha256, t.sha256),
    bytesReceived: info.bytesReceived ?? t.bytesReceived,
    bytesSent: info.bytesSent ?? t.bytesSent,
    responseBody: keep(info.responseBody, t.responseBody),
    outcome: info.outcome ?? null,
    etag: keep(info.etag, t.etag),
    lastModified: keep(info.lastModified, t.lastModified),
    finishedAt: now,
  };
}
