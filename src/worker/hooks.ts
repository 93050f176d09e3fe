// The session hook: the shell's `handleEventsForBackgroundURLSession`. Run once per batch via
// `/bin/sh -c CMD` when the session is idle; exit 0 is the completion handler (events delivered).
// Event data reaches the hook only through its environment, stdin and the events file.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BgdlEvent, Session } from '../shared/model.js';
import { formatDuration } from '../shared/parse.js';
import { hookDir } from '../shared/paths.js';
import { childProcess } from '../shared/builtins.js';
import { setLongTimeout } from '../shared/timers.js';

/** Failed hooks are retried after hookRetryDelay, doubling with each failure, at most an hour. */
export const HOOK_RETRY_CAP_MS = 3_600_000;

export function hookRetryDelay(failuresSoFar: number, baseMs: number): number {
  return Math.min(baseMs * 2 ** Math.max(0, failuresSoFar), HOOK_RETRY_CAP_MS);
}

/**
 * A session's hook is due when it has a hook and launch events, nothing of the session is running or
 * runnable now (tasks waiting for a future begin-at or for conditions do not count), and any
 * earlier failure's retry time has come.
 */
export function hookDue(s: Session, counts: { active: number; runnable: number }, now: number): boolean {
  if (!s.hook || !s.launchEvents) return false;
  if (counts.active > 0 || counts.runnable > 0) return false;
  return s.hookNextAt == null || s.hookNextAt <= now;
}

export interface HookPlan {
  command: string;
  cwd: string;
  env: NodeJS.ProcessEnv;
  eventsFile: string;
  input: string;
}

/**
 * Everything about a hook run, decided before anything runs. The working directory is the batch's
 * download directory (when all its files went to one), else the configured downloadDir, else $HOME.
 */
export function planHook(home: string, s: Session, events: BgdlEvent[], baseEnv: NodeJS.ProcessEnv, downloadDir: string | null, now: number): HookPlan {
  const input = events.map((e) => JSON.stringify(stripInternal(e))).join('\n') + '\n';
  const eventsFile = path.join(hookDir(home), `${s.name}-${now}-${process.pid}.jsonl`);
  const cwd = [batchDir(events), downloadDir].find((d): d is string => !!d && isDir(d)) ?? (baseEnv.HOME || os.homedir());
  return {
    command: s.hook!,
    cwd,
    eventsFile,
    input,
    env: {
      ...baseEnv,
      BGDL_SESSION: s.name,
      BGDL_EVENTS: eventsFile,
      BGDL_EVENT_COUNT: String(events.length),
      BGDL_HOOK: '1',
    },
  };
}

/** The session's download directory for this batch: the one directory all its files went into, if any. */
function batchDir(events: BgdlEvent[]): string | null {
  const dirs = new Set(events.filter((e) => e.output).map((e) => path.dirname(e.output!)));
  return dirs.size === 1 ? [...dirs][0]! : null;
}

function stripInternal(e: BgdlEvent): Omit<BgdlEvent, 'deliveredAt'> {
  const { deliveredAt: _d, ...rest } = e;
  return rest;
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export interface HookOutcome {
  ok: boolean;
  /** Why it counts as failed: exit status, signal, timeout or spawn error. */
  error: string | null;
}

/** Run a planned hook; each line it prints goes to `onOutput`. */
export async function runHook(plan: HookPlan, timeoutMs: number, onOutput: (line: string) => void): Promise<HookOutcome> {
  fs.mkdirSync(path.dirname(plan.eventsFile), { recursive: true, mode: 0o700 });
  fs.writeFileSync(plan.eventsFile, plan.input, { mode: 0o600 });
  try {
    return await new Promise<HookOutcome>((resolve) => {
      const child = childProcess().spawn('/bin/sh', ['-c', plan.command], { cwd: plan.cwd, env: plan.env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
      let timedOut = false;
      const killGroup = (sig: NodeJS.Signals) => {
        try {
          process.kill(-child.pid!, sig);
        } catch {
          /* already gone */
        }
      };
      // hookTimeout may be longer than setTimeout allows (it would fire at once): a chained timer.
      const timer = setLongTimeout(() => {
        timedOut = true;
        killGroup('SIGTERM');
        setTimeout(() => killGroup('SIGKILL'), 5000).unref();
      }, timeoutMs);
      for (const stream of [child.stdout, child.stderr]) {
        let buf = '';
        stream.setEncoding('utf8');
        stream.on('data', (d: string) => {
          buf += d;
          const lines = buf.split('\n');
          buf = lines.pop()!;
          for (const l of lines) onOutput(l);
        });
        stream.on('end', () => buf && onOutput(buf));
      }
      child.stdin.on('error', () => {}); // a hook that does not read stdin closes it early
      child.stdin.end(plan.input);
      child.on('error', (err) => {
        timer.clear();
        resolve({ ok: false, error: `cannot run the hook: ${err.message}` });
      });
      child.on('close', (code, signal) => {
        timer.clear();
        if (timedOut) resolve({ ok: false, error: `timed out after ${formatDuration(timeoutMs)} and was killed` });
        else if (signal) resolve({ ok: false, error: `killed by ${signal}` });
        else if (code !== 0) resolve({ ok: false, error: `exited with status ${code}` });
        else resolve({ ok: true, error: null });
      });
    });
  } finally {
    fs.rmSync(plan.eventsFile, { force: true });
  }
}
