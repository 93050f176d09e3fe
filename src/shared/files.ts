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
