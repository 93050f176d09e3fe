// Partial-file ownership both sides apply: a task's attempt lineage owns exactly the partial file the
// store recorded for it (path and `dev:ino`); nobody opens, truncates, renames or removes any other.

import fs from 'node:fs';
import { partPathFor } from './paths.js';

/** A partial file as the store records it. `id` null: recorded by an older bgdl, by name only. */
export interface PartRef {
  path: string;
  id: string | null;
}

/** The identity a partial file is recorded with: its device and inode. */
export const partIdOf = (st: { dev: number; ino: number }): string => `${st.dev}:${st.ino}`;

/** A regular file owned by this user (never a symlink, device, FIFO, or someone else's file). */
export function ownedRegularFile(st: fs.Stats): boolean {
  return st.isFile() && (!process.getuid || st.uid === process.getuid());
}

/** Is `st` (from lstat) the recorded file? A name-only record (older stores) needs a file with one link. */
export function isRecordedFile(st: fs.Stats, ref: PartRef): boolean {
  if (!ownedRegularFile(st)) return false;
  return ref.id ? partIdOf(st) === ref.id : st.nlink === 1;
}

/**
 * The partial file a task's lineage owns: the recorded one, or for a task stored by an older bgdl
 * (no recorded file but a resume offset) `<output>.bgdl-part` by name, as that bgdl used it.
 */
export function recordedPart(t: { output: string | null; partPath: string | null; partId: string | null; resumeOffset: number }): PartRef | null {
  if (t.partPath) return { path: t.partPath, id: t.partId };
  if (t.output && t.resumeOffset > 0) return { path: partPathFor(t.output), id: null };
  return null;
}

/** Remove the partial file `ref` if it is still that file (never a planted symlink or another's file). */
export function removePartFile(ref: PartRef | null): boolean {
  if (!ref) return false;
  try {
    if (!isRecordedFile(fs.lstatSync(ref.path), ref)) return false;
    fs.unlinkSync(ref.path);
    return true;
  } catch {
    return false;
  }
}

/** What a non-regular file is, for messages ("a FIFO (named pipe)"); null for a regular file. */
export function nonRegularKind(st: fs.Stats): string | null {
  if (st.isFile()) return null;
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}
