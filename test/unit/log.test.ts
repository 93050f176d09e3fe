// The log file keeps one descriptor open between lines (src/shared/log.ts): what it writes must still
// land in the file at the name, 0600, after the file is rotated or removed under it.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Logger } from '../../src/shared/log.js';

let home: string;
let log: Logger;
beforeEach(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-log-'));
  log = new Logger(home, false);
});
afterEach(() => {
  log.close();
  fs.rmSync(home, { recursive: true, force: true });
});
const file = () => path.join(home, 'bgdl.log');
const lines = (p = file()) => fs.readFileSync(p, 'utf8').trim().split('\n');
/** Enough lines that the logger looks at the name again (it does every 100 lines). */
const many = (tag: string) => {
  for (let i = 0; i < 100; i++) log.write('s', `${tag} ${i}`);
};

describe('Logger', () => {
  it('appends each line, tagged with its scope, to a 0600 file; a newline in a message is indented', () => {
    log.write('worker', 'started');
    log.write('s1', 'two\nlines');
    expect(lines()).toEqual([expect.stringMatching(/ \[worker\] started$/), expect.stringMatching(/ \[s1\] two$/), '    lines']);
    expect(fs.statSync(file()).mode & 0o777).toBe(0o600);
  });

  it('appends after what another process wrote, not over it', () => {
    log.write('a', 'one');
    fs.appendFileSync(file(), 'from another process\n');
    log.write('a', 'two');
    expect(lines().map((l) => l.replace(/^\d\S+ /, ''))).toEqual(['[a] one', 'from another process', '[a] two']);
  });

  it('writes to the file at the name again after another process rotated it', () => {
    log.write('s', 'before');
    fs.renameSync(file(), `${file()}.1`);
    many('after');
    expect(lines(`${file()}.1`)[0]).toMatch(/before$/);
    expect(lines().at(-1)).toMatch(/after 99$/);
    expect(fs.statSync(file()).mode & 0o777).toBe(0o600);
  });

  it('creates the file again after it was removed', () => {
    log.write('s', 'before');
    fs.unlinkSync(file());
    many('after');
    expect(lines().at(-1)).toMatch(/after 99$/);
  });

  it('rotates a file grown past 20 MiB to bgdl.log.1', () => {
    log.write('s', 'first');
    fs.truncateSync(file(), 21 * 1024 * 1024);
    many('after');
    expect(fs.statSync(`${file()}.1`).size).toBeGreaterThanOrEqual(21 * 1024 * 1024);
    expect(lines().at(-1)).toMatch(/after 99$/);
    expect(fs.statSync(file()).size).toBeLessThan(1024 * 1024);
  });
});
