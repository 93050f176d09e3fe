// Daily use at a terminal and in scripts: the status summary with many tasks, Ctrl-C in `wait`,
// shell completion, and the small conveniences (repeated options, `~`, nearest config key, local times).

import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BIN, alive, statusJson, testdir, waitFinal, waitUntil, type TestDir } from '../helpers/cli.js';
import { startServer, type TestServer } from '../helpers/server.js';

let t: TestDir;
beforeEach(async () => {
  t = await testdir();
});
afterEach(async () => {
  await t.cleanup();
});

const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

/** `n` suspended tasks in one `add -i` (nothing is fetched: they stay paused). */
async function addSuspended(n: number, session = 'default', from = 0): Promise<void> {
  const list = Array.from({ length: n }, (_, i) => `http://127.0.0.1:9/f${from + i}.bin`).join('\n');
  const r = await t.bgdl(['add', '-i', '-', '--suspended', '-s', session], { input: list });
  expect(r.code, r.stderr).toBe(0);
}

describe('status with more tasks than fit the screen', () => {
  it('summarises per session and lists the unfinished and latest finished rows; --all lists every row; --json every task', async () => {
    await addSuspended(3, 'small');
    await addSuspended(100, 'big', 100);
    // Two finished tasks: canceling is the one way to finish without a server.
    expect((await t.bgdl(['cancel', '1', '4'])).code).toBe(0);
    const r = await t.bgdl(['status']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('big: 100 tasks (99 paused, 1 canceled); 0 B');
    expect(lines[1]).toBe('small: 3 tasks (2 paused, 1 canceled); 0 B');
    expect(lines[2]).toBe('');
    expect(lines[3]).toMatch(/^ID +SESSION +STATE/);
    // Off a terminal the view is 40 lines: the finished rows first, then the unfinished in queue order.
    expect(lines.length).toBeLessThanOrEqual(40);
    const rows = lines.slice(4, -1).map((l) => l.split(/ +/));
    expect(rows.slice(0, 2).map((c) => [c[0], c[2]])).toEqual([['1', 'canceled'], ['4', 'canceled']]);
    expect(rows.slice(2).every((c) => c[2] === 'paused')).toBe(true);
    expect(rows[2]![0]).toBe('2');
    expect(lines.at(-1)).toMatch(new RegExp(`^… ${103 - rows.length} more not shown \\(${103 - rows.length} paused\\): bgdl status --all lists every task$`));
    const all = await t.bgdl(['status', '--all']);
    expect(all.stdout.trimEnd().split('\n')).toHaveLength(104);
    expect((await statusJson(t)).length).toBe(103);
    // -s: that session's summary only; a small session fits and is a plain table.
    const big = await t.bgdl(['status', '-s', 'big']);
    expect(big.stdout).toMatch(/^big: 100 tasks/);
    expect(big.stdout).not.toMatch(/small/);
    const small = await t.bgdl(['status', '-s', 'small']);
    expect(small.stdout.trimEnd().split('\n')).toHaveLength(4);
    expect(small.stdout).toMatch(/^ID +SESSION/);
  });
});

/**
 * A command in a real pseudo-terminal: a tmux session on a socket of its own, 120x40. `screen()` is
 * what the pane shows; `exitCode()` the command's status once it has ended.
 */
function inTmux(command: string, env: NodeJS.ProcessEnv, cwd: string, rows = 40) {
  const socket = `bgdl-test-${process.pid}-${Date.now()}`;
  const exitFile = path.join(cwd, `.exit-${socket}`);
  const tmux = (...args: string[]) => spawnSync('tmux', ['-L', socket, '-f', '/dev/null', ...args], { env, cwd, encoding: 'utf8' });
  // The shell catches SIGINT with a trap (so it lives on to record the status); the command gets
  // the default disposition, as from an interactive shell.
  const script = `trap true INT; ${command}; echo $? > ${exitFile}; sleep 600`;
  const r = tmux('new-session', '-d', '-x', '120', '-y', String(rows), '-s', 'bgdl', 'sh', '-c', script);
  if (r.status !== 0) throw new Error(`tmux failed: ${r.stderr}`);
  return {
    screen: () => tmux('capture-pane', '-p', '-J', '-t', 'bgdl').stdout,
    keys: (...keys: string[]) => tmux('send-keys', '-t', 'bgdl', ...keys),
    exitCode: () => (fs.existsSync(exitFile) && fs.readFileSync(exitFile, 'utf8').trim() !== '' ? Number(fs.readFileSync(exitFile, 'utf8')) : null),
    kill: () => tmux('kill-server'),
  };
}

describe('status at a terminal', () => {
  it("summarises to the terminal's height", async (ctx) => {
    if (!have('tmux')) {
      console.warn('NOTICE: tmux is not installed: the terminal-height status test is skipped');
      return ctx.skip();
    }
    await addSuspended(30);
    const term = inTmux(`${process.execPath} ${BIN} status`, { ...t.env }, t.downloads, 20);
    try {
      await waitUntil(() => term.exitCode() !== null, 15_000, 'status to end');
      const lines = term.screen().trimEnd().split('\n');
      expect(lines[0]).toBe('default: 30 tasks (30 paused); 0 B');
      // 20 rows: the summary line, a blank line, the header, 15 tasks, the "not shown" line, the prompt.
      expect(lines.filter((l) => /^\d+ +default +paused/.test(l))).toHaveLength(15);
      expect(lines).toContain('… 15 more not shown (15 paused): bgdl status --all lists every task');
    } finally {
      term.kill();
    }
  });
});

describe('wait at a terminal', () => {
  let s: TestServer;
  beforeEach(async () => {
    s = await startServer();
  });
  afterEach(async () => {
    await s.close();
  });

  const ttyEnv = () => {
    const env: NodeJS.ProcessEnv = { ...t.env, NO_COLOR: '1' };
    delete env.CI; // the spinner and bars never show under CI
    return env;
  };

  it('the spinner shows the waiting reason status shows; the first Ctrl-C exits 130 and says the task goes on', async (ctx) => {
    if (!have('tmux')) {
      console.warn('NOTICE: tmux is not installed: the pseudo-terminal Ctrl-C test is skipped');
      return ctx.skip();
    }
    const r = await t.bgdl(['add', '--json', '--begin-at', '10m', 'http://127.0.0.1:9/later.bin']);
    expect(r.code, r.stderr).toBe(0);
    const [task] = JSON.parse(r.stdout);
    const term = inTmux(`${process.execPath} ${BIN} wait`, ttyEnv(), t.downloads);
    try {
      await waitUntil(() => /begin-at: starts in 9m\d+s \(\d{4}-\d\d-\d\dT[\d:]+[+-]\d\d:\d\d\)/.test(term.screen()), 15_000, 'the spinner with the begin-at reason');
      expect(term.screen()).toContain(`task ${task.id}: begin-at: starts in 9m`);
      term.keys('C-c');
      const code = await waitUntil(() => term.exitCode(), 10_000, 'wait to exit after one Ctrl-C');
      expect(code).toBe(130);
      expect(term.screen()).toMatch(/bgdl: stopped waiting; 1 task\(s\) go on in the background/);
    } finally {
      term.kill();
    }
    const [after] = await statusJson(t, [task.id]);
    expect(after).toMatchObject({ state: 'queued', waitingFor: 'begin-at' });
  });

  it('Ctrl-C during a transfer leaves it running: it completes in the background', async (ctx) => {
    if (!have('tmux')) {
      console.warn('NOTICE: tmux is not installed: the pseudo-terminal Ctrl-C test is skipped');
      return ctx.skip();
    }
    s.route('/slow.bin', { body: { size: 600_000 }, throttle: 150_000 }); // 4 s: still running at Ctrl-C
    const term = inTmux(`${process.execPath} ${BIN} add --wait ${s.url('/slow.bin')}`, ttyEnv(), t.downloads);
    try {
      await waitUntil(() => /slow\.bin +[#-]+ +\d+%/.test(term.screen()), 15_000, 'the progress bar');
      term.keys('C-c');
      expect(await waitUntil(() => term.exitCode(), 10_000, 'add --wait to exit after one Ctrl-C')).toBe(130);
      expect(term.screen()).toMatch(/bgdl: stopped waiting; 1 task\(s\) go on in the background/);
    } finally {
      term.kill();
    }
    const pid = t.workerPid();
    expect(pid && alive(pid)).toBeTruthy();
    const [done] = await waitFinal(t, [1]);
    expect(done.state).toBe('completed');
    expect(fs.statSync(path.join(t.downloads, 'slow.bin')).size).toBe(600_000);
  });

  it('add --wait shows the retry reason and the next attempt time while retrying', async (ctx) => {
    if (!have('tmux')) {
      console.warn('NOTICE: tmux is not installed: the pseudo-terminal retry test is skipped');
      return ctx.skip();
    }
    s.route('/busy.bin', { body: { size: 1000 }, status503: { times: 1, retryAfter: '3' } });
    const term = inTmux(`${process.execPath} ${BIN} add --wait ${s.url('/busy.bin')}`, ttyEnv(), t.downloads);
    try {
      await waitUntil(() => term.exitCode() !== null, 20_000, 'add --wait to end');
      expect(term.exitCode()).toBe(0);
      const screen = term.screen();
      expect(screen).toMatch(/task 1 will retry: E_HTTP_STATUS: HTTP 503.*; attempt 2 at \d{4}-\d\d-\d\dT[\d:]+[+-]\d\d:\d\d \(in [0-3]s\)$/m);
      expect(screen).toMatch(/\u2714 task 1 completed/);
    } finally {
      term.kill();
    }
  });

  it("a paused task says paused, a retried task's line shows its new outcome, and the end is one summary line", async (ctx) => {
    if (!have('tmux')) {
      console.warn('NOTICE: tmux is not installed: the pseudo-terminal progress test is skipped');
      return ctx.skip();
    }
    s.route('/gone.bin', { body: { size: 1000 }, failTimes: { status: 404, times: 1 } });
    s.route('/long.bin', { body: { size: 800_000 }, throttle: 100_000 }); // 8 s: still running when paused
    // The task that fails is added paused and resumed once wait is drawing: a worker can fail it
    // before a wait started afterwards first looks, and wait only watches unfinished tasks.
    const [gone] = JSON.parse((await t.bgdl(['add', '--json', '--suspended', s.url('/gone.bin')])).stdout);
    const [long] = JSON.parse((await t.bgdl(['add', '--json', s.url('/long.bin')])).stdout);
    const term = inTmux(`${process.execPath} ${BIN} wait`, ttyEnv(), t.downloads);
    try {
      await waitUntil(() => term.screen().trim() !== '', 15_000, 'wait to draw');
      expect((await t.bgdl(['resume', String(gone.id)])).code).toBe(0);
      await waitUntil(() => new RegExp(`\u2716 task ${gone.id} failed: E_HTTP_STATUS`).test(term.screen()), 15_000, 'the failure line');
      await waitUntil(async () => (await statusJson(t, [long.id]))[0].state === 'running', 15_000, 'the long task to run');
      expect((await t.bgdl(['pause', String(long.id)])).code).toBe(0);
      await waitUntil(() => term.screen().includes(`task ${long.id} paused: bgdl resume ${long.id} continues it`), 10_000, 'the paused line');
      expect((await t.bgdl(['retry', String(gone.id)])).code).toBe(0);
      await waitUntil(() => new RegExp(`\u2714 task ${gone.id} completed`).test(term.screen()), 15_000, "the retried task's new outcome");
      expect((await t.bgdl(['resume', String(long.id)])).code).toBe(0);
      await waitUntil(() => term.exitCode() !== null, 20_000, 'wait to end').catch((e) => {
        throw new Error(`${(e as Error).message}\n${term.screen()}`);
      });
      expect(term.exitCode()).toBe(0);
      const screen = term.screen();
      // Its first outcome stays on the screen above the new one.
      expect(screen.indexOf(`task ${gone.id} failed`)).toBeLessThan(screen.indexOf(`task ${gone.id} completed`));
      expect(screen).toMatch(/bgdl: 2 tasks: 2 completed, 0 failed, 0 canceled; 782 KiB in \d+s/);
    } finally {
      term.kill();
    }
  });

  it('wait without a terminal ends with one summary line of counts and bytes', async () => {
    s.route('/ok.bin', { body: { size: 2048 } });
    const r = await t.bgdl(['add', '--wait', s.url('/ok.bin'), s.url('/missing.bin')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^bgdl: 2 tasks: 1 completed, 1 failed, 0 canceled; 2\.0 KiB in \d+(ms|s)$/m);
    expect(r.stderr.trimEnd().split('\n').at(-1)).toMatch(/^bgdl: 1 of 2 task\(s\) did not complete: \d+ failed \(E_HTTP_STATUS\)$/);
  });
});

describe('small conveniences', () => {
  it('refuses a single-value option given twice (exit 2, nothing stored); -H still repeats', async () => {
    const r = await t.bgdl(['add', '-o', 'a.bin', '-o', 'b.bin', 'http://127.0.0.1:9/x']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("bgdl: -o/--output given twice ('a.bin', then 'b.bin'): give it once\n");
    const s = await t.bgdl(['status', '-s', 'a', '-s', 'b']);
    expect(s.code).toBe(2);
    expect(s.stderr).toMatch(/^bgdl: -s\/--session given twice/);
    expect(await statusJson(t)).toEqual([]);
    const h = await t.bgdl(['add', '--suspended', '--json', '-H', 'X-A: 1', '-H', 'X-B: 2', 'http://127.0.0.1:9/x']);
    expect(h.code, h.stderr).toBe(0);
    expect(JSON.parse(h.stdout)[0].headers).toEqual(['X-A: 1', 'X-B: 2']);
  });

  it("config set downloadDir '~/x' expands ~ to the home directory; an unknown key suggests the nearest", async () => {
    expect((await t.bgdl(['config', 'set', 'downloadDir', '~/x'])).code).toBe(0);
    expect((await t.bgdl(['config', 'get', 'downloadDir'])).stdout).toBe(`${path.join(t.env.HOME!, 'x')}\n`);
    expect((await t.bgdl(['config', 'set', 'downloadDir', '~'])).code).toBe(0);
    expect((await t.bgdl(['config', 'get', 'downloadDir'])).stdout).toBe(`${t.env.HOME}\n`);
    const typo = await t.bgdl(['config', 'set', 'maxconcurent', '3']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toBe("bgdl: unknown config key 'maxconcurent': did you mean maxConcurrent? (bgdl config list shows every key)\n");
    const far = await t.bgdl(['config', 'get', 'zzzzzzzz']);
    expect(far.code).toBe(2);
    expect(far.stderr).not.toMatch(/did you mean/);
  });

  it('session list counts every state; tables and the detail views show local ISO 8601 times with the offset', async () => {
    await addSuspended(2);
    expect((await t.bgdl(['cancel', '2'])).code).toBe(0);
    const list = await t.bgdl(['session', 'list']);
    const [head, row] = list.stdout.trimEnd().split('\n');
    expect(head!.split(/ +/)).toEqual(['SESSION', 'QUEUED', 'RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'CANCELED', 'EVENTS', 'HOOK']);
    expect(row!.split(/ +/)).toEqual(['default', '0', '0', '1', '0', '0', '1', '1', '-']);
    const env = { TZ: 'Asia/Kolkata' };
    const show = await t.bgdl(['session', 'show', 'default'], { env });
    expect(show.stdout).toMatch(/^created: +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30$/m);
    const detail = await t.bgdl(['status', '2'], { env });
    expect(detail.stdout).toMatch(/^finished: +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30$/m);
    const later = await t.bgdl(['add', '--suspended', '--json', '--begin-at', '2h', 'http://127.0.0.1:9/y']);
    expect(later.code, later.stderr).toBe(0);
    expect((await t.bgdl(['resume', '3'])).code).toBe(0);
    const table = await t.bgdl(['status'], { env });
    expect(table.stdout).toMatch(/begin-at: starts in (2h|1h59m\d+s) \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30\)/);
    const events = await t.bgdl(['events'], { env });
    expect(events.stdout).toMatch(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30/);
  });
});

describe('shell completion', () => {
  it('bgdl completion bash|zsh|fish prints scripts that parse; an unknown shell is exit 2', async () => {
    for (const shell of ['bash', 'zsh', 'fish']) {
      const r = await t.bgdl(['completion', shell]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('--begin-at'); // generated from the program's own options
      const file = path.join(t.dir, `bgdl.${shell}`);
      fs.writeFileSync(file, r.stdout);
      if (!have(shell)) {
        console.warn(`NOTICE: ${shell} is not installed: the ${shell} completion script was generated but not syntax-checked`);
        continue;
      }
      const check = spawnSync(shell, ['-n', file], { encoding: 'utf8' });
      expect(check.status, `${shell} -n: ${check.stderr}`).toBe(0);
    }
    const bad = await t.bgdl(['completion', 'tcsh']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^bgdl: .*'tcsh'.*bash, zsh, fish/);
  });

  it('bash (and fish, when installed) complete commands, options, option values, session names from the store and config keys', async () => {
    // Before any use: no session names, and completing creates no store.
    expect((await t.bgdl(['completion', '--list', 'sessions'])).stdout).toBe('');
    expect(fs.existsSync(t.home)).toBe(false);
    await addSuspended(1, 'nightly');
    const bin = path.join(t.dir, 'bin');
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, 'bgdl'), `#!/bin/sh\nexec ${process.execPath} ${BIN} "$@"\n`, { mode: 0o755 });
    const script = `
      source <(bgdl completion bash)
      comp() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=(); _bgdl; echo "\${COMPREPLY[*]}"; }
      comp bgdl st
      comp bgdl session s
      comp bgdl add --begin
      comp bgdl status -s ''
      comp bgdl session show ''
      comp bgdl config set maxC
      comp bgdl completion ''
      comp bgdl add -s nightly --susp
    `;
    const { stdout } = await promisify(execFile)('bash', ['-c', script], { env: { ...t.env, PATH: `${bin}:${process.env.PATH}` }, encoding: 'utf8' });
    expect(stdout.split('\n').slice(0, 8)).toEqual(['status', 'set show', '--begin-at', 'nightly', 'nightly', 'maxConcurrent', 'bash zsh fish', '--suspended']);
    if (!have('fish')) return void console.warn('NOTICE: fish is not installed: fish completion was not exercised');
    const fish = `
      source (bgdl completion fish | psub)
      complete -C 'bgdl session s'; echo
      complete -C 'bgdl status -s '; echo
      complete -C 'bgdl config get maxC'
    `;
    const f = await promisify(execFile)('fish', ['-c', fish], { env: { ...t.env, PATH: `${bin}:${process.env.PATH}` }, encoding: 'utf8' });
    const names = f.stdout.split('\n').map((l) => l.split('\t')[0]);
    expect(names).toEqual(['set', 'show', '', 'nightly', '', 'maxConcurrent', '']);
  });
});
