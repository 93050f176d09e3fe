// The commander program: wires flags to the command modules (lazy-imported, so `bgdl status` never
// loads undici or the progress bars) and renders what they return. Errors become one `bgdl: ` line
// and an exit status; only bin/bgdl.js calls process.exit.

import { Argument, Command, CommanderError, Option } from 'commander';
import { UsageError } from '../shared/errors.js';
import { isFinal, type Task } from '../shared/model.js';
import { printable } from '../shared/text.js';
import { parseTaskId } from '../shared/parse.js';
import { closeStore, makeCtx, type Ctx } from './context.js';
import { reportError } from './report.js';
import type { AddOptions } from './commands/add.js';

const VERSION = '0.1.0';
/** Rows `bgdl status` lists before it summarises, when stdout is not a terminal. */
const STATUS_ROWS_OFF_TERMINAL = 40;

const out = (s: string) => process.stdout.write(s);
const json = (v: unknown): void => void out(JSON.stringify(v, null, 2) + "\n");
const collect = (v: string, prev: string[] = []) => [...prev, v];
const ids = (list: string[]) => list.map(parseTaskId);
const PAST = { pause: 'paused', resume: 'resumed', cancel: 'canceled', retry: 'retried' } as const;

function addTransferOptions(cmd: Command, forUpload: boolean): Command {
  cmd
    .option('-s, --session <name>', 'session to add to (default: $BGDL_SESSION or "default"; created on first use)')
    .option('-H, --header <header>', "extra request header 'Name: value' (repeatable)", collect)
    .option('-X, --method <method>', forUpload ? 'PUT (default) or POST' : 'request method (default GET)')
    .option('--begin-at <when>', 'never start before WHEN: ISO 8601 time or a delay such as 90s, 15m, 1h, 2d')
    .option('--discretionary', 'wait for good conditions: mains power, machine not busy, inside discretionaryWindow')
    .option('--no-discretionary', 'start as soon as possible, even when added from a hook')
    .option('--expect-send <size>', 'expected bytes to send (500K, 2MB, 1GiB)')
    .option('--expect-receive <size>', 'expected bytes to receive: progress total, free-disk check, scheduling')
    .addOption(new Option('--priority <level>', 'low, normal or high').default(undefined))
    .option('--suspended', 'create the task paused (start it with bgdl resume ID)')
    .option('--insecure', 'do not verify the TLS certificate of this transfer')
    .option('--ca-file <pem>', 'also trust the CA certificates in this PEM file')
    .option('--allow-downgrade', 'follow redirects from https to http')
    .option('--limit-rate <rate>', 'bandwidth limit of this transfer in bytes per second (500K, 2M, 1MiB)')
    .option('--proxy <url>', "proxy for this transfer ([http://][user:password@]host:port; '' for none): overrides http_proxy/https_proxy")
    .option('--noproxy <list>', "hosts that bypass the proxy (comma-separated; '*' for all): overrides no_proxy")
    .option('--netrc-file <file>', 'credentials per host from FILE instead of $NETRC or ~/.netrc (read at transfer time)')
    .option('--cookies <file>', 'send the matching cookies of this Netscape cookie file (curl -c, wget --save-cookies)')
    .option('--wait', 'wait for the transfer(s) with progress; exit 1 if one fails')
    .option('--json', 'print the task(s) as JSON');
  return cmd;
}

async function printTasks(ctx: Ctx, tasks: Task[], o: { json?: boolean; wait?: boolean }): Promise<void> {
  const [{ taskJson }, { redactUrl }] = await Promise.all([import('./render.js'), import('../shared/redact.js')]);
  if (o.json && !o.wait) json(tasks.map((t) => taskJson(t)));
  // One write for the lot: a write per line to a file or pipe was a tenth of `add -i` of 100,000 URLs.
  if (!o.json) out(tasks.map((t) => `${t.id}\t${t.state}\t${redactUrl(t.url)}\t${t.uploadFile ?? t.output ?? `${t.dir}/`}\n`).join(''));
  if (o.wait) {
    const { waitFor } = await import('./commands/wait.js');
    await waitFor(ctx, tasks.map((t) => t.id), {}, (final) => o.json && json(final.map((t) => taskJson(t))));
  }
}

export function buildProgram(ctx: Ctx): Command {
  const program = new Command('bgdl')
    .description('Background downloads for the shell: named sessions, a detached worker, resumable HTTP(S) transfers and session hooks.')
    .version(VERSION, '-V, --version')
    .showSuggestionAfterError(true)
    .configureOutput({
      writeErr: (s) => process.stderr.write(s),
      outputError: (s, write) => write(`bgdl: ${printable(s.replace(/^error: /, '').trimEnd().replace(/\n+/g, ' '))}\n`),
    })
    .exitOverride();

  addTransferOptions(
    program
      .command('add')
      .description('queue downloads and return at once (a detached worker transfers them)')
      .argument('[urls...]', 'http:// or https:// URLs')
      .option('-o, --output <file>', 'save to this file (replaces an existing file)')
      .option('-d, --dir <dir>', 'save into this directory under the server-chosen name (default: downloadDir or .)')
      .option('-i, --input-file <file>', "read 'URL [OUTPUT]' lines from FILE, or - for stdin")
      .option('--sha256 <hex>', 'expected SHA-256 of the file: a mismatch fails the task')
      .option('--skip-existing', 'do not fetch when the destination (-o or the server-chosen name) already exists')
      .option('--if-changed', 'fetch only when the server has a newer file (If-None-Match / If-Modified-Since); 304 leaves it')
      .option('--checksums <file>', "verify each file whose name is listed in this sha256sum file ('HEX  NAME' lines)")
      .option('--max-attempts <n>', 'attempts before a task fails with its last error (default: config maxAttempts, unlimited)')
      .option('--max-size <size>', 'fail the download if the file would be larger (default: maxFileSize)')
      .option('--split <n>', 'fetch one file over up to N range connections (1-16, or auto; default: config split)'),
    false,
  ).action(async (urls: string[], o: AddOptions & { json?: boolean; wait?: boolean }) => {
    const { add } = await import('./commands/add.js');
    await printTasks(ctx, await add(ctx, urls, o), o);
  });

  addTransferOptions(
    program.command('upload').description('queue an upload of FILE to URL (PUT by default)').argument('<file>').argument('<url>'),
    true,
  ).action(async (file: string, url: string, o: AddOptions & { json?: boolean; wait?: boolean }) => {
    const { upload } = await import('./commands/upload.js');
    await printTasks(ctx, await upload(ctx, file, url, o), o);
  });

  program
    .command('status')
    .description('show tasks: a table (a summary when there are more than fit the screen), one task in detail, or JSON')
    .argument('[ids...]', 'task ids (default: all tasks)')
    .option('-s, --session <name>', 'only this session')
    .option('--state <state>', 'only tasks in this state (queued, running, paused, completed, failed, canceled; several joined by commas)')
    .option('--all', 'list every task, however many (default: a per-session summary and a screenful of rows when they do not fit)')
    .option('--json', 'print a JSON array of tasks (always every task)')
    .option('--watch', 'redraw every second until every task is final')
    .action(async (list: string[], o: { session?: string; state?: string; all?: boolean; json?: boolean; watch?: boolean }) => {
      const [{ status, statusView }, render, { loadConfig }] = await Promise.all([
        import('./commands/status.js'),
        import('./render.js'),
        import('../shared/config.js'),
      ]);
      /** Shows the tasks once; true when every task is final. */
      const show = async (): Promise<boolean> => {
        if (o.json || list.length > 0 || o.state) {
          const tasks = o.json || list.length === 1 ? await status(ctx, ids(list), { ...o, brief: false }) : await status(ctx, ids(list), { ...o, brief: true });
          if (o.json) json((tasks as Task[]).map((t) => render.taskJson(t)));
          else if (list.length === 1 && tasks.length === 1) out(render.taskDetail(tasks[0] as Task));
          else out(render.bandwidthLine(loadConfig(ctx.env)) + (render.statusTable(tasks) || 'no tasks\n'));
          return tasks.every((t) => isFinal(t.state));
        }
        // A terminal's height, else a fixed screenful: a pipe or a cron mail stays readable too.
        const screenRows = process.stdout.isTTY && process.stdout.rows ? process.stdout.rows : STATUS_ROWS_OFF_TERMINAL;
        const v = await statusView(ctx, { session: o.session, all: o.all, screenRows });
        const head = render.bandwidthLine(loadConfig(ctx.env));
        if (v.totals) out(head + render.statusSummary(v.totals, v.tasks, v.hidden));
        else out(head + (render.statusTable(v.tasks) || 'no tasks\n'));
        return v.totals
          ? v.totals.every((t) => t.counts.queued + t.counts.running + t.counts.paused === 0)
          : v.tasks.every((t) => isFinal(t.state));
      };
      if (!o.watch) return void (await show());
      for (;;) {
        if (process.stdout.isTTY) out('\x1b[H\x1b[2J');
        if (await show()) return;
        await new Promise((r) => setTimeout(r, 1000));
      }
    });

  program
    .command('wait')
    .description('wait for tasks to finish, with progress; exit 1 if one failed')
    .argument('[ids...]', 'task ids (default: every unfinished task)')
    .option('-s, --session <name>', 'only this session')
    .option('--timeout <duration>', 'give up waiting after this long (exit 1; the tasks go on)')
    .option('--json', 'print the final tasks as JSON')
    .action(async (list: string[], o: { session?: string; timeout?: string; json?: boolean }) => {
      const [{ waitFor }, { taskJson }] = await Promise.all([import('./commands/wait.js'), import('./render.js')]);
      await waitFor(ctx, ids(list), o, (tasks) => o.json && json(tasks.map((t) => taskJson(t))));
    });

  for (const [action, what] of [
    ['pause', 'stop transfers, keeping partial files to resume from'],
    ['resume', 'continue paused (or --suspended) tasks'],
    ['cancel', 'stop tasks for good and remove their partial files'],
    ['retry', 'queue failed or canceled tasks again'],
  ] as const) {
    program
      .command(action)
      .description(what)
      .argument('[ids...]', 'task ids (or select with -s, --state or --all)')
      .option('-s, --session <name>', 'every task of this session that can be changed')
      .option('--state <state>', 'every task in this state (several joined by commas)')
      .option('--all', 'every task that can be changed')
      .option('--json', 'print the changed tasks as JSON')
      .action(async (list: string[], o: { session?: string; state?: string; all?: boolean; json?: boolean }) => {
        const [{ control }, { taskJson }] = await Promise.all([import('./commands/control.js'), import('./render.js')]);
        const r = await control(ctx, action, ids(list), o);
        if (o.json) json(r.changed.map((t) => taskJson(t)));
        else for (const t of r.changed) out(`${t.id}\t${t.state}\n`);
        for (const s of r.skipped) process.stderr.write(`bgdl: task ${s.task.id} not changed: ${s.reason}\n`);
        if (list.length === 0 && r.changed.length === 0) process.stderr.write(`bgdl: no selected task could be ${PAST[action]}\n`);
      });
  }

  program
    .command('prune')
    .description('remove finished tasks and their delivered events from the store')
    .option('-s, --session <name>', 'only this session')
    .option('--older-than <duration>', 'only tasks that finished at least this long ago (90s, 12h, 7d)')
    .option('--state <state>', 'only completed, failed or canceled tasks (several joined by commas)')
    .action(async (o: { session?: string; state?: string; olderThan?: string }) => {
      const { prune } = await import('./commands/prune.js');
      const r = await prune(ctx, o);
      out(`removed ${r.tasks} task(s) and ${r.events} delivered event(s)\n`);
    });

  const session = program.command('session').description('create, change, list, show and remove sessions');
  const sessionFlags = (c: Command) =>
    c
      .option('--hook <cmd>', 'shell command run when the session is idle with new events')
      .option('--discretionary', 'tasks of this session are discretionary by default')
      .option('--no-discretionary', 'tasks of this session are not discretionary by default')
      .option('--no-launch-events', 'do not run the hook; keep events for bgdl events')
      .option('--limit-rate <rate>', "bandwidth limit of each of the session's transfers (500K, 2M, 1MiB)")
      .option('--json', 'print the session as JSON');
  sessionFlags(session.command('create').description('create a session').argument('<name>')).action(async (name: string, o) => {
    const { sessionCreate } = await import('./commands/session.js');
    const s = await sessionCreate(ctx, name, o);
    if (o.json) json((await import('./render.js')).sessionJson(s));
    else process.stderr.write(`bgdl: created session ${s.name}\n`);
  });
  sessionFlags(session.command('set').description("change a session's settings").argument('<name>'))
    .option('--no-hook', 'remove the hook')
    .option('--no-limit-rate', "remove the session's bandwidth limit")
    .option('--launch-events', 'run the hook when events arrive (the default)')
    .action(async (name: string, o) => {
      const { sessionSet } = await import('./commands/session.js');
      const s = await sessionSet(ctx, name, o);
      if (o.json) json((await import('./render.js')).sessionJson(s));
      else process.stderr.write(`bgdl: updated session ${s.name}\n`);
    });
  session
    .command('list')
    .description('list sessions with task counts')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const [{ sessionList }, { sessionsTable, sessionJson }] = await Promise.all([import('./commands/session.js'), import('./render.js')]);
      const list = await sessionList(ctx);
      if (o.json) return json(list.map(sessionJson));
      out(sessionsTable(list));
    });
  session
    .command('show')
    .description("show a session's settings, counts and hook state")
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const [{ sessionShow }, { sessionJson, sessionDetail }] = await Promise.all([import('./commands/session.js'), import('./render.js')]);
      const s = await sessionShow(ctx, name);
      if (o.json) return json(sessionJson(s));
      out(sessionDetail(s));
    });
  session
    .command('rm')
    .description('remove a session with its finished tasks and events')
    .argument('<name>')
    .action(async (name: string) => {
      const { sessionRm } = await import('./commands/session.js');
      await sessionRm(ctx, name);
      process.stderr.write(`bgdl: removed session ${name}\n`);
    });

  program
    .command('events')
    .description('list undelivered events (completed, failed, canceled tasks)')
    .option('-s, --session <name>', 'only this session')
    .option('--json', 'JSON (with --follow: one object a line)')
    .option('--follow', 'keep printing new events until interrupted')
    .option('--ack', 'mark the printed events delivered')
    .action(async (o: { session?: string; json?: boolean; follow?: boolean; ack?: boolean }) => {
      const [{ events, followEvents }, { eventsTable, eventLine }] = await Promise.all([import('./commands/events.js'), import('./render.js')]);
      const list = await events(ctx, o);
      if (!o.follow) {
        if (o.json) json(list);
        else out(eventsTable(list));
        return;
      }
      const emit = (e: (typeof list)[number]) => out(o.json ? JSON.stringify(e) + '\n' : eventLine(e) + '\n');
      list.forEach(emit);
      await followEvents(ctx, o, list.at(-1)?.id ?? 0, emit, interrupted());
    });

  program
    .command('log')
    .description('show the log: worker decisions, attempts, errors and hook runs')
    .option('-s, --session <name>', 'only this session')
    .option('-f, --follow', 'keep printing new lines until interrupted')
    .action(async (o: { session?: string; follow?: boolean }) => {
      const { readLog, followLog } = await import('./commands/log.js');
      const { lines, size } = readLog(ctx, o);
      for (const l of lines) out(l + '\n');
      if (o.follow) await followLog(ctx, o, size, (l) => out(l + '\n'), interrupted());
    });

  const config = program.command('config').description('user defaults (durations: ms s m h d; sizes: K M G KiB MiB GiB)');
  config
    .command('get')
    .argument('<key>')
    .description('print the value of KEY')
    .action(async (key: string) => {
      const { configGet } = await import('./commands/config.js');
      out(configGet(ctx, key).value + '\n');
    });
  config
    .command('set')
    .argument('<key>')
    .argument('<value>')
    .description("set KEY to VALUE ('default' restores the default)")
    .action(async (key: string, value: string) => {
      const { configSet } = await import('./commands/config.js');
      const e = await configSet(ctx, key, value);
      process.stderr.write(`bgdl: ${e.key} = ${e.value}${e.isDefault ? ' (default)' : ''}${e.from ? ` (${e.from} is set and wins over the config file)` : ''}\n`);
    });
  config
    .command('unset')
    .argument('<key>')
    .description('restore the default of KEY')
    .action(async (key: string) => {
      const { configUnset } = await import('./commands/config.js');
      const e = await configUnset(ctx, key);
      process.stderr.write(`bgdl: ${e.key} = ${e.value}${e.from ? ` (${e.from} is set and wins over the config file)` : ' (default)'}\n`);
    });
  config
    .command('list')
    .description('every key with its value')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const [{ configList }, { table }] = await Promise.all([import('./commands/config.js'), import('./render.js')]);
      const list = configList(ctx);
      if (o.json) return json(Object.fromEntries(list.map((e) => [e.key, e.value])));
      out(table(['KEY', 'VALUE', 'MEANING'], list.map((e) => [e.key, e.value + (e.from ? ` (from ${e.from})` : e.isDefault ? ' (default)' : ''), e.describe])));
    });

  program
    .command('worker')
    .description('run the worker in the foreground, or --ensure one runs when there is work')
    .option('--ensure', 'start a detached worker only if there is work and none is alive (silent)')
    .action(async (o: { ensure?: boolean }) => {
      const { worker, workerNotice } = await import('./commands/worker.js');
      const notice = workerNotice(await worker(ctx, o));
      if (notice) process.stderr.write(`bgdl: ${notice}\n`);
    });

  program
    .command('completion')
    .description('print a shell completion script: bash, zsh or fish')
    .addArgument(new Argument('[shell]', 'bash, zsh or fish').choices(['bash', 'zsh', 'fish']))
    .addOption(new Option('--list <what>', 'print completion words (sessions), one a line').hideHelp())
    .action(async (shell: string | undefined, o: { list?: string }) => {
      const { completionScript, completionWords } = await import('./commands/completion.js');
      if (o.list) return void out((await completionWords(ctx, o.list)).map((w) => `${w}\n`).join(''));
      if (!shell) throw new UsageError('name a shell: bgdl completion bash|zsh|fish');
      out(completionScript(program, shell));
    });

  refuseRepeatedOptions(program);
  return program;
}

/**
 * commander silently keeps the last of `-o a -o b`; a single-value option given twice is refused
 * instead (exit 2), since one of the two values would be dropped. Repeatable options (-H) have
 * their own parser and are left alone.
 */
function refuseRepeatedOptions(cmd: Command): void {
  for (const opt of cmd.options) {
    if (!(opt.required || opt.optional) || opt.variadic || opt.parseArg) continue;
    let seen: string | undefined;
    opt.argParser((value: string) => {
      if (seen !== undefined) {
        const name = [opt.short, opt.long].filter(Boolean).join('/');
        throw new UsageError(`${name} given twice ('${seen}', then '${value}'): give it once`);
      }
      seen = value;
      return value;
    });
  }
  for (const sub of cmd.commands) refuseRepeatedOptions(sub);
}

function interrupted(): AbortSignal {
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return ac.signal;
}

/** Run the CLI; returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  const ctx = makeCtx();
  const program = buildProgram(ctx);
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    return report(err);
  } finally {
    await closeStore().catch(() => {});
  }
}

function report(err: unknown): number {
  if (err instanceof CommanderError) {
    // commander already printed its message through outputError; help and version exit 0.
    return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? 0 : 2;
  }
  return reportError(err);
}

