// The partial file `<output>.bgdl-part`: opened only if it is a regular file we own (never through a
// symlink), written in large batches with one write in flight, fsync'd about once a second so the
// durable offset the worker records is always really on disk, then renamed (or linked) into place.

import { constants as C } from 'node:fs';
import fsp, { type FileHandle } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import path from 'node:path';
import type { Hash } from 'node:crypto';
import { partPathFor } from '../shared/paths.js';
import { pickFreePath } from './naming.js';
import { TransferError } from './types.js';

/** fsync this often while bytes arrive: the worker's resume offset is at most this far behind. */
const SYNC_INTERVAL_MS = 1000;
const PREFIX_READ_BYTES = 1024 * 1024;

const ownUid = (): number | null => (process.getuid ? process.getuid() : null);
const ownedRegularFile = (st: Stats): boolean => st.isFile() && (ownUid() == null || st.uid === ownUid());

let finalMode: number | null = null;
/** The mode of a finished file: 0644 less the umask, as a file created by any other tool. */
function finishedMode(): number {
  // process.umask() without an argument only reads it (setting and restoring would race other threads).
  if (finalMode == null) finalMode = 0o644 & ~process.umask();
  return finalMode;
}

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

/**
 * Check a part file before resuming from it. Returns its size, or null when it is missing.
 * Throws E_UNSAFE_PART when it is anything but a regular file we own.
 */
export async function inspectPart(output: string): Promise<number | null> {
  const part = partPathFor(output);
  let st: Stats;
  try {
    st = await fsp.lstat(part);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw fileError(part, err);
  }
  if (!ownedRegularFile(st)) throw unsafePartError(part);
  // A second link means it is also some other file (a crash between link and unlink at the finish):
  // never append to it; a fresh start replaces the name instead.
  if (st.nlink > 1) return null;
  return st.size;
}

/**
 * Create the part file with O_EXCL|O_NOFOLLOW, mode 0600. An old part file of ours is unlinked first
 * (not truncated in place: its name may be a second link to another file); anything else is refused.
 */
async function createExclusive(part: string): Promise<FileHandle> {
  for (let tries = 0; ; tries++) {
    try {
      return await fsp.open(part, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || tries > 0) throw fileError(part, err);
    }
    let st: Stats;
    try {
      st = await fsp.lstat(part);
    } catch {
      continue; // gone in the meantime
    }
    if (!ownedRegularFile(st)) throw unsafePartError(part);
    try {
      await fsp.unlink(part);
    } catch (err) {
      throw fileError(part, err);
    }
  }
}

async function openOwned(part: string, flags: number): Promise<FileHandle> {
  let fh: FileHandle;
  try {
    fh = await fsp.open(part, flags | C.O_NOFOLLOW);
  } catch (err) {
    throw fileError(part, err);
  }
  const st = await fh.stat().catch(async (err) => {
    await fh.close();
    throw fileError(part, err);
  });
  if (!ownedRegularFile(st) || st.nlink > 1) {
    await fh.close();
    throw unsafePartError(part);
  }
  return fh;
}

export class PartFile {
  /** End of the bytes written so far (completed writes). */
  written: number;
  /** End of the bytes known to be on disk (fsync'd). */
  durable: number;
  private pending: Promise<void> = Promise.resolve();
  private writeError: unknown = null;
  private syncing: Promise<void> | null = null;
  private lastSyncAt = Date.now();
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    start: number,
    private readonly onDurable: (offset: number) => void,
  ) {
    this.written = start;
    this.durable = start;
  }

  /**
   * Open the part file for `output`. From 0: created exclusively with mode 0600 (an old one of ours is
   * replaced). Appending: the existing file, cut back to `start`, its first `start` bytes fed to `hash`.
   */
  static async open(output: string, start: number, hash: Hash, onDurable: (offset: number) => void): Promise<PartFile> {
    const part = partPathFor(output);
    let fh: FileHandle;
    if (start === 0) {
      fh = await createExclusive(part);
    } else {
      fh = await openOwned(part, C.O_RDWR);
      try {
        await hashPrefix(fh, start, hash);
        await fh.truncate(start);
      } catch (err) {
        await fh.close();
        throw err instanceof TransferError ? err : fileError(part, err);
      }
    }
    return new PartFile(part, fh, start, onDurable);
  }

  /** Queue a batch at the end of the file. At most one write is in flight: this waits for the previous one. */
  async write(chunks: Buffer[], size: number): Promise<void> {
    await this.pending;
    if (this.writeError) throw this.writeError;
    this.pending = this.writeAll(chunks, size).catch((err) => {
      this.writeError = err;
    });
    this.syncIfDue();
  }

  private async writeAll(chunks: Buffer[], size: number): Promise<void> {
    let left = size;
    let bufs = chunks;
    while (left > 0) {
      const { bytesWritten } = await this.fh.writev(bufs, this.written);
      if (bytesWritten === 0) throw Object.assign(new Error(`no progress writing ${this.path}`), { code: 'EIO' });
      this.written += bytesWritten;
      left -= bytesWritten;
      if (left > 0) bufs = dropBytes(bufs, bytesWritten);
    }
  }

  /** Start an fsync in the background once a second; the durable offset is what was written when it began. */
  private syncIfDue(): void {
    const now = Date.now();
    if (this.syncing || now - this.lastSyncAt < SYNC_INTERVAL_MS) return;
    this.lastSyncAt = now;
    const upTo = this.written;
    this.syncing = this.fh.sync().then(
      () => this.markDurable(upTo),
      () => {},
    ).finally(() => {
      this.syncing = null;
    });
  }

  private markDurable(offset: number): void {
    if (offset <= this.durable) return;
    this.durable = offset;
    this.onDurable(offset);
  }

  /** Wait for the write in flight and fsync everything written. Throws the first write or sync error. */
  async sync(): Promise<void> {
    await this.pending;
    if (this.writeError) throw this.writeError;
    await this.syncing;
    await this.fh.sync();
    this.markDurable(this.written);
  }

  /** The write error that stopped this file, if any (ENOSPC, EIO, …). */
  get failure(): unknown {
    return this.writeError;
  }

  /**
   * After a failure: keep what is good. Waits for the write in flight, cuts the file back to what was
   * fully written, fsyncs, closes. Never throws; `durable` is then where the next attempt resumes.
   */
  async salvage(): Promise<void> {
    if (this.closed) return;
    await this.pending;
    await this.syncing;
    try {
      await this.fh.truncate(this.written);
      await this.fh.sync();
      this.markDurable(this.written);
    } catch {
      /* keep the last durable offset */
    }
    await this.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close().catch(() => {});
  }

  /** Remove the part file (a checksum mismatch: nothing of it is worth keeping). */
  async discard(): Promise<void> {
    await this.pending;
    await this.syncing;
    await this.close();
    await fsp.unlink(this.path).catch(() => {});
  }

  /**
   * Make the complete, verified file the destination: final mode, fsync, then `rename` over `output`
   * when the user chose the path, else `link` + `unlink` so an existing file is never replaced (the next
   * free numbered name is taken instead). Returns the path used.
   */
  async finish(output: string, replace: boolean): Promise<string> {
    await this.fh.chmod(finishedMode());
    await this.sync();
    await this.close();
    const used = replace ? await renameInto(this.path, output) : await linkWithoutClobber(this.path, output);
    await syncDirectory(path.dirname(used));
    return used;
  }
}

async function hashPrefix(fh: FileHandle, length: number, hash: Hash): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(PREFIX_READ_BYTES, length));
  let pos = 0;
  while (pos < length) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - pos), pos);
    if (bytesRead === 0) throw new TransferError('E_RESUME', `the partial file is shorter than ${length} bytes`, true);
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
}

function dropBytes(bufs: Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = n;
  for (const b of bufs) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}

async function renameInto(part: string, output: string): Promise<string> {
  try {
    await fsp.rename(part, output);
  } catch (err) {
    throw fileError(output, err);
  }
  return output;
}

/** Filesystems without hard links: fall back to a rename after checking the name is free (a small race). */
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK']);

async function linkWithoutClobber(part: string, output: string): Promise<string> {
  let target = output;
  for (let tries = 0; tries < 1000; tries++) {
    try {
      await fsp.link(part, target);
      await fsp.unlink(part);
      return target;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (NO_LINKS.has(code)) {
        const taken = await fsp.lstat(target).then(() => true, () => false);
        if (!taken) return renameInto(part, target);
      } else if (code !== 'EEXIST') {
        throw fileError(target, err);
      }
      target = await pickFreePath(path.dirname(output), path.basename(output), new Set());
    }
  }
  throw new TransferError('E_DEST', `no free file name for ${output}`, false);
}

/** Make the rename itself durable. Best effort: some filesystems cannot fsync a directory. */
async function syncDirectory(dir: string): Promise<void> {
  try {
    const fh = await fsp.open(dir, C.O_RDONLY | C.O_DIRECTORY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    /* best effort */
  }
}
