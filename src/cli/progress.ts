// The one owner of the terminal while waiting: progress bars (cli-progress) and a spinner (ora) on a
// TTY, plain lines otherwise. Everything here goes to stderr; stdout stays for data.

import { isFinal, type Task } from '../shared/model.js';
import { formatBytes, formatDuration } from '../shared/parse.js';
import { redactText, redactUrl } from '../shared/redact.js';
import { printable } from '../shared/text.js';

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
      else if (t.state === 'queued' && t.error && t.waitReason === 'retry') process.stderr.write(`bgdl: task ${t.id} will retry: ${t.error.code}: ${printable(redactText(t.error.message))}\n`);
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
  const done = new Set<number>();
  let spinner: ReturnType<typeof ora> | null = null;
  return {
    update(tasks) {
      const running = tasks.filter((t) => t.state === 'running');
      const waiting = tasks.filter((t) => !isFinal(t.state));
      if (running.length === 0 && waiting.length > 0) {
        const why = waiting[0]!.state === 'paused' ? 'paused' : (waiting[0]!.waitReason ?? 'starting');
        const text = `waiting for ${waiting.length} task(s) (${why === 'slot' || why === 'starting' ? 'starting the worker' : why})`;
        if (!spinner) spinner = ora({ text, stream: process.stderr, color: 'cyan', isEnabled: true }).start();
        else spinner.text = text;
      } else if (spinner) {
        spinner.stop();
        spinner = null;
      }
      for (const t of tasks) {
        const value = t.kind === 'upload' ? t.bytesSent : t.bytesReceived;
        const total = t.kind === 'upload' ? (t.uploadSize ?? 0) : (t.bytesExpected ?? 0);
        if (isFinal(t.state)) {
          if (done.has(t.id)) continue;
          done.add(t.id);
          const bar = bars.get(t.id);
          if (bar) {
            multibar.remove(bar);
            bars.delete(t.id);
          }
          multibar.log(`${t.state === 'completed' ? '\u2714' : '\u2716'} ${finalLine(t)}\n`);
          multibar.update(); // flush the line now: stop() may come before the next redraw
        } else if (t.state === 'running') {
          const payload = { name: label(t), speed: t.speed ?? 0 };
          const bar = bars.get(t.id);
          if (bar) {
            bar.setTotal(total);
            bar.update(value, payload);
          } else bars.set(t.id, multibar.create(total, value, payload));
        } else {
          const bar = bars.get(t.id);
          if (bar) {
            multibar.remove(bar);
            bars.delete(t.id);
          }
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
