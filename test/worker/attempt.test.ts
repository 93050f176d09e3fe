// An attempt started while its claim commits (worker.ts `schedule`, SQLite's previewClaim): it may send
// its request, and nothing more until the claim is known. Real store, real server, real files.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/shared/config.js';
import { Logger } from '../../src/shared/log.js';
import type { Task } from '../../src/shared/model.js';
import { SqliteStore } from '../../src/store/index.js';
import { TokenBucket } from '../../src/transfer/index.js';
import { runAttempt, type Active } from '../../src/worker/attempt.js';
import { newTask } from '../store/contract.js';
import { bodyFor, startServer, type TestServer } from '../helpers/server.js';

let dir: string;
let downloads: string;
let store: SqliteStore;
let s: TestServer;
beforeEach(async () => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-attempt-')));
  downloads = path.join(dir, 'downloads');
  fs.mkdirSync(downloads);
  store = await SqliteStore.open(path.join(dir, 'home'));
  s = await startServer();
});
afterEach(async () => {
  await store.close();
  await s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function active(task: Task, claim: Promise<Task | null>): Active {
  return {
    task, fence: { id: task.id, claim: task.claim }, claim, part: null, origin: new URL(task.url).origin, abort: new AbortController(), stopReason: null,
    bytes: 0, total: null, durable: 0, sample: { bytes: 0, at: Date.now(), speed: null }, dirty: false, bucket: new TokenBucket(null, Date.now()),
    segments: null, extra: 0, placing: false, behind: false,
  };
}

/**
 * The names that appeared in `dir` while `run` ran, from inotify: a sentinel file created afterwards
 * marks the end (events come in order), so an absence is known without a fixed wait.
 */
async function namesCreatedDuring(dir: string, run: () => Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  let sentinelSeen!: () => void;
  const done = new Promise<void>((resolve) => (sentinelSeen = resolve));
  const watcher = fs.watch(dir, (_event, name) => {
    if (name === 'sentinel') sentinelSeen();
    else if (name && !seen.includes(name)) seen.push(name);
  });
  try {
    await run();
    fs.writeFileSync(path.join(dir, 'sentinel'), '');
    await done;
  } finally {
    watcher.close();
    fs.rmSync(path.join(dir, 'sentinel'), { force: true });
  }
  return seen;
}

const context = () => ({ store, log: new Logger(path.join(dir, 'home')), config: () => loadConfig({ XDG_CONFIG_HOME: path.join(dir, 'config') }), reserved: new Set<string>() });

describe('a transfer leaves its slot once the network has given the whole body', () => {
  it('a small body that came with its head: before its file is even created', async () => {
    s.route('/small.bin', { body: { size: 20_000 } });
    const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
    const [queued] = await store.enqueue([newTask({ url: s.url('/small.bin'), dir: downloads })], { base: 10_000, max: 3_600_000 });
    const task = (await store.markRunning(queued!.id, Date.now(), lease))!;
    const atReceived: string[][] = [];
    await runAttempt({ ...context(), received: () => atReceived.push(fs.readdirSync(downloads)) }, active(task, Promise.resolve(task)));
    expect(atReceived).toEqual([[]]);
    expect(fs.readFileSync(path.join(downloads, 'small.bin')).equals(bodyFor(20_000))).toBe(true);
  });
});

describe('an attempt ahead of its claim', () => {
  it('refused (a command paused the task first): the request may go, but no file is created and nothing is written', async () => {
    s.route('/f.bin', { body: { size: 20_000 } });
    const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
    const [queued] = await store.enqueue([newTask({ url: s.url('/f.bin'), dir: downloads })], { base: 10_000, max: 3_600_000 });
    const ahead = store.previewClaim(queued!.id, Date.now())!;
    const claim = store.markRunning(queued!.id, Date.now(), lease);
    await store.transition([queued!.id], 'pause'); // before the claim's group commits
    const created = await namesCreatedDuring(downloads, () => runAttempt(context(), active(ahead, claim)));
    expect(await claim).toBeNull();
    expect(s.hits('/f.bin')).toBe(1);
    expect(created).toEqual([]); // not even a partial file made and removed again
    const [after] = await store.getTasks([queued!.id]);
    expect(after).toMatchObject({ state: 'paused', attempts: 0, claim: queued!.claim, output: null, partPath: null, error: null });
    expect(fs.readFileSync(path.join(dir, 'home', 'bgdl.log'), 'utf8')).toMatch(/taken over by another worker \(or canceled\)/);
  });

  it('granted: the same attempt completes the file', async () => {
    s.route('/f.bin', { body: { size: 20_000 } });
    const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
    const [queued] = await store.enqueue([newTask({ url: s.url('/f.bin'), dir: downloads })], { base: 10_000, max: 3_600_000 });
    const ahead = store.previewClaim(queued!.id, Date.now())!;
    await runAttempt(context(), active(ahead, store.markRunning(queued!.id, Date.now(), lease)));
    const [done] = await store.getTasks([queued!.id]);
    expect(done).toMatchObject({ state: 'completed', attempts: 1 });
    expect(fs.readFileSync(path.join(downloads, 'f.bin')).equals(bodyFor(20_000))).toBe(true);
  });

  it('an attempt that does more than its request first (--skip-existing) waits for the claim before anything', async () => {
    s.route('/f.bin', { body: { size: 20_000 } });
    const lease = (await store.takeLease(process.pid, Date.now(), 30_000, () => true))!;
    const [queued] = await store.enqueue([newTask({ url: s.url('/f.bin'), dir: downloads, skipExisting: true })], { base: 10_000, max: 3_600_000 });
    const ahead = store.previewClaim(queued!.id, Date.now())!;
    const claim = store.markRunning(queued!.id, Date.now(), lease);
    await store.transition([queued!.id], 'cancel');
    await runAttempt(context(), active(ahead, claim));
    expect(s.hits('/f.bin')).toBe(0);
    expect(fs.readdirSync(downloads)).toEqual([]);
    expect((await store.getTasks([queued!.id]))[0]).toMatchObject({ state: 'canceled', attempts: 0 });
  });
});
