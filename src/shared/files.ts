// File helpers both sides need: removing a partial file without ever following a planted symlink.

import fs from 'node:fs';
import { partPathFor } from './paths.js';

/** Remove `<output>.bgdl-part` if it is a regular file we own. Returns whether one was removed. */
export function removePartFile(output: string | null): boolean {
  if (!output) return false;
  const part = partPathFor(output);
  try {
    const st = fs.lstatSync(part);
    if (!st.isFile() || (process.getuid && st.uid !== process.getuid())) return false;
    fs.unlinkSync(part);
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
