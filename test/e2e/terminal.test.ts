// Daily use at a terminal and in scripts: the status summary with many tasks, Ctrl-C in `wait`,
// shell completion, and the small conveniences (repeated options, `~`, nearest config key, local times).

import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BIN, statusJson, testdir, waitUntil, type TestDir } from '../helpers/cli.js';

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
