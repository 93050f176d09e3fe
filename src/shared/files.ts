// The file-safety operations, in one place for every caller (the worker's transfers, the CLI's cancel,
// the worker's sweeps): exclusive creation with mode 0600, never through a link, ownership by `dev:ino`,
// rename or link without clobbering, directory fsync. A task's attempt lineage owns exactly the partial
// file the store recorded for it (path and `dev:ino`); nobody opens, truncates, renames or removes any
// other. These functions throw plain errno errors; callers turn them into their own error types.

import fs, { constants as C } from 'node:fs';
import fsp from 'node:fs/promises';
import { partPathFor } from './paths.js';

/** A partial file as the store records it. `id` null: recorded by an older bgdl, by name only. */
export interface PartRef {
  path: string;
  id: string | null;
}

/** The identity a partial file is recorded with: its device and inode. */
export const partIdOf = (st: { dev: number; ino: number }): string => `${st.dev}:${st.ino}`;

/**
 * Is `st` the file recorded as `id`? The inode decides: a partial file is always looked up at its
 * recorded path, so it is on the filesystem it was created on, and a network filesystem shows each host
 * the same inode under a device number of that host's own (the device would make every other host's
 * worker refuse a shared download directory's partial files).
 */
export function sameFile(st: { ino: number }, id: string): boolean {
  return sameFileId(`:${st.ino}`, id);
}

/** Two recorded identities name the same file (see sameFile: the inode decides). */
export function sameFileId(a: string, b: string): boolean {
  return a.slice(a.indexOf(':') + 1) === b.slice(b.indexOf(':') + 1);
}

/** A regular file owned by this user (never a symlink, device, FIFO, or someone else's file). */
export function ownedRegularFile(st: fs.Stats): boolean {
  return st.isFile() && (!process.getuid || st.uid === process.getuid());
}

/** Is `st` (from lstat) the recorded file? A name-only record (older stores) needs a file with one link. */
export function isRecordedFile(st: fs.Stats, ref: PartRef): boolean {
  if (!ownedRegularFile(st)) return false;
  return ref.id ? sameFile(st, ref.id) : st.nlink === 1;
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

/**
 * An open file, like node's FileHandle, but closed (and, when it exists already, opened) without a
 * trip through the thread pool: neither waits on the disk, and on a batch of small files each trip
 * cost the main thread more than the call (docs/ARCHITECTURE.md, "Many small files"). Reads, writes,
 * syncs, truncation and creating a new file go through the pool. As with FileHandle, `close` waits for
 * the operations in flight, and nothing is done on a closed descriptor (EBADF): its number may already
 * name another file.
 */
export class Descriptor {
  private closed = false;
  private inFlight = 0;
  private idle: Array<() => void> = [];

  constructor(readonly fd: number) {}

  private run<T>(op: (done: (err: NodeJS.ErrnoException | null, value?: T) => void) => void): Promise<T> {
    if (this.closed) return Promise.reject(Object.assign(new Error('file closed'), { code: 'EBADF', syscall: 'operation' }));
    this.inFlight++;
    return new Promise<T>((resolve, reject) =>
      op((err, value) => {
        if (--this.inFlight === 0) for (const wake of this.idle.splice(0)) wake();
        if (err) reject(err);
        else resolve(value as T);
      }),
    );
  }

  read(buf: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    return this.run((done) => fs.read(this.fd, buf, offset, length, position, (err, bytesRead) => done(err, { bytesRead })));
  }

  write(buf: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }> {
    return this.run((done) => fs.write(this.fd, buf, offset, length, position, (err, bytesWritten) => done(err, { bytesWritten })));
  }

  sync(): Promise<void> {
    return this.run((done) => fs.fsync(this.fd, (err) => done(err)));
  }

  datasync(): Promise<void> {
    return this.run((done) => fs.fdatasync(this.fd, (err) => done(err)));
  }

  truncate(length: number): Promise<void> {
    return this.run((done) => fs.ftruncate(this.fd, length, (err) => done(err)));
  }

  /** fstat never waits on the disk: answered at once. */
  async stat(): Promise<fs.Stats> {
    if (this.closed) throw Object.assign(new Error('file closed'), { code: 'EBADF', syscall: 'fstat' });
    return fs.fstatSync(this.fd);
  }

  /** Close once the operations in flight are done; a second close does nothing. */
  async close(): Promise<void> {
    while (this.inFlight > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}

/**
 * Create `file` for reading and writing: only if nothing (not even a dangling link) has the name; mode
 * 0600. Through the thread pool: creating a file can wait on the filesystem's journal while other
 * files' fsyncs commit it (2,000 small files at 6 connections: 640-790 ms of the main thread blocked
 * in a synchronous create, 260-470 ms of it submitting the create to the pool instead).
 */
export function createExclusive(file: string): Promise<Descriptor> {
  return new Promise((resolve, reject) =>
    fs.open(file, C.O_RDWR | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600, (err, fd) => (err ? reject(err) : resolve(new Descriptor(fd)))),
  );
}

/**
 * A second descriptor for the open file `fd`, for direct I/O (O_DIRECT: writes from aligned memory
 * straight to the disk), or null where that cannot be had (no O_DIRECT, no /proc, a filesystem that
 * refuses it: EINVAL). Opened through /proc/self/fd, the kernel's link to the open file itself: no
 * name is looked up, so no other file can be reached; checked to be the same inode all the same.
 */
export function reopenDirect(fd: number): number | null {
  if (!C.O_DIRECT) return null;
  let direct: number;
  try {
    direct = fs.openSync(`/proc/self/fd/${fd}`, C.O_WRONLY | C.O_DIRECT);
  } catch {
    return null;
  }
  try {
    const [a, b] = [fs.fstatSync(fd), fs.fstatSync(direct)];
    if (a.dev === b.dev && a.ino === b.ino) return direct;
  } catch {
    /* closed below */
  }
  fs.closeSync(direct);
  return null;
}

/** Open an existing file, never through a symlink at the name (ELOOP). */
export async function openNoFollow(file: string, flags: number = C.O_RDWR): Promise<Descriptor> {
  return new Descriptor(fs.openSync(file, flags | C.O_NOFOLLOW));
}

/**
 * Does the name `file` still hold the file `id` (nobody replaced or unlinked it)? A synchronous look:
 * the name is one this process created moments ago, so the kernel answers from its cache of names
 * without waiting on the directory, and a trip through the thread pool cost the main thread more
 * than the look (see docs/ARCHITECTURE.md, "Many small files").
 */
export async function stillNamed(file: string, id: string): Promise<boolean> {
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(file, { throwIfNoEntry: false });
  } catch {
    return false;
  }
  return !!st && sameFile(st, id);
}

/** Remove `file` only while the name still holds the file `id`. */
export async function unlinkIfSame(file: string, id: string): Promise<void> {
  if (await stillNamed(file, id)) await fsp.unlink(file).catch(() => {});
}

/** Filesystems without hard links: fall back to a rename after checking the name is free (a small race). */
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK']);

/**
 * Give `from` the name `to` without replacing anything there: `link` + `unlink` (EEXIST when taken).
 * Where hard links are not supported, `rename` after checking the name is free. Synchronous: names
 * change in the filesystem's journal without waiting on the disk (the directory fsync that makes them
 * durable is `syncDirectory`'s), and a trip through the thread pool per call cost a batch of small
 * files more main-thread time than the calls themselves (docs/ARCHITECTURE.md, "Many small files").
 */
export function linkWithoutClobber(from: string, to: string): void {
  try {
    fs.linkSync(from, to);
  } catch (err) {
    if (!NO_LINKS.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
    if (fs.lstatSync(to, { throwIfNoEntry: false })) throw Object.assign(new Error(`${to} exists`), { code: 'EEXIST', syscall: 'link' });
    fs.renameSync(from, to);
    return;
  }
  fs.unlinkSync(from);
}

/**
 * Make renames in `dir` durable, sharing the work between files that land together: one fsync of a
 * directory covers every rename done in it before the fsync began, so a request that arrives while
 * one runs waits for the next, and all requests waiting for that next one share it. Best effort:
 * some filesystems cannot fsync a directory.
 */
export function syncDirectory(dir: string): Promise<void> {
  let st = directorySyncs.get(dir);
  if (!st) directorySyncs.set(dir, (st = { running: null, queued: null }));
  const s = st;
  if (!s.running) return startDirectorySync(dir, s);
  s.queued ??= s.running.then(() => {
    s.queued = null;
    return startDirectorySync(dir, s);
  });
  return s.queued;
}

interface DirectorySync {
  running: Promise<void> | null;
  queued: Promise<void> | null;
}
const directorySyncs = new Map<string, DirectorySync>();

function startDirectorySync(dir: string, st: DirectorySync): Promise<void> {
  const p: Promise<void> = fsyncDirectory(dir).finally(() => {
    if (st.running === p) st.running = null;
    if (!st.running && !st.queued) directorySyncs.delete(dir);
  });
  st.running = p;
  return p;
}

/**
 * Opening and closing a directory do not wait on the disk: done synchronously, only the fsync takes a
 * trip through the thread pool (each trip wakes a pool thread and costs the main thread more than
 * the open or close itself).
 */
async function fsyncDirectory(dir: string): Promise<void> {
  let fd: number;
  try {
    fd = fs.openSync(dir, C.O_RDONLY | C.O_DIRECTORY);
  } catch {
    return; // best effort
  }
  try {
    await new Promise<void>((resolve) => fs.fsync(fd, () => resolve()));
  } finally {
    try {
      fs.closeSync(fd);
    } catch {
      /* best effort */
    }
  }
}
