// The one owner of the terminal while waiting: progress bars (cli-progress) and a spinner (ora) on a
// TTY, plain lines otherwise. Everything here goes to stderr; stdout stays for data.

import { isFinal, type Task } from '../shared/model.js';
import { formatBytes, formatDuration } from '../shared/parse.js';
import { redactText, redactUrl } from '../shared/redact.js';
import { printable } from '../shared/text.js';
import { localIso, waitingText } from './render.js';

export interface WaitReporter {
  update(tasks: Task[]): void;
  stop(): void;
}

const label = (t: Task) => (t.output ? t.output.split('/').pop()! : (redactUrl(t.url) ?? '').split('/').pop() || `task ${t.id}`);

export function finalLine(t: Task): string {
  switch (t.state) {
    case 'completed':
      return t.kind === 'upload'
        ? `task ${t.id} completed: uploaded ${formatBytes(t.bytesSent)} (HTTP ${t.httpStatus})`
        : t.output == null
          ? `task ${t.id} completed without a file: HTTP ${t.httpStatus} has no body`
          : `task ${t.id} completed: ${t.output} (${formatBytes(t.bytesReceived)})`;
    case 'failed':
      return `task ${t.id} failed: ${t.error?.code}: ${printable(redactText(t.error?.message ?? ''))}`;
    default:
      return `task ${t.id} ${t.state}`;
  }
}

function stateKey(t: Task): string {
  return `${t.state}:${t.waitReason ?? ''}:${t.attempts}`;
}

/** A task waiting to try again: what went wrong and when the next attempt is. */
export function retryLine(t: Task, now = Date.now()): string {
  const when = t.notBefore && t.notBefore > now ? `at ${localIso(t.notBefore)} (in ${formatDuration(t.notBefore - now)})` : 'soon';
  // The reason first and the time last: a line cut to the terminal's width keeps both ends.
  return `task ${t.id} will retry: ${t.error!.code}: ${printable(redactText(t.error!.message))}; attempt ${t.attempts + 1} ${when}`;
}

/**
 * The spinner's text while nothing is transferring: the same waiting reason `status` shows
 * (`task 3: begin-at: starts in 9m53s (…)`), or that the tasks are paused.
 */
export function waitingLine(waiting: Task[], now = Date.now()): string {
  const queued = waiting.find((t) => t.state === 'queued');
  const more = waiting.length > 1 ? ` (${waiting.length} tasks waiting)` : '';
  if (!queued) {
    const first = waiting[0]!;
    return waiting.length > 1 ? `${waiting.length} tasks paused: bgdl resume continues them` : `task ${first.id} paused: bgdl resume ${first.id} continues it`;
  }
  return `task ${queued.id}: ${waitingText(queued, now) ?? queued.state}${more}`;
}

/**
 * A line wider than the terminal wraps, and the bars' redraw overwrites its second half: cut it in
 * the middle instead, keeping how it starts (task and outcome) and ends (file name and size).
 */
export function fitWidth(line: string, columns: number): string {
  const room = columns - 1;
  if (line.length <= room) return line;
  const head = Math.ceil((room - 1) / 2);
  return `${line.slice(0, head)}\u2026${line.slice(line.length - (room - 1 - head))}`;
}

/** A task that had finished and is queued again (`bgdl retry`) gets its new outcome reported too. */
function finalKey(t: Task): string {
  return `${t.state}:${t.attempts}:${t.finishedAt ?? ''}`;
}

/** Plain lines when stderr is not a terminal (or CI is set): one line per state change. */
class PlainReporter implements WaitReporter {
  private seen = new Map<number, string>();
  update(tasks: Task[]): void {
    for (const t of tasks) {
      const key = stateKey(t);
      if (this.seen.get(t.id) === key) continue;
      const first = !this.seen.has(t.id);
      this.seen.set(t.id, key);
      if (isFinal(t.state)) process.stderr.write(`bgdl: ${finalLine(t)}\n`);
      else if (t.state === 'running') process.stderr.write(`bgdl: task ${t.id} running (attempt ${t.attempts}): ${redactUrl(t.url)}\n`);
      else if (t.state === 'queued' && t.error && t.waitReason === 'retry') process.stderr.write(`bgdl: ${retryLine(t)}\n`);
      else if (first || t.state === 'paused') process.stderr.write(`bgdl: task ${t.id} ${t.state}\n`);
    }
  }
  stop(): void {}
}

/** Bars for running tasks, a spinner while nothing runs yet. Loaded only on a TTY. */
async function ttyReporter(): Promise<WaitReporter> {
  const [{ default: ora }, cliProgressModule] = await Promise.all([import('ora'), import('cli-progress')]);
  // cli-progress is CommonJS: its whole API (Format included) is on the default export.
  const cliProgress = ((cliProgressModule as unknown as { default?: typeof cliProgressModule }).default ?? cliProgressModule) as typeof cliProgressModule;
  const color = !process.env.NO_COLOR;
  const multibar = new cliProgress.MultiBar(
    {
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: false,
      autopadding: true,
      fps: 5,
      format: (options, params, payload) => {
        const bar = cliProgress.Format.BarFormat(params.progress, options);
        const total = params.total > 0 ? formatBytes(params.total) : '?';
        const eta = payload.speed > 0 && params.total > 0 ? formatDuration(((params.total - params.value) / payload.speed) * 1000) : '-';
        const pct = params.total > 0 ? `${Math.floor(params.progress * 100)}%`.padStart(4) : '   ';
        return `${String(payload.name).slice(0, 28).padEnd(28)} ${bar} ${pct} ${formatBytes(params.value)}/${total} ${formatBytes(payload.speed)}/s ETA ${eta}`;
      },
      barCompleteChar: color ? '\u2588' : '#',
      barIncompleteChar: color ? '\u2591' : '-',
    },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<number, ReturnType<typeof multibar.create>>();
  /** The final state each finished task was last reported in (a retried task is reported again). */
  const reported = new Map<number, string>();
  /** The last non-final state reported as a line (paused, waiting to retry), so each shows once. */
  const noted = new Map<number, string>();
  let spinner: ReturnType<typeof ora> | null = null;
  const log = (line: string) => {
    multibar.log(`${fitWidth(line, process.stderr.columns || 80)}\n`);
    multibar.update(); // flush the line now: stop() may come before the next redraw
  };
  const dropBar = (id: number) => {
    const bar = bars.get(id);
    if (bar) {
      multibar.remove(bar);
      bars.delete(id);
    }
  };
  return {
    update(tasks) {
      const now = Date.now();
      const running = tasks.filter((t) => t.state === 'running');
      const waiting = tasks.filter((t) => !isFinal(t.state) && t.state !== 'running');
      if (running.length === 0 && waiting.length > 0) {
        const text = waitingLine(waiting, now);
        // discardStdin off: ora would put stdin in raw mode, and Ctrl-C would no longer interrupt.
        if (!spinner) spinner = ora({ text, stream: process.stderr, color: 'cyan', isEnabled: true, discardStdin: false }).start();
        else spinner.text = text;
      } else if (spinner) {
        spinner.stop();
        spinner = null;
      }
      for (const t of tasks) {
        const value = t.kind === 'upload' ? t.bytesSent : t.bytesReceived;
        const total = t.kind === 'upload' ? (t.uploadSize ?? 0) : (t.bytesExpected ?? 0);
        if (isFinal(t.state)) {
          const key = finalKey(t);
          if (reported.get(t.id) === key) continue;
          reported.set(t.id, key);
          noted.delete(t.id);
          dropBar(t.id);
          log(`${t.state === 'completed' ? '\u2714' : '\u2716'} ${finalLine(t)}`);
          continue;
        }
        if (reported.delete(t.id)) log(`\u21bb task ${t.id} ${t.state} again`);
        if (t.state === 'running') {
          noted.delete(t.id);
          const payload = { name: label(t), speed: t.speed ?? 0 };
          const bar = bars.get(t.id);
          if (bar) {
            bar.setTotal(total);
            bar.update(value, payload);
          } else bars.set(t.id, multibar.create(total, value, payload));
          continue;
        }
        dropBar(t.id);
        const retrying = t.state === 'queued' && t.error && t.waitReason === 'retry';
        const note = t.state === 'paused' ? `paused:${t.attempts}` : retrying ? `retry:${t.attempts}` : null;
        if (note && noted.get(t.id) !== note) {
          noted.set(t.id, note);
          log(t.state === 'paused' ? `\u23f8 task ${t.id} paused: bgdl resume ${t.id} continues it` : `\u21bb ${retryLine(t, now)}`);
        }
      }
    },
    stop() {
      spinner?.stop();
      multibar.stop();
    },
  };
}

export async function makeReporter(tty: boolean): Promise<WaitReporter> {
  return tty ? ttyReporter() : new PlainReporter();
}
