// The partial file of a task's attempt lineage: usually `<output>.bgdl-part`, created exclusively,
// opened again only if it is the very file the store recorded (path and `dev:ino`, a regular file we
// own, never through a symlink), copied to a fresh file on a takeover. A file it does not own is never
// opened, truncated, renamed or removed. Writing it is sink.ts's job; the file-safety operations
// themselves live in src/shared/files.ts.

import fs, { constants as C } from 'node:fs';
import fsp from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { createExclusive as createExclusiveFile, isRecordedFile, openNoFollow, ownedRegularFile, partIdOf, unlinkIfSame, type Descriptor, type PartRef } from '../shared/files.js';
import { partPathFor } from '../shared/paths.js';
import { TUNING } from './tuning.js';
import { TransferError } from './types.js';

export function unsafePartError(part: string): TransferError {
  return new TransferError('E_UNSAFE_PART', `refusing to use ${part}: it is not a regular file owned by you (a symlink?); remove it to start over`, false);
}

const REASONS: Record<string, string> = {
  EACCES: 'permission denied', EPERM: 'operation not permitted', EROFS: 'read-only file system',
  ENOENT: 'the directory does not exist', EISDIR: 'it is a directory', ENOTDIR: 'a parent is not a directory',
  ENAMETOOLONG: 'the name is too long',
};

/** A filesystem error on `file` as a TransferError: a full disk waits, anything else fails the task. */
export function fileError(file: string, err: unknown, partial?: TransferError['extra']['partial']): TransferError {
  if (err instanceof TransferError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new TransferError('E_DISK_SPACE', `no space left to write ${file}`, true, { waitFor: 'disk-space', ...(partial ? { partial } : {}) });
  }
  if (code === 'ELOOP') return unsafePartError(file);
  return new TransferError('E_DEST', `cannot write ${file}: ${REASONS[code] ?? (err as Error).message}`, false, partial ? { partial } : {});
}

/** Someone else's file at the usual name: another bgdl (another BGDL_HOME) may be writing it. */
export function outputBusyError(part: string): TransferError {
  return new TransferError(
    'E_OUTPUT_BUSY',
    `${part} exists and is not this task's partial file: another bgdl may be writing it (another BGDL_HOME?); waiting. Remove it if no other bgdl is writing it`,
    true,
  );
}

/** This attempt no longer owns its task (another worker took it over): it stops and changes nothing. */
export function fencedError(): TransferError {
  return new TransferError('E_FENCED', 'another worker took this task over; this attempt stopped without changing anything', false);
}

/** An open partial file with its identity. */
export interface OpenedPart {
  path: string;
  fh: Descriptor;
  id: string;
  size: number;
}

/**
 * lstat the recorded partial file: its stats when it is still that file, null when it is missing or
 * has been replaced by another file (not ours: left alone). A symlink or a file not owned by us at the
 * recorded path is E_UNSAFE_PART.
 */
export async function inspectRecorded(ref: PartRef): Promise<Stats | null> {
  let st: Stats;
  try {
    st = await fsp.lstat(ref.path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw fileError(ref.path, err);
  }
  if (!ownedRegularFile(st)) throw unsafePartError(ref.path);
  return isRecordedFile(st, ref) ? st : null;
}

/** Open the recorded partial file to adopt it (read-write), checking it is still that file once open. */
export async function openRecorded(ref: PartRef, flags = C.O_RDWR): Promise<OpenedPart> {
  let fh: Descriptor;
  try {
    fh = await openNoFollow(ref.path, flags);
  } catch (err) {
    throw fileError(ref.path, err);
  }
  const st = await fh.stat().catch(async (err: unknown) => {
    await fh.close();
    throw fileError(ref.path, err);
  });
  if (!isRecordedFile(st, ref)) {
    await fh.close();
    if (!ownedRegularFile(st)) throw unsafePartError(ref.path);
    throw new TransferError('E_RESUME', `${ref.path} is no longer this task's partial file`, true);
  }
  return { path: ref.path, fh, id: partIdOf(st), size: st.size };
}

async function createExclusive(part: string): Promise<OpenedPart> {
  const fh = await createExclusiveFile(part);
  try {
    // fstat of a descriptor never waits on the disk: synchronous, no trip through the thread pool.
    return { path: part, fh, id: partIdOf(fs.fstatSync(fh.fd)), size: 0 };
  } catch (err) {
    await fh.close();
    throw fileError(part, err);
  }
}

/** How many lineage names a fresh partial file may try before giving up. */
const FRESH_NAMES = 8;

/**
 * Create a fresh partial file for `output` with O_EXCL|O_NOFOLLOW, mode 0600: the usual name when it
 * is free; when it holds `ours` (the lineage's own file, which a takeover may be copying: never
 * rewritten in place) a lineage name `<output>.<tag>.bgdl-part`. Another file at the usual name is
 * never touched: a symlink or a file not ours is E_UNSAFE_PART, a regular file of ours that the store
 * did not record (another bgdl's) is E_OUTPUT_BUSY (the task waits).
 */
export async function createFresh(output: string, tag: string, ours: PartRef | null): Promise<OpenedPart> {
  const usual = partPathFor(output);
  const names = [usual, ...Array.from({ length: FRESH_NAMES - 1 }, (_, i) => `${output}.${tag}${i ? `-${i}` : ''}.bgdl-part`)];
  for (const name of names) {
    try {
      return await createExclusive(name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fileError(name, err);
    }
    if (name !== usual) continue; // a leftover lineage name: never reused, the next is tried
    const st = await fsp.lstat(usual).catch(() => null);
    if (st && ours && ours.path === usual && isRecordedFile(st, ours)) continue;
    if (st && !ownedRegularFile(st)) throw unsafePartError(usual);
    throw outputBusyError(usual);
  }
  throw new TransferError('E_DEST', `no free name for a partial file of ${output}`, false);
}

/**
 * A takeover while the previous writer may still run: copy the first `length` bytes of the lineage's
 * file into a fresh one (fsync'd). The old writer can then only write to the old inode, which the
 * caller unlinks once the copy is recorded. Fewer bytes are copied when the file is shorter.
 */
export async function copyPrefix(from: PartRef, output: string, tag: string, length: number): Promise<OpenedPart> {
  const src = await openRecorded(from, C.O_RDONLY);
  let dst: OpenedPart | null = null;
  try {
    dst = await createFresh(output, tag, from);
    const buf = Buffer.allocUnsafe(Math.min(TUNING.prefixReadBytes, Math.max(1, length)));
    let pos = 0;
    while (pos < length) {
      const { bytesRead } = await src.fh.read(buf, 0, Math.min(buf.length, length - pos), pos);
      if (bytesRead === 0) break;
      for (let off = 0; off < bytesRead; ) {
        const { bytesWritten } = await dst.fh.write(buf, off, bytesRead - off, pos + off);
        if (bytesWritten === 0) throw Object.assign(new Error('no progress copying the partial file'), { code: 'EIO', syscall: 'write' });
        off += bytesWritten;
      }
      pos += bytesRead;
    }
    await dst.fh.sync();
    dst.size = pos;
    return dst;
  } catch (err) {
    if (dst) {
      await dst.fh.close().catch(() => {});
      await unlinkIfSame(dst.path, dst.id);
    }
    throw fileError(dst?.path ?? from.path, err);
  } finally {
    await src.fh.close().catch(() => {});
  }
}
