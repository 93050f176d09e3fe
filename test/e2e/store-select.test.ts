// Choosing the store: BGDL_STORE and config `store` (a PostgreSQL URL, or local), their bad values
// (exit 2) and an unreachable server (exit 4), each one `bgdl: ` line naming no password.

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { reconnectDelay } from '../../src/cli/commands/worker.js';
import { parseStoreUrl, storeUrl } from '../../src/shared/config.js';
import { UsageError } from '../../src/shared/errors.js';
import { testdir, type TestDir } from '../helpers/cli.js';

describe('store URLs', () => {
  it.each(['postgres://u@h:5432/db', 'postgresql://u:pw@h/db?schema=x'])('accepts %s', (url) => expect(parseStoreUrl(url, 'store')).toBe(url));
  it.each(['ftp://h/db', 'postgres:///db', 'not a url', 'sqlite:///tmp/x'])('refuses %j', (url) => expect(() => parseStoreUrl(url, 'store')).toThrow(UsageError));
  it('local means the local store, BGDL_STORE wins over the config', () => {
    expect(parseStoreUrl('local', 'store')).toBeNull();
    expect(storeUrl({ BGDL_STORE: 'postgres://a@b/c', XDG_CONFIG_HOME: '/nonexistent' })).toBe('postgres://a@b/c');
    expect(storeUrl({ BGDL_STORE: 'local', XDG_CONFIG_HOME: '/nonexistent' })).toBeNull();
    expect(storeUrl({ XDG_CONFIG_HOME: '/nonexistent' })).toBeNull();
  });
  it('a worker reconnects after 1 s, doubling to 30 s', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 10].map(reconnectDelay)).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });
});

describe('store selection from the CLI', () => {
  let t: TestDir;
  beforeEach(async () => {
    t = await testdir();
  });
  afterEach(async () => {
    await t.cleanup();
  });

  it('a malformed BGDL_STORE is exit 2; an unreachable one is exit 4; one line, no password', async () => {
    const bad = await t.bgdl(['status'], { env: { BGDL_STORE: 'ftp://u:sekrit@h/db' } });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^bgdl: invalid value for BGDL_STORE: use postgres:\/\/USER@HOST:PORT\/DB/);
    const gone = await t.bgdl(['add', 'http://127.0.0.1:9/x'], { env: { BGDL_STORE: 'postgres://u:sekrit@127.0.0.1:1/db' } });
    expect(gone.code).toBe(4);
    expect(gone.stderr).toMatch(/^bgdl: the store postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/db cannot be reached/);
    for (const r of [bad, gone]) {
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).not.toMatch(/sekrit/);
    }
  });

  it("sslmode require, prefer or verify-ca: still one line, no node-postgres warning (they mean verify-full, as node-postgres 8 takes them)", async () => {
    for (const mode of ['require', 'prefer', 'verify-ca']) {
      const r = await t.bgdl(['status'], { env: { BGDL_STORE: `postgres://u@127.0.0.1:1/db?sslmode=${mode}` } });
      expect(r.code).toBe(4);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toMatch(new RegExp(`^bgdl: the store postgres://u@127\\.0\\.0\\.1:1/db\\?sslmode=${mode} cannot be reached`));
    }
  });

  it('config store takes a URL or local, refuses anything else, and never shows the password', async () => {
    expect((await t.bgdl(['config', 'set', 'store', 'mysql://h/db'])).code).toBe(2);
    expect((await t.bgdl(['config', 'set', 'store', 'postgres://bgdl:sekrit@db.example:5432/bgdl'])).code).toBe(0);
    const got = await t.bgdl(['config', 'get', 'store']);
    expect(got.stdout).toMatch(/db\.example/);
    expect(got.stdout).not.toMatch(/sekrit/);
    // The config file holds the password: readable by its owner only.
    expect(fs.statSync(path.join(t.env.XDG_CONFIG_HOME!, 'bgdl', 'config.json')).mode & 0o777).toBe(0o600);
  });

  it('config list and get show the store BGDL_STORE names (it wins over the file), never its password', async () => {
    const env = { BGDL_STORE: 'postgres://bgdl:sekrit@shared.example:5432/q' };
    const list = await t.bgdl(['config', 'list'], { env });
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^store\s+postgres:\/\/\S*shared\.example:5432\/q \(from BGDL_STORE\)/m);
    expect(list.stdout + list.stderr).not.toMatch(/sekrit/);
    expect((await t.bgdl(['config', 'get', 'store'], { env })).stdout).toMatch(/shared\.example/);
    expect(JSON.parse((await t.bgdl(['config', 'list', '--json'], { env })).stdout).store).toMatch(/shared\.example/);
    // The file's own value is set and kept, and the message says which one is in effect.
    const set = await t.bgdl(['config', 'set', 'store', 'local'], { env });
    expect(set.code).toBe(0);
    expect(set.stderr).toMatch(/BGDL_STORE is set and wins over the config file/);
    expect((await t.bgdl(['config', 'get', 'store'])).stdout).toBe('local\n');
  });
});
