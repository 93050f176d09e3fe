// Helpers for end-to-end tests: a temporary BGDL_HOME, running the real CLI, polling with a deadline.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';

export const BIN = path.resolve(import.meta.dirname, '../../bin/bgdl.js');

export interface TestDir {
  dir: string;
  home: string;
  downloads: string;
  env: NodeJS.ProcessEnv;
  /** Run the real CLI in this home. */
  bgdl(args: string[], opts?: RunOptions): Promise<RunResult>;
  /** The worker pid holding the lease, if any (null once released). */
  workerPid(): number | null;
  /**
   * Set user defaults by writing conf's JSON file directly (test set-up without a CLI start-up per
   * key; `bgdl config` itself is tested in core.test.ts). A running worker picks them up like any change.
   */
  setConfig(values: Record<string, string>): void;
  cleanup(): Promise<void>;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string | Buffer;
  timeoutMs?: number;
  /** Run bin/bgdl.js itself, as a shell runs `bgdl` (its first line is for the shell), not `node bin/bgdl.js`. */
  asCommand?: boolean;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], opts: RunOptions & { env: NodeJS.ProcessEnv }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const [file, argv] = opts.asCommand ? [BIN, args] : [process.execPath, [BIN, ...args]];
    const child = spawn(file, argv, { env: opts.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`bgdl ${args.join(' ')} timed out\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** Environment for a test: its own home and config, no proxies, no terminal niceties. */
export function testEnv(dir: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const k of ['PATH', 'LANG', 'TZ', 'SYSTEMROOT']) if (process.env[k]) env[k] = process.env[k];
  return {
    ...env,
    HOME: dir,
    BGDL_HOME: path.join(dir, 'home'),
    XDG_CONFIG_HOME: path.join(dir, 'config'),
    XDG_DATA_HOME: path.join(dir, 'data'),
    BGDL_WORKER_LINGER: '300',
    BGDL_POWER_SUPPLY_DIR: path.join(dir, 'no-power-supply'),
    // The machine's real load (a busy CI box) must not hold discretionary tasks in tests that do not test it.
    BGDL_LOADAVG: '0',
    CI: 'true',
    ...extra,
  };
}

export async function testdir(extraEnv: NodeJS.ProcessEnv = {}): Promise<TestDir> {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-test-')));
  const downloads = path.join(dir, 'downloads');
  fs.mkdirSync(downloads);
  const env = testEnv(dir, extraEnv);
  const home = env.BGDL_HOME!;
  const t: TestDir = {
    dir,
    home,
    downloads,
    env,
    bgdl: (args, opts = {}) => runCli(args, { cwd: downloads, ...opts, env: { ...env, ...opts.env } }),
    workerPid: () => leasePid(home),
    setConfig: (values) => {
      const dir = path.join(env.XDG_CONFIG_HOME!, 'bgdl');
      const file = path.join(dir, 'config.json');
      fs.mkdirSync(dir, { recursive: true });
      const current = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : {};
      fs.writeFileSync(file, JSON.stringify({ ...current, ...values }, null, '\t'));
    },
    cleanup: async () => {
      await stopWorker(home);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return t;
}

export function leasePid(home: string): number | null {
  const file = path.join(home, 'bgdl.db');
  if (!fs.existsSync(file)) return null;
  const db = new Database(file, { readonly: true, timeout: 5000 });
  try {
    const row = db.prepare('SELECT pid FROM lease WHERE id = 1').get() as { pid: number } | undefined;
    return row?.pid || null; // pid 0: released
  } catch {
    return null;
  } finally {
    db.close();
  }
}

/** Alive and not a zombie (a killed worker may wait a while to be reaped by init). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

/** Kill the home's worker (if any) and wait until it is gone. */
export async function stopWorker(home: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  const pid = leasePid(home);
  if (pid == null || !alive(pid)) return;
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  await waitUntil(() => !alive(pid), 10_000, `worker ${pid} to exit`);
}

/** Poll `check` until it returns a truthy value or the deadline passes. */
export async function waitUntil<T>(check: () => T | Promise<T>, timeoutMs = 20_000, what = 'condition', intervalMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** `bgdl status --json` parsed. */
export async function statusJson(t: TestDir, ids: number[] = []): Promise<any[]> {
  const r = await t.bgdl(['status', '--json', ...ids.map(String)]);
  if (r.code !== 0) throw new Error(`status failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** `bgdl add --json ARGS` (or another command that prints tasks) in `t`: the tasks it created; fails the test on a non-zero exit. */
export async function addJson(t: TestDir, args: string[], env?: NodeJS.ProcessEnv, command = 'add'): Promise<any[]> {
  const r = await t.bgdl([command, '--json', ...args], { env });
  if (r.code !== 0) throw new Error(`bgdl ${command} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Wait until every listed task is in a final state (one `bgdl wait --json`); returns their JSON. */
export async function waitFinal(t: TestDir, ids: number[], timeoutMs = 30_000): Promise<any[]> {
  const r = await t.bgdl(['wait', '--json', '--timeout', `${timeoutMs}ms`, ...ids.map(String)], { timeoutMs: timeoutMs + 10_000 });
  if (r.code !== 0 && r.code !== 1) throw new Error(`wait failed (${r.code}): ${r.stderr}`);
  if (/timed out/.test(r.stderr)) throw new Error(`tasks ${ids.join(',')} did not finish: ${r.stderr}`);
  return JSON.parse(r.stdout);
}
