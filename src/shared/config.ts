// User defaults (`bgdl config`), kept with conf under $XDG_CONFIG_HOME/bgdl/config.json.
// Values are stored as the user typed them and parsed on read, so the worker re-reads the file
// every couple of seconds and a change takes effect without a restart.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Conf from 'conf';
import { parseRate, parseRateSchedule, type Rate, type ScheduleEntry } from './bandwidth.js';
import { UsageError } from './errors.js';
import type { Split } from './model.js';
import { formatDuration, parseDuration, parseFreeSpace, parseSize, parseWindow, type FreeSpaceRule } from './parse.js';

export interface Config {
  maxConcurrent: number;
  perHost: number;
  stallTimeout: number;
  resourceTimeout: number;
  retryBaseDelay: number;
  retryMaxDelay: number;
  hookTimeout: number;
  hookRetryDelay: number;
  rateLimitBase: number;
  rateLimitMax: number;
  discretionaryWindow: { start: number; end: number } | null;
  discretionaryMaxLoad: number;
  downloadDir: string | null;
  /** Attempts of one task before it fails with its last error (null: unlimited). */
  maxAttempts: number | null;
  /** Bytes per second shared by every running transfer (null: unlimited). */
  maxRate: Rate;
  /** The global cap by local time (empty: none). */
  rateSchedule: ScheduleEntry[];
  /** Bytes a download may have at most (null: no bound); a task's --max-size wins. */
  maxFileSize: number | null;
  /** Free space a download never writes below (see reserveBytes). */
  minFreeSpace: FreeSpaceRule;
  leaseTimeout: number;
  /** Connections for one file (`--split`): 1-16 or 'auto'. */
  split: Split;
  /** The smallest segment a split download makes (bytes). */
  minSplitSize: number;
  /** Requests to an HTTP/1.1 origin at perHost may wait behind others on its busy connections. */
  pipelining: boolean;
  /** A shared PostgreSQL store's URL (null: the local SQLite store under BGDL_HOME); BGDL_STORE wins. */
  store: string | null;
}

type Key = keyof Config;

function positiveInt(text: string, key: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < 1 || Number(text) > 1000) {
    throw new UsageError(`invalid value '${text}' for ${key}: use a whole number from 1 to 1000`);
  }
  return Number(text);
}

/** A count of at least 1 (attempts). */
export function positiveCount(text: string, what: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < 1 || !Number.isSafeInteger(Number(text))) {
    throw new UsageError(`invalid value '${text}' for ${what}: use a whole number of at least 1`);
  }
  return Number(text);
}

function duration(text: string, key: string): number {
  const ms = parseDuration(text, `value for ${key}`);
  if (ms <= 0) throw new UsageError(`invalid value '${text}' for ${key}: must be more than zero`);
  return ms;
}

interface KeySpec {
  describe: string;
  defaultText: () => string;
  parse: (text: string, key: string) => Config[Key];
}

const durationKey = (describe: string, def: string): KeySpec => ({ describe, defaultText: () => def, parse: duration });

export const CONFIG_KEYS: Record<Key, KeySpec> = {
  maxConcurrent: { describe: 'transfers at once, all sessions', defaultText: () => '8', parse: positiveInt },
  perHost: { describe: 'transfers at once to one origin', defaultText: () => '6', parse: positiveInt },
  stallTimeout: durationKey('no body bytes for this long: abort the attempt and retry', '60s'),
  resourceTimeout: durationKey('a task not finished this long after it was added fails', '7d'),
  retryBaseDelay: durationKey('first backoff between attempts of a transient failure', '1s'),
  retryMaxDelay: durationKey('longest backoff between attempts', '5m'),
  hookTimeout: durationKey('a hook still running after this is killed and counts as failed', '10m'),
  hookRetryDelay: durationKey('first wait before re-running a failed hook (doubles, at most 1h)', '30s'),
  rateLimitBase: durationKey("the hook relaunch rate limiter's first step", '10s'),
  rateLimitMax: durationKey("the hook relaunch rate limiter's cap", '1h'),
  discretionaryWindow: {
    describe: 'local time window for discretionary tasks, e.g. 01:00-06:00 (none: any time)',
    defaultText: () => 'none',
    parse: (text) => (text === 'none' ? null : parseWindow(text)),
  },
  discretionaryMaxLoad: {
    describe: '1-minute load average at or above which discretionary tasks wait',
    defaultText: () => String(os.availableParallelism()),
    parse: (text, key) => {
      const n = Number(text);
      if (text.trim() === '' || !Number.isFinite(n) || n <= 0) throw new UsageError(`invalid value '${text}' for ${key}: use a positive number such as 2 or 1.5`);
      return n;
    },
  },
  maxAttempts: {
    describe: 'attempts of one task before it fails with its last error (unlimited: retry until resourceTimeout)',
    defaultText: () => 'unlimited',
    parse: (text, key) => (text === 'unlimited' ? null : positiveCount(text, key)),
  },
  downloadDir: {
    describe: 'default directory for downloads (none: the directory bgdl add runs in; ~ is your home)',
    defaultText: () => 'none',
    parse: (text) => (text === 'none' ? null : path.resolve(expandHome(text))),
  },
  maxRate: {
    describe: 'bytes per second shared by all running transfers, e.g. 2M (0: unlimited)',
    defaultText: () => '0',
    parse: (text, key) => parseRate(text, `value for ${key}`),
  },
  rateSchedule: {
    describe: 'global cap by local time, e.g. 08:00-18:00=500K,18:00-23:00=2M,*=0 (none: no schedule)',
    defaultText: () => 'none',
    parse: (text) => parseRateSchedule(text),
  },
  maxFileSize: {
    describe: 'a download larger than this fails (none: no bound); --max-size sets it per task',
    defaultText: () => 'none',
    parse: (text, key) => (text === 'none' ? null : positiveSize(text, key)),
  },
  minFreeSpace: {
    describe: 'never write below this free space (size, N% of the filesystem, or both: the smaller); below it tasks wait',
    defaultText: () => '1%,256MiB',
    parse: (text, key) => parseFreeSpace(text, `value for ${key}`),
  },
  split: {
    describe: 'connections for one file when the server allows ranges: 1-16 or auto (--split)',
    defaultText: () => '1',
    parse: (text, key) => parseSplit(text, key),
  },
  minSplitSize: {
    describe: 'the smallest segment a split download makes, e.g. 4MiB',
    defaultText: () => '4MiB',
    parse: (text, key) => minSplit(text, key),
  },
  pipelining: {
    describe: 'on: once an http:// origin has perHost busy connections, plain downloads may send their requests behind others on them (HTTP/1.1 pipelining); off: each waits for a connection of its own',
    defaultText: () => 'on',
    parse: (text, key) => onOff(text, key),
  },
  leaseTimeout: {
    describe: 'a worker silent this long loses its running tasks to another worker',
    defaultText: () => '30s',
    parse: (text, key) => {
      const ms = duration(text, key);
      // Heartbeats come a few times within the timeout: shorter than a second would let a busy machine's
      // scheduling delays pass for a dead worker; longer than a day would leave work unattended.
      if (ms < 1000 || ms > 86_400_000) throw new UsageError(`invalid value '${text}' for ${key}: use a duration from 1s to 1d`);
      return ms;
    },
  },
  store: {
    describe: 'a shared PostgreSQL store, postgres://USER@HOST:PORT/DB, drained by the workers of many hosts (local: the store under BGDL_HOME)',
    defaultText: () => 'local',
    parse: (text, key) => parseStoreUrl(text, key),
  },
};

/** `--split N` / `split`: 1 to 16 connections for one file, or `auto`. */
export function parseSplit(text: string, what: string): Split {
  const t = text.trim().toLowerCase();
  if (t === 'auto') return 'auto';
  if (!/^\d+$/.test(t) || Number(t) < 1 || Number(t) > 16) throw new UsageError(`invalid value '${text}' for ${what}: use a whole number from 1 to 16, or auto`);
  return Number(t);
}

function onOff(text: string, key: string): boolean {
  const t = text.trim().toLowerCase();
  if (t !== 'on' && t !== 'off') throw new UsageError(`invalid value '${text}' for ${key}: use on or off`);
  return t === 'on';
}

/** The smallest segment of a split download: at least 1 KiB (a smaller one costs more in requests than it saves). */
function minSplit(text: string, key: string): number {
  const n = parseSize(text, `value for ${key}`);
  if (n < 1024) throw new UsageError(`invalid value '${text}' for ${key}: use a size of at least 1KiB, such as 4MiB`);
  return n;
}

/** `local`, or a postgres:// URL (checked for its form here; the store says whether it can be reached). */
export function parseStoreUrl(text: string, what: string): string | null {
  if (text === 'local') return null;
  let u: URL | null = null;
  try {
    u = new URL(text);
  } catch {
    /* reported below */
  }
  if (!u || (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') || !u.hostname) {
    throw new UsageError(`invalid value for ${what}: use postgres://USER@HOST:PORT/DB for a shared store, or local`);
  }
  return text;
}

/** Config keys an environment variable overrides when set (non-empty): the one place that rule lives. */
const OVERRIDDEN_BY: Partial<Record<string, string>> = { store: 'BGDL_STORE' };

/** The environment variable that overrides config `key` in `env`, and its value; null when none does. */
export function envOverride(env: NodeJS.ProcessEnv, key: string): { variable: string; value: string } | null {
  const variable = OVERRIDDEN_BY[key];
  const value = variable ? env[variable]?.trim() : undefined;
  return variable && value ? { variable, value } : null;
}

/** The store this environment points at: BGDL_STORE, else config `store`; null for the local store. */
export function storeUrl(env: NodeJS.ProcessEnv = process.env): string | null {
  const over = envOverride(env, 'store');
  if (over) return parseStoreUrl(over.value, over.variable);
  return loadConfig(env).store;
}

/** A size of at least one byte (`--max-size`, maxFileSize). */
export function positiveSize(text: string, what: string): number {
  const n = parseSize(text, `value for ${what}`);
  if (n <= 0) throw new UsageError(`invalid value '${text}' for ${what}: must be more than zero`);
  return n;
}

/**
 * `~` and `~/x` as the shell would expand them (a quoted '~/x' reaches us unexpanded). `~user` is
 * left alone: it is rare and would need the password database.
 */
export function expandHome(text: string, home = os.homedir()): string {
  return text === '~' ? home : text.startsWith('~/') ? path.join(home, text.slice(2)) : text;
}

/** Edit distance between two strings, case-insensitive (for "did you mean"). */
function distance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** The known key nearest to `key`, when it is near enough to be a slip (a third of its letters, at least 2). */
export function nearestKey(key: string): string | null {
  let best: { key: string; d: number } | null = null;
  for (const k of Object.keys(CONFIG_KEYS)) {
    const d = distance(key, k);
    if (!best || d < best.d) best = { key: k, d };
  }
  return best && best.d <= Math.max(2, Math.floor(best.key.length / 3)) ? best.key : null;
}

export function checkKey(key: string): Key {
  if (!Object.hasOwn(CONFIG_KEYS, key)) {
    const near = nearestKey(key);
    throw new UsageError(`unknown config key '${key}': ${near ? `did you mean ${near}? ` : ''}(bgdl config list shows every key)`);
  }
  return key as Key;
}

export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'bgdl');
}

/** conf writes the file (atomically); it is imported only by commands that change settings. */
async function openConf(env: NodeJS.ProcessEnv): Promise<Conf<Record<string, string>>> {
  const { default: ConfClass } = await import('conf');
  // 0600: the file may hold a shared store's URL with its password (config store).
  return new ConfClass<Record<string, string>>({ cwd: configDir(env), configName: 'config', projectName: 'bgdl', configFileMode: 0o600 });
}

/**
 * The stored raw values (as typed). Read straight from conf's JSON file: loading conf itself costs
 * more start-up time than every other module of `bgdl add`, and reading needs none of it.
 */
export function readRawConfig(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  try {
    const data = JSON.parse(fs.readFileSync(path.join(configDir(env), 'config.json'), 'utf8'));
    return data && typeof data === 'object' ? data : {};
  } catch {
    return {};
  }
}

/** Parse a full config; a bad stored value falls back to the default rather than stopping the worker. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const raw = readRawConfig(env);
  const out = {} as Record<Key, unknown>;
  for (const key of Object.keys(CONFIG_KEYS) as Key[]) {
    const spec = CONFIG_KEYS[key];
    let value: unknown;
    try {
      value = spec.parse(raw[key] ?? spec.defaultText(), key);
    } catch {
      value = spec.parse(spec.defaultText(), key);
    }
    out[key] = value;
  }
  return out as unknown as Config;
}

/** Validate and store `value` for `key`; `default` removes the setting. */
export async function setConfig(key: string, value: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const k = checkKey(key);
  if (value !== 'default') CONFIG_KEYS[k].parse(value, k);
  const conf = await openConf(env);
  if (value === 'default') {
    conf.delete(k);
    return;
  }
  conf.set(k, k === 'downloadDir' && value !== 'none' ? path.resolve(expandHome(value, env.HOME || os.homedir())) : value);
}

export async function unsetConfig(key: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const k = checkKey(key);
  (await openConf(env)).delete(k);
}

export function describeDuration(ms: number): string {
  return formatDuration(ms);
}
