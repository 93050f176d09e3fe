// Output ownership in the store (two live tasks never share an output) and directory creation at add.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeDir } from '../../src/cli/commands/add.js';
import { UsageError } from '../../src/shared/errors.js';
import type { NewTask } from '../../src/shared/model.js';
import { Store } from '../../src/store/index.js';

const rl = { base: 10_000, max: 3_600_000 };
const newTask = (p: Partial<NewTask> = {}): NewTask => ({
  session: 'default', kind: 'download', url: 'http://a.test/f', method: 'GET', headers: [], output: null, outputFixed: false, dir: '/tmp',
  beginAt: null, discretionary: null, priority: 'normal', expectSend: null, expectReceive: null, sha256Expected: null, suspended: false,
  insecure: false, caFile: null, allowDowngrade: false, fromHook: false, ...p,
});
const fixed = (output: string) => newTask({ output, outputFixed: true, dir: path.dirname(output) });

let home: string;
let store: Store;
beforeEach(async () => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-outputs-'));
  store = await Store.open(path.join(home, 'h'));
});
afterEach(async () => {
  await store.close();
  fs.rmSync(home, { recursive: true, force: true });
});

describe('one live task per output', () => {
  it('refuses a fixed output a live task has, naming it, and stores nothing of that batch', async () => {
    const [a] = await store.enqueue([fixed('/d/a.bin')], rl);
    await expect(store.enqueue([fixed('/d/b.bin'), fixed('/d/a.bin')], rl)).rejects.toThrow(new RegExp(`/d/a\\.bin is already the output of task ${a!.id} \\(queued\\)`));
    await expect(store.enqueue([fixed('/d/c.bin'), fixed('/d/c.bin')], rl)).rejects.toThrow(UsageError);
    expect((await store.listTasks()).map((t) => t.output)).toEqual(['/d/a.bin']);
  });

  it('counts paused tasks and derived outputs already chosen; derived tasks without a name yet do not conflict', async () => {
    const [p] = await store.enqueue([fixed('/d/p.bin'), newTask(), newTask()], rl).then((ts) => [ts[0]!]);
    await store.transition([p!.id], 'pause');
    await expect(store.enqueue([fixed('/d/p.bin')], rl)).rejects.toThrow(/\(paused\)/);
    const [d] = await store.enqueue([newTask({ dir: '/d' })], rl);
    await store.recordResponse({ id: d!.id, claim: d!.claim }, { output: '/d/derived.bin' });
    await expect(store.enqueue([fixed('/d/derived.bin')], rl)).rejects.toThrow(new RegExp(`task ${d!.id}`));
  });

  it('a final task frees its output; retry leaves a task alone whose output was taken since', async () => {
    const [a] = await store.enqueue([fixed('/d/a.bin')], rl);
    await store.transition([a!.id], 'cancel');
    const [b] = await store.enqueue([fixed('/d/a.bin')], rl);
    const r = await store.transition([a!.id], 'retry');
    expect(r.changed).toEqual([]);
    expect(r.skipped[0]!.reason).toMatch(new RegExp(`now the output of task ${b!.id}`));
    await store.transition([b!.id], 'cancel');
    expect((await store.transition([a!.id], 'retry')).changed.map((t) => t.id)).toEqual([a!.id]);
  });

  it('of two canceled tasks with one output, one retry call requeues only the first', async () => {
    const [a] = await store.enqueue([fixed('/d/x.bin')], rl);
    await store.transition([a!.id], 'cancel');
    const [b] = await store.enqueue([fixed('/d/x.bin')], rl);
    await store.transition([b!.id], 'cancel');
    const r = await store.transition([a!.id, b!.id], 'retry');
    expect(r.changed.map((t) => t.id)).toEqual([a!.id]);
    expect(r.skipped.map((s) => s.task.id)).toEqual([b!.id]);
  });
});

describe('makeDir', () => {
  it('creates missing parents one level at a time', () => {
    const dir = path.join(home, 'a', 'b', 'c');
    makeDir(dir);
    expect(fs.statSync(dir).isDirectory()).toBe(true);
    makeDir(dir); // already there: fine
  });
  it('refuses a parent that is a file', () => {
    fs.writeFileSync(path.join(home, 'file'), 'x');
    expect(() => makeDir(path.join(home, 'file', 'sub'))).toThrow(/is not a directory/);
  });
  it('fails at once where a parent refuses new entries (/proc)', () => {
    if (!fs.existsSync('/proc/1')) {
      console.warn('notice: no /proc/1 on this system; skipping the /proc case');
      return;
    }
    expect(() => makeDir('/proc/1/nope/deeper')).toThrow(UsageError);
  });
});
