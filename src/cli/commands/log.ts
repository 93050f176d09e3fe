// `bgdl log [-s NAME] [-f]`: the worker's decisions, attempts, errors and hook runs.

import fs from 'node:fs';
import { logPath } from '../../shared/paths.js';
import type { Ctx } from '../context.js';

export interface LogOptions {
  session?: string;
  follow?: boolean;
}

const matches = (line: string, session: string | undefined) => !session || line.includes(` [${session}] `);

export function readLog(ctx: Ctx, o: LogOptions): { lines: string[]; size: number } {
  let text = '';
  try {
    text = fs.readFileSync(logPath(ctx.home), 'utf8');
  } catch {
    return { lines: [], size: 0 };
  }
  const lines = text.split('\n').filter((l) => l && matches(l, o.session));
  return { lines, size: Buffer.byteLength(text) };
}

/** Print lines appended after `from` bytes until `signal` aborts. */
export async function followLog(ctx: Ctx, o: LogOptions, from: number, emit: (line: string) => void, signal: AbortSignal): Promise<void> {
  const file = logPath(ctx.home);
  let pos = from;
  let rest = '';
  while (!signal.aborted) {
    let size = 0;
    try {
      size = fs.statSync(file).size;
    } catch {
      /* not yet */
    }
    if (size < pos) pos = 0; // rotated
    if (size > pos) {
      const fd = fs.openSync(file, 'r');
      const buf = Buffer.alloc(size - pos);
      fs.readSync(fd, buf, 0, buf.length, pos);
      fs.closeSync(fd);
      pos = size;
      const lines = (rest + buf.toString('utf8')).split('\n');
      rest = lines.pop()!;
      for (const l of lines) if (l && matches(l, o.session)) emit(l);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
