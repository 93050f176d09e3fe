// Two settings of the JavaScript engine that keep a process using undici small: both measured with
// `npm run bench -- --only=big` (see docs/ARCHITECTURE.md, "The body path") and both process-wide, so
// they live here, applied once, rather than spread over the modules that benefit. Neither is needed
// by our own HTTP/1.1 reader (no WebAssembly parser, no buffer per read), so they are applied (and
// node:vm loaded) only when undici is.

import { v8Module, vmModule } from '../shared/builtins.js';
import { TUNING } from './tuning.js';

let leaned = false;

/**
 * Before the first connection: compile WebAssembly with the baseline compiler only. undici's HTTP/1
 * parser is a WebAssembly module, and V8's optimizing tier recompiled it in the background a moment
 * after the first request, a transient of about 30 MiB that was the worker's peak RSS; the parser
 * only walks headers and skips over body bytes, so the optimized code saved nothing measurable.
 */
export function leanRuntime(): void {
  if (leaned) return;
  leaned = true;
  try {
    v8Module().setFlagsFromString('--liftoff-only');
  } catch {
    /* an engine without the flag: nothing to save */
  }
}

type Collect = (options: { type: 'minor' | 'major'; execution?: 'async' }) => void;
let collect: Collect | null | undefined;
let sinceCollect = 0;
let sinceOldCollect = 0;

/**
 * Count body bytes taken (all transfers together); every `youngGcBytes` of them, collect the young
 * generation. Each socket read is a fresh 64 KiB buffer that dies at once, but V8 collects them only
 * when their external size passes its own limit (tens of MiB), so a fast transfer carried 30-60 MiB of
 * dead buffers in its RSS; a scavenge of a nearly empty young generation costs well under a millisecond.
 * Every `oldGcBytes`, a full collection instead, started in the background: the few buffers that were
 * promoted to the old generation meanwhile go then, not after tens of MiB of them.
 */
export function countTowardsCollection(n: number): void {
  sinceCollect += n;
  if (sinceCollect < TUNING.youngGcBytes) return;
  sinceOldCollect += sinceCollect;
  sinceCollect = 0;
  if (collect === undefined) {
    try {
      v8Module().setFlagsFromString('--expose-gc');
      collect = vmModule().runInNewContext('gc') as Collect;
    } catch {
      collect = null;
    }
  }
  if (sinceOldCollect < TUNING.oldGcBytes) return void collect?.({ type: 'minor' });
  sinceOldCollect = 0;
  collect?.({ type: 'major', execution: 'async' });
}
