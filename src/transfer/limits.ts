// What a download may take of the disk: at most `maxSize` bytes of file, and never the free space
// below the reserve (minFreeSpace). Checked before any byte is written (the response's length) and
// for every chunk while the body streams: the chunk that would cross a limit is never written.

import fsp from 'node:fs/promises';
import { formatBytes, reserveBytes, type FreeSpaceRule } from '../shared/parse.js';
import { TUNING } from './tuning.js';
import { TransferError } from './types.js';


export function tooLargeError(size: number, max: number, announced: boolean, extra: TransferError['extra'] = {}): TransferError {
  const what = announced ? `the server announces ${size} bytes (${formatBytes(size)})` : `the body passed ${formatBytes(max)} and was stopped`;
  return new TransferError('E_TOO_LARGE', `${what}, more than the limit of ${max} bytes (--max-size or maxFileSize)`, false, extra);
}

export function reserveError(dir: string, free: number, reserve: number, needed: number, extra: TransferError['extra'] = {}): TransferError {
  const need = needed > 0 ? `${formatBytes(needed)} needed, ` : '';
  return new TransferError(
    'E_DISK_SPACE',
    `not enough free space in ${dir}: ${need}${formatBytes(free)} free, and the reserve (minFreeSpace) keeps ${formatBytes(reserve)} free`,
    true,
    { ...extra, waitFor: 'disk-space' },
  );
}

export interface BodyLimitOptions {
  dir: string;
  /** Where the body starts in the file. */
  startOffset: number;
  maxSize: number | null;
  rule: FreeSpaceRule | null;
  /** End of what the part file has written so far (bytes taken but not yet written use space soon). */
  written: () => number;
  /** Free space and reserve as the check before the transfer saw them (until the first look). */
  free: number;
  reserve: number;
}

/**
 * Admits body chunks. The free-space budget is what the last look at the filesystem left above the
 * reserve, less what was taken since; looks happen in the background every few MiB or each second,
 * so a chunk costs a comparison, not a system call.
 */
export class BodyLimits {
  private taken = 0;
  private budget: number;
  private budgetFrom = 0;
  private lookedAt = Date.now();
  private lookedTaken = 0;
  private looking = false;
  private lastReserve = 0;

  constructor(private readonly o: BodyLimitOptions) {
    this.budget = o.rule ? o.free - o.reserve : Infinity;
    this.lastReserve = o.reserve;
  }

  /** May `n` more bytes be written? null: yes; otherwise the error that stops the body. */
  admit(n: number): TransferError | null {
    const o = this.o;
    if (o.maxSize != null && o.startOffset + this.taken + n > o.maxSize) return tooLargeError(o.startOffset + this.taken + n, o.maxSize, false);
    if (o.rule) {
      if (this.taken + n - this.budgetFrom > this.budget) {
        return new TransferError('E_DISK_SPACE', `free space in ${o.dir} reached the reserve: minFreeSpace keeps ${formatBytes(this.lastReserve)} free`, true, {
          waitFor: 'disk-space',
        });
      }
      if (!this.looking && (this.taken - this.lookedTaken >= TUNING.freeSpaceLookBytes || Date.now() - this.lookedAt >= TUNING.freeSpaceLookMs)) this.look();
    }
    this.taken += n;
    return null;
  }

  private look(): void {
    const o = this.o;
    this.looking = true;
    const takenThen = this.taken;
    const pending = Math.max(0, o.startOffset + takenThen - o.written());
    this.lookedAt = Date.now();
    this.lookedTaken = takenThen;
    fsp
      .statfs(o.dir)
      .then((st) => {
        this.lastReserve = reserveBytes(o.rule!, st.blocks * st.bsize);
        this.budget = st.bavail * st.bsize - this.lastReserve - pending;
        this.budgetFrom = takenThen;
      })
      .catch(() => {}) // no answer: keep the last budget; a failed write will tell
      .finally(() => (this.looking = false));
  }
}
