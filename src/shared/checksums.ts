// Checksum files as projects publish them next to their downloads: `sha256sum` output (`HEX  NAME`,
// `HEX *NAME` for binary mode, a leading `\` when the name is escaped) and the BSD tag form
// (`SHA256 (NAME) = HEX`). Parsed at `bgdl add` into a map of base name → sha256.

import path from 'node:path';
import { UsageError } from './errors.js';

const GNU_LINE = /^(\\?)([0-9a-fA-F]{64}) [ *](.+)$/;
const BSD_LINE = /^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$/;

/** `\\` → `\`, `\n` → newline, as sha256sum escapes names that hold them. */
function unescapeName(name: string): string {
  return name.replace(/\\(\\|n|r)/g, (_, c: string) => (c === 'n' ? '\n' : c === 'r' ? '\r' : '\\'));
}

/**
 * Expected SHA-256 by destination base name (lowercase hex). Blank lines and `#` comments are
 * skipped; a line in another format, or one name with two different sums, is exit 2 naming the line.
 */
export function parseChecksums(text: string, source: string): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  const lines = text.split('\n');
  for (const [i, raw] of lines.entries()) {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    let name: string;
    let hex: string;
    const gnu = GNU_LINE.exec(line);
    const bsd = gnu ? null : BSD_LINE.exec(line);
    if (gnu) {
      name = gnu[1] ? unescapeName(gnu[3]!) : gnu[3]!;
      hex = gnu[2]!;
    } else if (bsd) {
      name = bsd[1]!;
      hex = bsd[2]!;
    } else {
      throw new UsageError(`${source} line ${i + 1}: not a SHA-256 checksum line (expected 'HEX  NAME' as sha256sum prints); nothing was added`);
    }
    const base = path.posix.basename(name);
    hex = hex.toLowerCase();
    if (base === '' || base === '.' || base === '..') throw new UsageError(`${source} line ${i + 1}: no file name; nothing was added`);
    if (out[base] !== undefined && out[base] !== hex) {
      throw new UsageError(`${source} line ${i + 1}: a second, different checksum for ${base}; nothing was added`);
    }
    out[base] = hex;
  }
  return { ...out };
}
