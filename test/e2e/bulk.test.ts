// A queue of thousands from the real CLI: pause/resume/cancel/retry by -s, --state and --all
// (refusing mixed or empty selections), status --state, and prune.

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { statusJson, testdir, type TestDir } from '../helpers/cli.js';

let t: TestDir;
beforeEach(async () => {
  t = await testdir();
});
afterEach(async () => {
  await t.cleanup();
});

/** Tasks that never reach the network: port 9 (discard) is closed, and they are paused or far in the future. */
const URL = (n: number) => `http://127.0.0.1:9/f${n}`;

async function run(args: string[], code = 0) {
  const r = await t.bgdl(args);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
  return r;
}

const statesById = async () => Object.fromEntries((await statusJson(t)).map((x) => [x.id, x.state]));

describe('bulk control', () => {
  it('acts on the tasks -s, --state and --all select, among those the action applies to', async () => {
    // Paused, and never runnable once resumed or retried (begin-at a day away).
    await run(['add', URL(1), URL(2), '-s', 'a', '--suspended', '--begin-at', '1d']); // 1, 2 paused
    await run(['add', URL(3), '-s', 'b', '--suspended', '--begin-at', '1d']); // 3 paused
    await run(['add', URL(4), '-s', 'b', '--begin-at', '1d']); // 4 queued

    const resumed = await run(['resume', '-s', 'a']);
    expect(resumed.stdout).toBe('1\tqueued\n2\tqueued\n');
    expect(await statesById()).toEqual({ 1: 'queued', 2: 'queued', 3: 'paused', 4: 'queued' });

    const paused = await run(['pause', '--state', 'queued', '--json']);
    expect(JSON.parse(paused.stdout).map((x: any) => x.id)).toEqual([1, 2, 4]);
    expect(await statesById()).toEqual({ 1: 'paused', 2: 'paused', 3: 'paused', 4: 'paused' });

    const canceled = await run(['cancel', '-s', 'b', '--state', 'paused']);
    expect(canceled.stdout).toBe('3\tcanceled\n4\tcanceled\n');

    // Nothing selected can change: exit 0, a note, nothing printed on stdout.
    const none = await run(['retry', '-s', 'a']);
    expect(none.stdout).toBe('');
    expect(none.stderr).toMatch(/no selected task could be retried/);

    const retried = await run(['retry', '--all']);
    expect(retried.stdout).toBe('3\tqueued\n4\tqueued\n');
    await run(['cancel', '--all']);
    expect(await statesById()).toEqual({ 1: 'canceled', 2: 'canceled', 3: 'canceled', 4: 'canceled' });
  });

  it.each([
    [['cancel', '--all', '1'], /IDs or --all, not both/],
    [['pause', '-s', 'a', '1'], /IDs or select with -s\/--state, not both/],
    [['resume', '--state', 'paused', '1'], /not both/],
    [['cancel'], /which tasks\? give task IDs, -s NAME, --state STATE or --all/],
    [['retry', '--all', '-s', 'a'], /--all means every task/],
    [['pause', '--state', 'sleeping'], /invalid state 'sleeping'/],
    [['status', '--state', 'done'], /invalid state 'done'/],
    [['prune', '--state', 'queued'], /invalid state 'queued'.*completed, failed, canceled/],
    [['prune', '--older-than', 'ages'], /invalid --older-than/],
  ])('refuses %j with exit 2 and changes nothing', async (args, why) => {
    await run(['add', URL(1), '-s', 'a', '--suspended']);
    const r = await run(args as string[], 2);
    expect(r.stderr).toMatch(/^bgdl: /);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(why);
    expect(await statesById()).toEqual({ 1: 'paused' });
  });

  it('an unknown session is exit 3', async () => {
    await run(['add', URL(1), '--suspended']);
    const r = await run(['cancel', '-s', 'nosuch'], 3);
    expect(r.stderr).toMatch(/no session named 'nosuch'/);
    expect(await statesById()).toEqual({ 1: 'paused' });
  });
});

describe('status filters', () => {
  it('--state (one or several) with and without -s', async () => {
    await run(['add', URL(1), '-s', 'a', '--suspended']);
    await run(['add', URL(2), '-s', 'b', '--suspended']);
    await run(['add', URL(3), '-s', 'b', '--begin-at', '1d']);
    const ids = async (args: string[]) => JSON.parse((await run(['status', '--json', ...args])).stdout).map((x: any) => x.id);
    expect(await ids(['--state', 'paused'])).toEqual([1, 2]);
    expect(await ids(['--state', 'paused', '-s', 'b'])).toEqual([2]);
    expect(await ids(['--state', 'queued,paused', '-s', 'b'])).toEqual([2, 3]);
    expect(await ids(['--state', 'completed'])).toEqual([]);
    const table = await run(['status', '--state', 'queued']);
    expect(table.stdout).toMatch(/^\s*3\s/m);
    expect(table.stdout).not.toMatch(/^\s*1\s/m);
  });
});

describe('prune', () => {
  it('removes finished tasks by state and age with their delivered events; keeps unfinished tasks and undelivered events', async () => {
    await run(['add', URL(1), URL(2), URL(3), '-s', 'a', '--suspended']);
    await run(['add', URL(4), '-s', 'b', '--suspended']);
    await run(['add', URL(5), '-s', 'a', '--suspended']); // stays unfinished
    await run(['cancel', '1', '2', '3', '4']);
    await run(['retry', '3']);
    await run(['pause', '3']);
    await run(['cancel', '3']); // task 3 has two canceled events
    // Deliver session a's events; session b's stay undelivered.
    await run(['events', '-s', 'a', '--ack']);

    expect((await run(['prune', '--older-than', '1h'])).stdout).toBe('removed 0 task(s) and 0 delivered event(s)\n');
    expect((await run(['prune', '--state', 'completed,failed'])).stdout).toBe('removed 0 task(s) and 0 delivered event(s)\n');
    expect((await run(['prune', '-s', 'a', '--older-than', '0s'])).stdout).toBe('removed 3 task(s) and 4 delivered event(s)\n');
    expect(await statesById()).toEqual({ 4: 'canceled', 5: 'paused' });

    // Task 4's event is undelivered: the task goes, its event stays for the hook or `bgdl events`.
    expect((await run(['prune', '--state', 'canceled'])).stdout).toBe('removed 1 task(s) and 0 delivered event(s)\n');
    expect(await statesById()).toEqual({ 5: 'paused' });
    const left = JSON.parse((await run(['events', '--json'])).stdout);
    expect(left.map((e: any) => [e.taskId, e.type])).toEqual([[4, 'canceled']]);

    // IDs are never reused after a prune.
    const added = JSON.parse((await run(['add', URL(6), '--suspended', '--json'])).stdout);
    expect(added[0].id).toBe(6);
    expect(fs.existsSync(path.join(t.home, 'bgdl.db'))).toBe(true);
  });

  it('an unknown session is exit 3', async () => {
    await run(['add', URL(1), '--suspended']);
    const r = await run(['prune', '-s', 'nosuch'], 3);
    expect(r.stderr).toMatch(/no session named 'nosuch'/);
  });
});
