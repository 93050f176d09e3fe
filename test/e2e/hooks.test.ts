// Events and the session hook: the relaunch model, delivered at least once.

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { alive, statusJson, testdir, waitFinal, waitUntil, type TestDir, addJson as addJsonIn } from '../helpers/cli.js';
import { startServer, type TestServer } from '../helpers/server.js';

let t: TestDir;
let s: TestServer;
beforeEach(async () => {
  t = await testdir();
  s = await startServer();
  t.setConfig({ hookRetryDelay: '300ms' });
});
afterEach(async () => {
  await t.cleanup();
  await s.close();
});

/** A hook script that records each run: its environment, stdin and events file, then exits with $1. */
function recorder(name: string, exitCodes: number[] = [0]): { cmd: string; runs: () => { env: Record<string, string>; stdin: string; file: string; cwd: string }[] } {
  const dir = path.join(t.dir, `${name}-runs`);
  fs.mkdirSync(dir);
  const codes = path.join(dir, 'codes');
  fs.writeFileSync(codes, exitCodes.join('\n') + '\n');
  const script = path.join(t.dir, `${name}.sh`);
  fs.writeFileSync(
    script,
    `#!/bin/sh
n=$(ls "${dir}" | grep -c '^run-')
d="${dir}/run-$n"
mkdir "$d"
env > "$d/env"
cat > "$d/stdin"
cat "$BGDL_EVENTS" > "$d/file"
pwd > "$d/cwd"
echo "hook saw $BGDL_EVENT_COUNT events"
code=$(sed -n "$((n + 1))p" "${codes}")
exit \${code:-0}
`,
    { mode: 0o755 },
  );
  const runs = () =>
    fs
      .readdirSync(dir)
      .filter((f) => f.startsWith('run-'))
      .sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)))
      .map((r) => {
        const read = (f: string) => (fs.existsSync(path.join(dir, r, f)) ? fs.readFileSync(path.join(dir, r, f), 'utf8') : '');
        const env = Object.fromEntries(read('env').split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
        return { env, stdin: read('stdin'), file: read('file'), cwd: read('cwd').trim() };
      });
  return { cmd: script, runs };
}

const addJson = (args: string[], env?: NodeJS.ProcessEnv) => addJsonIn(t, args, env);

describe('the session hook', () => {
  it('runs exactly once for a batch of four tasks with four events', async () => {
    for (const n of [1, 2, 3]) s.route(`/ok${n}.bin`, { body: { size: 1000 * n } });
    const hook = recorder('batch');
    expect((await t.bgdl(['session', 'create', 'batch', '--hook', hook.cmd])).code).toBe(0);
    const tasks = await addJson(['-s', 'batch', s.url('/ok1.bin'), s.url('/ok2.bin'), s.url('/ok3.bin'), s.url('/missing.bin')]);
    await waitFinal(t, tasks.map((x) => x.id));
    await waitUntil(async () => JSON.parse((await t.bgdl(['session', 'show', 'batch', '--json'])).stdout).undeliveredEvents === 0, 15_000, 'delivery');
    const runs = hook.runs();
    expect(runs).toHaveLength(1);
    const run = runs[0]!;
    expect(run.env).toMatchObject({ BGDL_SESSION: 'batch', BGDL_EVENT_COUNT: '4', BGDL_HOOK: '1' });
    expect(run.env.BGDL_EVENTS).toMatch(new RegExp(`^${t.home}/hooks/`));
    expect(run.stdin).toBe(run.file);
    const events = run.stdin.trim().split('\n').map((l) => JSON.parse(l));
    expect(events.map((e) => e.type).sort()).toEqual(['completed', 'completed', 'completed', 'failed']);
    expect(events.map((e) => e.taskId).sort()).toEqual(tasks.map((x) => x.id).sort());
    const failed = events.find((e) => e.type === 'failed');
    expect(failed).toMatchObject({ session: 'batch', httpStatus: 404, error: { code: 'E_HTTP_STATUS' }, url: s.url('/missing.bin') });
    const ok = events.find((e) => e.url === s.url('/ok2.bin'));
    expect(ok).toMatchObject({ type: 'completed', bytes: 2000, httpStatus: 200, output: path.join(t.downloads, 'ok2.bin'), finalUrl: s.url('/ok2.bin') });
    expect(ok.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(run.cwd).toBe(t.downloads); // the batch's download directory
    // The event file is gone after the run; hook output went to the session's log.
    expect(fs.readdirSync(path.join(t.home, 'hooks'))).toEqual([]);
    const log = await t.bgdl(['log', '-s', 'batch']);
    expect(log.stdout).toMatch(/hook: hook saw 4 events/);
    expect(log.stdout).toMatch(/4 event\(s\) delivered/);
  });

  it('re-runs a failing hook until it succeeds, recording the failure', async () => {
    s.route('/f.bin', { body: 'f' });
    const hook = recorder('flaky', [3, 0]);
    await t.bgdl(['session', 'create', 'flaky', '--hook', hook.cmd]);
    const [task] = await addJson(['-s', 'flaky', s.url('/f.bin')]);
    await waitFinal(t, [task.id]);
    await waitUntil(() => hook.runs().length >= 2, 15_000, 'the second hook run');
    await waitUntil(async () => JSON.parse((await t.bgdl(['session', 'show', 'flaky', '--json'])).stdout).undeliveredEvents === 0, 10_000, 'delivery');
    const runs = hook.runs();
    expect(runs).toHaveLength(2);
    expect(runs[1]!.stdin).toBe(runs[0]!.stdin);
    const log = (await t.bgdl(['log', '-s', 'flaky'])).stdout;
    expect(log).toMatch(/hook: failed \(exited with status 3\); retrying in/);
    const show = (await t.bgdl(['session', 'show', 'flaky'])).stdout;
    expect(show).toMatch(/hook runs:\s+2/);
  });

  it('a hook over hookTimeout is killed, counts as failed, and is retried', async () => {
    t.setConfig({ hookTimeout: '500ms' });
    s.route('/slow-hook.bin', { body: 's' });
    const marker = path.join(t.dir, 'runs');
    const script = path.join(t.dir, 'sleepy.sh');
    fs.writeFileSync(script, `#!/bin/sh\necho run >> "${marker}"\n[ $(wc -l < "${marker}") -ge 2 ] && exit 0\nsleep 20\n`, { mode: 0o755 });
    await t.bgdl(['session', 'create', 'sleepy', '--hook', script]);
    const [task] = await addJson(['-s', 'sleepy', s.url('/slow-hook.bin')]);
    await waitFinal(t, [task.id]);
    await waitUntil(async () => JSON.parse((await t.bgdl(['session', 'show', 'sleepy', '--json'])).stdout).undeliveredEvents === 0, 15_000, 'delivery');
    expect(fs.readFileSync(marker, 'utf8').trim().split('\n')).toHaveLength(2);
    const log = (await t.bgdl(['log', '-s', 'sleepy'])).stdout;
    expect(log).toMatch(/hook: failed \(timed out after 500ms and was killed\)/);
  });

  it('log -f follows new lines', async () => {
    s.route('/follow.bin', { body: 'f' });
    const { spawn } = await import('node:child_process');
    const { BIN } = await import('../helpers/cli.js');
    let out = '';
    const child = spawn(process.execPath, [BIN, 'log', '-f'], { env: t.env, cwd: t.downloads });
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    try {
      await new Promise((r) => setTimeout(r, 300));
      const [task] = await addJson([s.url('/follow.bin')]);
      await waitUntil(() => out.includes(`task ${task.id}: completed`), 15_000, 'the followed log line');
    } finally {
      child.kill('SIGINT');
    }
  });

  it('--no-launch-events keeps events for bgdl events, and --ack delivers them', async () => {
    s.route('/q.bin', { body: 'q' });
    const hook = recorder('quiet');
    await t.bgdl(['session', 'create', 'quiet', '--hook', hook.cmd, '--no-launch-events']);
    const [task] = await addJson(['-s', 'quiet', s.url('/q.bin')]);
    await waitFinal(t, [task.id]);
    const listed = JSON.parse((await t.bgdl(['events', '-s', 'quiet', '--json'])).stdout);
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ taskId: task.id, type: 'completed', session: 'quiet' });
    expect(JSON.parse((await t.bgdl(['events', '-s', 'quiet', '--json', '--ack'])).stdout)).toHaveLength(1);
    expect(JSON.parse((await t.bgdl(['events', '-s', 'quiet', '--json'])).stdout)).toEqual([]);
    expect(hook.runs()).toEqual([]);
  });

  it('events --follow streams new events as JSON lines', async () => {
    s.route('/a.bin', { body: 'a' });
    const lines: string[] = [];
    const { spawn } = await import('node:child_process');
    const { BIN } = await import('../helpers/cli.js');
    const child = spawn(process.execPath, [BIN, 'events', '--follow', '--json'], { env: t.env, cwd: t.downloads });
    child.stdout.setEncoding('utf8').on('data', (d: string) => lines.push(...d.split('\n').filter(Boolean)));
    try {
      await new Promise((r) => setTimeout(r, 300));
      const [task] = await addJson([s.url('/a.bin')]);
      await waitUntil(() => lines.length >= 1, 15_000, 'a followed event');
      expect(JSON.parse(lines[0]!)).toMatchObject({ taskId: task.id, type: 'completed' });
    } finally {
      child.kill('SIGINT');
    }
  });

  it('event data never reaches the shell command: a URL holding $(touch X) creates nothing', async () => {
    const canary = path.join(t.dir, 'PWNED');
    const evil = s.url(`/x$(touch ${canary})`);
    s.route(new URL(evil).pathname, { body: 'x' });
    const hook = recorder('safe');
    await t.bgdl(['session', 'create', 'safe', '--hook', `${hook.cmd} "$BGDL_EVENT_COUNT"`]);
    const [task] = await addJson(['-s', 'safe', evil, '-o', 'safe.bin']);
    await waitFinal(t, [task.id]);
    // Delivered means the hook exited 0, so its records are complete.
    await waitUntil(async () => JSON.parse((await t.bgdl(['session', 'show', 'safe', '--json'])).stdout).undeliveredEvents === 0, 15_000, 'delivery');
    expect(hook.runs()).toHaveLength(1);
    expect(hook.runs()[0]!.stdin).toContain('touch');
    expect(fs.existsSync(canary)).toBe(false);
  });

  it('a worker killed while the hook runs leads to a second run (at least once)', async () => {
    s.route('/k.bin', { body: 'k' });
    const marker = path.join(t.dir, 'hook-started');
    const script = path.join(t.dir, 'slow-hook.sh');
    fs.writeFileSync(script, `#!/bin/sh\necho run >> "${marker}"\nn=$(wc -l < "${marker}")\n[ "$n" -ge 2 ] && exit 0\nsleep 30\n`, { mode: 0o755 });
    await t.bgdl(['session', 'create', 'crash', '--hook', script]);
    const [task] = await addJson(['-s', 'crash', s.url('/k.bin')]);
    await waitFinal(t, [task.id]);
    await waitUntil(() => fs.existsSync(marker), 15_000, 'the first hook run');
    const pid = t.workerPid()!;
    process.kill(pid, 'SIGKILL');
    await waitUntil(() => !alive(pid), 5000, 'the worker to die');
    expect(JSON.parse((await t.bgdl(['events', '-s', 'crash', '--json'])).stdout)).toHaveLength(1);
    await t.bgdl(['status']); // any command brings a worker back
    await waitUntil(() => fs.readFileSync(marker, 'utf8').trim().split('\n').length === 2, 15_000, 'the second hook run');
    await waitUntil(async () => JSON.parse((await t.bgdl(['events', '-s', 'crash', '--json'])).stdout).length === 0, 10_000, 'delivery');
  });
});

describe('the relaunch rate limiter', () => {
  it('delays hook-added tasks more with each hook run, and a person at a terminal resets it', async () => {
    t.setConfig({ rateLimitBase: '2s' });
    s.route('/chain.bin', { body: 'c' });
    // Each hook run adds one more task to the session from inside the hook, up to 3 runs.
    const counter = path.join(t.dir, 'chain-count');
    const script = path.join(t.dir, 'chain.sh');
    fs.writeFileSync(
      script,
      `#!/bin/sh
echo x >> "${counter}"
n=$(wc -l < "${counter}")
[ "$n" -le 3 ] && node "${(await import('../helpers/cli.js')).BIN}" add -s chain --json -o "chain-$n.bin" "${s.url('/chain.bin')}" > "${t.dir}/added-$n.json"
exit 0
`,
      { mode: 0o755 },
    );
    await t.bgdl(['session', 'create', 'chain', '--hook', script]);
    const [first] = await addJson(['-s', 'chain', s.url('/chain.bin'), '-o', 'chain-0.bin']);
    await waitFinal(t, [first.id]);
    const addedFile = (n: number) => path.join(t.dir, `added-${n}.json`);
    await waitUntil(() => fs.existsSync(addedFile(3)) && fs.readFileSync(addedFile(3), 'utf8').trim().endsWith(']'), 30_000, 'three hook runs');
    const added = [1, 2, 3].map((n) => JSON.parse(fs.readFileSync(path.join(t.dir, `added-${n}.json`), 'utf8'))[0]);
    // Hook-added tasks are discretionary, and wait 0, then 2 s, then 4 s.
    expect(added.map((a) => a.discretionary)).toEqual([true, true, true]);
    const delays = added.map((a) => (a.nextAttemptAt ? new Date(a.nextAttemptAt).getTime() - new Date(a.createdAt).getTime() : 0));
    expect(delays[0]).toBe(0);
    expect(delays[1]).toBe(2000);
    expect(delays[2]).toBe(4000);
    expect(added[2].waitingFor).toBe('rate-limit');
    const show = JSON.parse((await t.bgdl(['session', 'show', 'chain', '--json'])).stdout);
    expect(show.rateLimitCount).toBeGreaterThanOrEqual(3);
    const all = await statusJson(t);
    expect(all.filter((x) => x.session === 'chain')).toHaveLength(4);
    // Let the chain finish (the last task's hook run) before looking at the streak.
    await waitFinal(t, all.map((x) => x.id));
    await waitUntil(async () => JSON.parse((await t.bgdl(['session', 'show', 'chain', '--json'])).stdout).undeliveredEvents === 0, 15_000, 'delivery');
    // Run from a script (no terminal), bgdl leaves the streak alone; a person at a terminal resets it.
    await t.bgdl(['status', '-s', 'chain']);
    expect(JSON.parse((await t.bgdl(['session', 'show', 'chain', '--json'])).stdout).rateLimitCount).toBeGreaterThanOrEqual(3);
    const { BIN } = await import('../helpers/cli.js');
    const { execFileSync } = await import('node:child_process');
    execFileSync('script', ['-qec', `${process.execPath} ${BIN} status -s chain`, '/dev/null'], { env: t.env, stdio: 'ignore' });
    expect(JSON.parse((await t.bgdl(['session', 'show', 'chain', '--json'])).stdout).rateLimitCount).toBe(0);
  }, 60_000);
});
