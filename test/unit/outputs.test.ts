// Output ownership in the store (two live tasks never share an output) and directory creation at add.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeDir } from '../../src/cli/commands/add.js';
import { UsageError } from '../../src/shared/errors.js';
import type { NewTask } from '../../src/shared/model.js';
import { SqliteStore as Store } from '../../src/store/index.js';

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
