// The one place an error becomes a `bgdl: ` line and an exit status (commander's own errors aside,
// which main.ts handles before calling this).

import { BgdlError } from '../shared/errors.js';
import { printable } from '../shared/text.js';

export function reportError(err: unknown): number {
  if (err instanceof BgdlError) {
    process.stderr.write(`bgdl: ${printable(err.message)}\n`);
    return err.exitCode;
  }
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'EPIPE') return 0;
  process.stderr.write(`bgdl: internal error: ${printable(e?.message ?? String(err))} (run with BGDL_DEBUG=1 for details)\n`);
  if (process.env.BGDL_DEBUG === '1') process.stderr.write(`${e?.stack}\n`);
  return 70;
}
