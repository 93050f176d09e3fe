// The event a task records when it reaches a final state, with credentials redacted. Pure; every
// backend stores exactly this object, in the same transaction as the final state.

import type { BgdlEvent, EventType, Task } from '../../shared/model.js';
import { redactUrl } from '../../shared/redact.js';

/** The fields of a task an event is built from. */
export type EventSource = Pick<Task, 'session' | 'id' | 'kind' | 'url' | 'finalUrl' | 'output' | 'bytesSent' | 'bytesReceived' | 'httpStatus' | 'sha256' | 'error' | 'outcome' | 'responseBody'>;

export function eventFor(t: EventSource, type: EventType, at: number): Omit<BgdlEvent, 'id'> {
  const ev: Omit<BgdlEvent, 'id'> = {
    session: t.session,
    taskId: t.id,
    type,
    url: redactUrl(t.url)!,
    finalUrl: redactUrl(t.finalUrl),
    output: t.output,
    bytes: t.kind === 'upload' ? t.bytesSent : t.bytesReceived,
    httpStatus: t.httpStatus,
    sha256: t.sha256,
    error: t.error,
    outcome: type === 'completed' ? (t.outcome ?? null) : null,
    at: new Date(at).toISOString(),
  };
  if (t.kind === 'upload') ev.responseBody = t.responseBody;
  return ev;
}
