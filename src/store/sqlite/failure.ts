// The store's own failures (a full disk, a damaged file, an I/O error, a lock held too long) as a
// StoreError: one line naming the file and what to do, exit 4. Errors that are not failures of the
// store (a NotFoundError, a bug in a statement) pass through unchanged.

import path from 'node:path';
import { StoreError } from '../../shared/errors.js';

/** What kind of failure an error code is (better-sqlite3's SqliteError `.code`, or a Node errno). */
export type StoreFailureKind = 'full' | 'damaged' | 'io' | 'busy';

export function failureKind(code: string): StoreFailureKind | null {
  if (code === 'SQLITE_FULL' || code === 'SQLITE_IOERR_SHMSIZE' || code === 'ENOSPC' || code === 'EDQUOT') return 'full';
  if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') return 'damaged';
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return 'busy';
  if (/^SQLITE_(IOERR|CANTOPEN|READONLY|PERM|NOLFS|AUTH|PROTOCOL)/.test(code) || ['EIO', 'EROFS', 'EACCES', 'EPERM'].includes(code)) return 'io';
  return null;
}

/**
 * `err` as the StoreError a person can act on, when it is a failure of the store `file`; otherwise
 * `err` itself. Messages stay on one line and name the file.
 */
export function storeFailure(err: unknown, file: string): unknown {
  if (err instanceof StoreError) return err;
  const code = String((err as { code?: unknown })?.code ?? '');
  const kind = failureKind(code);
  if (!kind) return err;
  const home = path.dirname(file);
  const reason = `${String((err as Error).message ?? err).replace(/\s+/g, ' ').trim()}, ${code}`;
  switch (kind) {
    case 'full':
      return new StoreError(
        `the store ${file} cannot be written: no space left on its disk (${reason}): free space under BGDL_HOME (${home}) and run the command again; nothing stored was lost`,
        'E_STORE_FULL',
      );
    case 'damaged':
      return new StoreError(
        `the store ${file} is damaged (${reason}): move it aside together with its -wal and -shm files (mkdir ${home}/damaged && mv ${file}* ${home}/damaged/) to start afresh, or restore it from a backup`,
        'E_STORE_DAMAGED',
      );
    case 'busy':
      return new StoreError(`the store ${file} stayed locked by another bgdl process (${reason}): run the command again`, 'E_STORE_BUSY');
    case 'io':
      return new StoreError(
        `the store ${file} cannot be read or written (${reason}): check the disk, free space and permissions under BGDL_HOME (${home}) and run the command again`,
        'E_STORE_IO',
      );
  }
}

/**
 * Make every method of a store class report its failures as StoreError (see storeFailure, or the
 * backend's own `map`): sync methods when they throw, async ones when their promise rejects.
 * `fileOf` gives the store's file (or location).
 */
export function guardMethods<T extends object>(proto: T, fileOf: (self: T) => string, map: (err: unknown, file: string) => unknown = storeFailure): void {
  for (const name of Object.getOwnPropertyNames(proto)) {
    const desc = Object.getOwnPropertyDescriptor(proto, name);
    if (name === 'constructor' || !desc || typeof desc.value !== 'function') continue;
    const fn = desc.value as (...args: unknown[]) => unknown;
    const guarded = function (this: T, ...args: unknown[]): unknown {
      let r: unknown;
      try {
        r = fn.apply(this, args);
      } catch (err) {
        throw map(err, fileOf(this));
      }
      return r instanceof Promise ? r.catch((err: unknown) => Promise.reject(map(err, fileOf(this)))) : r;
    };
    Object.defineProperty(proto, name, { ...desc, value: guarded });
  }
}
