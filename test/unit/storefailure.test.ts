import { describe, expect, it } from 'vitest';
import { NotFoundError, StoreError } from '../../src/shared/errors.js';
import { failureKind, guardMethods, storeFailure } from '../../src/store/sqlite/failure.js';

describe('failureKind', () => {
  it.each([
    ['SQLITE_FULL', 'full'], ['SQLITE_IOERR_SHMSIZE', 'full'], ['ENOSPC', 'full'], ['EDQUOT', 'full'],
    ['SQLITE_CORRUPT', 'damaged'], ['SQLITE_CORRUPT_INDEX', 'damaged'], ['SQLITE_NOTADB', 'damaged'],
    ['SQLITE_BUSY', 'busy'], ['SQLITE_BUSY_SNAPSHOT', 'busy'], ['SQLITE_LOCKED', 'busy'],
    ['SQLITE_IOERR', 'io'], ['SQLITE_IOERR_WRITE', 'io'], ['SQLITE_CANTOPEN', 'io'], ['SQLITE_READONLY_DBMOVED', 'io'], ['EIO', 'io'],
    ['SQLITE_ERROR', null], ['SQLITE_CONSTRAINT_UNIQUE', null], ['SQLITE_MISUSE', null], ['', null],
  ])('%s is %s', (code, kind) => expect(failureKind(code)).toBe(kind));
});

describe('storeFailure', () => {
  const sqlite = (code: string, message: string) => Object.assign(new Error(message), { code });
  it('names the file and what to do, on one line', () => {
    const full = storeFailure(sqlite('SQLITE_FULL', 'database or disk is full'), '/h/bgdl.db') as StoreError;
    expect(full).toBeInstanceOf(StoreError);
    expect(full.exitCode).toBe(4);
    expect(full.code).toBe('E_STORE_FULL');
    expect(full.message).toMatch(/\/h\/bgdl\.db.*free space under BGDL_HOME \(\/h\)/);
    const bad = storeFailure(sqlite('SQLITE_CORRUPT', 'database disk image is\nmalformed'), '/h/bgdl.db') as StoreError;
    expect(bad.code).toBe('E_STORE_DAMAGED');
    expect(bad.message).toMatch(/move it aside/);
    expect(bad.message).not.toMatch(/\n/);
  });
  it('leaves other errors alone', () => {
    const nf = new NotFoundError('no task');
    expect(storeFailure(nf, '/h/bgdl.db')).toBe(nf);
    const bug = sqlite('SQLITE_ERROR', 'no such column: x');
    expect(storeFailure(bug, '/h/bgdl.db')).toBe(bug);
  });
  it('guards sync and async methods alike', async () => {
    class Thing {
      file = '/h/bgdl.db';
      sync(): number {
        throw sqlite('SQLITE_IOERR', 'disk I/O error');
      }
      async later(): Promise<number> {
        throw sqlite('SQLITE_FULL', 'database or disk is full');
      }
      async fine(): Promise<number> {
        return 7;
      }
    }
    guardMethods(Thing.prototype, (t) => t.file);
    const t = new Thing();
    expect(() => t.sync()).toThrow(StoreError);
    await expect(t.later()).rejects.toMatchObject({ code: 'E_STORE_FULL' });
    await expect(t.fine()).resolves.toBe(7);
  });
});
