// The partial file of a task's attempt lineage: usually `<output>.bgdl-part`, created exclusively,
// opened again only if it is the very file the store recorded (path and `dev:ino`, a regular file we
// own, never through a symlink), hashed and written in large batches (on a disk thread for large
// files), fsync'd in the background as it grows so the durable offset the worker records is always
// really on disk, then renamed (or linked) into place. A file it does not own is never opened,
// truncated, renamed or removed.

import { constants as C } from 'node:fs';
import fsp, { type FileHandle } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { createHash, type Hash } from 'node:crypto';
import { isRecordedFile, ownedRegularFile, partIdOf, type PartRef } from '../shared/files.js';
import { partPathFor } from '../shared/paths.js';
import { CTL_DONE, CTL_WAKE, DiskThread, errorFromThread, takeDiskThread, type ThreadSession } from './disk-thread.js';
import { pickFreePath } from './naming.js';
import { TransferError } from './types.js';

/** fsync this often while bytes arrive: the worker's resume offset is at most this far behind. */
const SYNC_INTERVAL_MS = 1000;
const PREFIX_READ_BYTES = 1024 * 1024;
// On the event loop, chunks are written in batches of about this much, with one write in flight while
// the next batch fills, so disk and network overlap and a file costs few writes.
const BATCH_BYTES = 1024 * 1024;
/** A slow transfer still reaches the disk (and the progress display) this often. */
const FLUSH_INTERVAL_MS = 250;
/** Files expected to be at least this large (or of unknown size) are hashed and written on a disk thread. */
const THREAD_MIN_BYTES = 8 * 1024 * 1024;


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
  fh: FileHandle;
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
  let fh: FileHandle;
  try {
    fh = await fsp.open(ref.path, flags | C.O_NOFOLLOW);
  } catch (err) {
    throw fileError(ref.path, err);
  }
  const st = await fh.stat().catch(async (err) => {
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
  const fh = await fsp.open(part, C.O_RDWR | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
  try {
    return { path: part, fh, id: partIdOf(await fh.stat()), size: 0 };
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
    const buf = Buffer.allocUnsafe(Math.min(PREFIX_READ_BYTES, Math.max(1, length)));
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
      await fsp.unlink(dst.path).catch(() => {});
    }
    throw fileError(dst?.path ?? from.path, err);
  } finally {
    await src.fh.close().catch(() => {});
  }
}

/** How the part file is told about progress, and the body about back-pressure and failures. */
export interface PartFileEvents {
  /** The durable offset moved forward (a background or final fsync finished). */
  onDurable(offset: number): void;
  /** A write finished: `written` bytes of the file are written. */
  onWritten?(written: number): void;
}

interface Sender {
  /** The part file can take more: a paused body may resume. */
  drain(): void;
  /** A write failed: stop the body (its error is `failure`). */
  fail(err: unknown): void;
}

/**
 * Hashes and writes what the body delivers. Two kinds: on the event loop (small files, where a thread
 * hop costs more than it saves), or on a pooled disk thread (large or unknown sizes).
 */
interface Writer {
  written: number;
  failure: unknown;
  /** Take a chunk; false asks the sender to pause until `drain`. */
  append(chunk: Buffer): boolean;
  /** Hand over what is batched now. */
  flush(): void;
  /** Every byte appended has been written, or a write failed. */
  drained(): Promise<void>;
  /** Nothing in flight that uses the file descriptor (writes, background syncs). */
  quiesce(): Promise<void>;
  digest(): Promise<string>;
  release(): void;
}

export class PartFile {
  /** End of the bytes known to be on disk (fsync'd). */
  durable: number;
  private closed = false;
  private sender: Sender | null = null;

  private constructor(
    readonly path: string,
    /** `dev:ino`: the final rename and a discard act only while the name still holds this file. */
    readonly id: string,
    private readonly fh: FileHandle,
    start: number,
    private readonly events: PartFileEvents,
    private readonly writer: Writer,
  ) {
    this.durable = start;
  }

  /**
   * Write into an opened partial file (fresh from createFresh, or the lineage's own from openRecorded
   * or copyPrefix). Appending: its first `start` bytes are hashed, anything past them cut off, and the
   * kept prefix fsync'd (it may hold bytes a crashed process wrote). `expectedSize` (the whole file,
   * null when unknown) chooses where hashing and writing happen.
   */
  static async open(opened: OpenedPart, start: number, expectedSize: number | null, events: PartFileEvents): Promise<PartFile> {
    const { path: part, fh } = opened;
    let pf: PartFile | null = null;
    const hooks = {
      durable: (offset: number) => pf?.markDurable(offset),
      written: (n: number) => events.onWritten?.(n),
      failed: (err: unknown) => pf?.sender?.fail(err),
      drain: () => pf?.sender?.drain(),
    };
    try {
      const thread = expectedSize == null || expectedSize >= THREAD_MIN_BYTES ? takeDiskThread() : null;
      // Starting a writer hashes the first `start` bytes (E_RESUME when the file is shorter)...
      const writer = thread ? await ThreadWriter.start(thread, fh, start, hooks) : await InlineWriter.start(fh, start, hooks);
      pf = new PartFile(part, opened.id, fh, start, events, writer);
    } catch (err) {
      await fh.close();
      throw err instanceof TransferError ? err : fileError(part, err);
    }
    // ...and only then is anything past them cut off.
    if (start > 0) {
      try {
        if (opened.size !== start) await fh.truncate(start);
        await fh.datasync();
      } catch (err) {
        await pf.close();
        throw fileError(part, err);
      }
    }
    return pf;
  }

  /** End of the bytes written so far (completed writes). */
  get written(): number {
    return this.writer.written;
  }

  /** The write error that stopped this file, if any (ENOSPC, EIO, …). */
  get failure(): unknown {
    return this.writer.failure;
  }

  /** Who sends the bytes: told when to resume after back-pressure, and when a write failed. */
  bind(sender: Sender): void {
    this.sender = sender;
  }

  /** Take the next body chunk (hashed and written in order). False: pause the sender until `drain`. */
  append(chunk: Buffer): boolean {
    return this.writer.append(chunk);
  }

  /** Every byte appended so far is written (or the first write error is known). Never throws. */
  async settle(): Promise<void> {
    this.writer.flush();
    await this.writer.drained();
  }

  private markDurable(offset: number): void {
    if (offset <= this.durable) return;
    this.durable = offset;
    this.events.onDurable(offset);
  }

  /** Write and fsync everything appended. Throws the first write or sync error. */
  async sync(): Promise<void> {
    await this.settle();
    if (this.writer.failure) throw this.writer.failure;
    await this.writer.quiesce();
    await this.fh.sync();
    this.markDurable(this.writer.written);
  }

  /** SHA-256 of the whole file as written (after `sync`). */
  digest(): Promise<string> {
    return this.writer.digest();
  }

  /**
   * After a failure: keep what is good. Waits for the writes in flight, cuts the file back to what was
   * fully written, fsyncs, closes. Never throws; `durable` is then where the next attempt resumes.
   */
  async salvage(): Promise<void> {
    if (this.closed) return;
    await this.settle();
    await this.writer.quiesce();
    try {
      await this.fh.truncate(this.writer.written);
      await this.fh.sync();
      this.markDurable(this.writer.written);
    } catch {
      /* keep the last durable offset */
    }
    await this.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // The disk thread may still hold the descriptor (a background sync): it must be done first.
    await this.writer.quiesce();
    this.writer.release();
    await this.fh.close().catch(() => {});
  }

  /** Does the name still hold this file (nobody took it over and unlinked it)? */
  private async stillNamed(): Promise<boolean> {
    const st = await fsp.lstat(this.path).catch(() => null);
    return !!st && partIdOf(st) === this.id;
  }

  /** Remove the part file (a checksum mismatch: nothing of it is worth keeping), if the name is still ours. */
  async discard(): Promise<void> {
    await this.settle();
    await this.close();
    if (await this.stillNamed()) await fsp.unlink(this.path).catch(() => {});
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
    // A takeover unlinked our file (it continues in a copy): the name is not ours to rename.
    if (!(await this.stillNamed())) throw fencedError();
    const used = replace ? await renameInto(this.path, output) : await linkWithoutClobber(this.path, output);
    await syncDirectory(path.dirname(used));
    return used;
  }
}

interface WriterHooks {
  durable(offset: number): void;
  written(n: number): void;
  failed(err: unknown): void;
  drain(): void;
}

/**
 * Hash on the event loop, write batches of about BATCH_BYTES through the thread pool with one write in
 * flight while the next batch fills, fsync in the background about once a second.
 */
class InlineWriter implements Writer {
  written: number;
  failure: unknown = null;
  private readonly hash = createHash('sha256');
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private lastHandOver = Date.now();
  /** Batches handed over and not yet written. */
  private queued = 0;
  private writing: Promise<void> = Promise.resolve();
  private syncing: Promise<void> | null = null;
  private lastSyncAt = Date.now();

  private constructor(
    private readonly fh: FileHandle,
    start: number,
    private readonly hooks: WriterHooks,
  ) {
    this.written = start;
  }

  static async start(fh: FileHandle, start: number, hooks: WriterHooks): Promise<InlineWriter> {
    const w = new InlineWriter(fh, start, hooks);
    await hashPrefix(fh, start, w.hash);
    return w;
  }

  append(chunk: Buffer): boolean {
    this.hash.update(chunk);
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    if (this.batchBytes >= BATCH_BYTES || Date.now() - this.lastHandOver >= FLUSH_INTERVAL_MS) this.flush();
    return this.queued <= 1;
  }

  flush(): void {
    if (this.batchBytes === 0) return;
    const chunks = this.batch;
    const size = this.batchBytes;
    this.batch = [];
    this.batchBytes = 0;
    this.lastHandOver = Date.now();
    this.queued++;
    this.writing = this.writing.then(async () => {
      if (this.failure) return;
      try {
        await this.writeAll(chunks, size);
      } catch (err) {
        this.failure = err;
        this.hooks.failed(err);
        return;
      } finally {
        this.queued--;
      }
      this.hooks.written(this.written);
      this.syncIfDue();
      if (this.queued <= 1) this.hooks.drain();
    });
  }

  private async writeAll(chunks: Buffer[], size: number): Promise<void> {
    let left = size;
    let bufs = chunks;
    while (left > 0) {
      const { bytesWritten } = bufs.length === 1 ? await this.fh.write(bufs[0]!, 0, left, this.written) : await this.fh.writev(bufs, this.written);
      if (bytesWritten === 0) throw Object.assign(new Error('no progress writing the partial file'), { code: 'EIO', syscall: 'write' });
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
    this.syncing = this.fh.datasync().then(
      () => this.hooks.durable(upTo),
      () => {},
    ).finally(() => {
      this.syncing = null;
    });
  }

  async drained(): Promise<void> {
    await this.writing;
  }

  async quiesce(): Promise<void> {
    await this.writing;
    await this.syncing;
  }

  async digest(): Promise<string> {
    return this.hash.digest('hex');
  }

  release(): void {}
}

/**
 * Hand the bytes to a disk thread through its ring: each chunk is copied in, regions of half a MiB go
 * over as messages, and ring space comes back as the thread's count of regions written grows (read
 * from shared memory; the thread only sends a message when asked to, see disk-thread.ts). Chunks
 * that arrive while the ring is full wait in `overflow`, and the body is paused meanwhile.
 */
class ThreadWriter implements Writer, ThreadSession {
  written: number;
  failure: unknown = null;
  private readonly ring: Buffer;
  /** Ring position of the next byte, and of the first byte not yet handed over. */
  private tail = 0;
  private regionStart = 0;
  /** Lengths of the regions handed over and not yet written, oldest first, and their total. */
  private inFlight: number[] = [];
  private inFlightBytes = 0;
  private regionsSent = 0;
  private regionsDone = 0;
  private overflow: Buffer[] = [];
  private lastHandOver = Date.now();
  private drainWaiters: Array<() => void> = [];
  private replyWaiters: Array<{ op: string; resolve: (r: any) => void }> = [];
  private crashed: Error | null = null;

  private constructor(
    private readonly thread: DiskThread,
    start: number,
    private readonly hooks: WriterHooks,
  ) {
    this.ring = thread.ring;
    this.written = start;
  }

  static async start(thread: DiskThread, fh: FileHandle, start: number, hooks: WriterHooks): Promise<ThreadWriter> {
    const w = new ThreadWriter(thread, start, hooks);
    thread.attach(w);
    const opened = w.reply<{ short?: boolean; error?: Parameters<typeof errorFromThread>[0] }>('opened');
    thread.send({ op: 'open', fd: fh.fd, start });
    const r = await opened;
    if (r.short || r.error) {
      await w.quiesce();
      w.release();
      if (r.short) throw new TransferError('E_RESUME', `the partial file is shorter than ${start} bytes`, true);
      throw errorFromThread(r.error!);
    }
    return w;
  }

  private reply<T>(op: string): Promise<T> {
    if (this.crashed) return Promise.reject(this.crashed);
    return new Promise<T>((resolve) => this.replyWaiters.push({ op, resolve }));
  }

  onReply(m: Parameters<ThreadSession['onReply']>[0]): void {
    switch (m.op) {
      case 'wake':
        this.poll();
        this.refill();
        this.checkDrained();
        return;
      case 'failed':
        this.written = m.written;
        this.failure = errorFromThread(m.error);
        this.overflow = [];
        this.hooks.failed(this.failure);
        this.checkDrained();
        return;
      case 'durable':
        this.hooks.durable(m.upTo);
        return;
      default: {
        const i = this.replyWaiters.findIndex((w) => w.op === m.op);
        if (i >= 0) this.replyWaiters.splice(i, 1)[0]!.resolve(m);
      }
    }
  }

  onCrash(err: Error): void {
    this.crashed = err;
    this.failure ??= err;
    this.overflow = [];
    this.hooks.failed(this.failure);
    for (const w of this.replyWaiters.splice(0)) w.resolve({ op: w.op, error: { message: err.message } });
    this.checkDrained();
  }

  /** Take in the regions the thread has written since the last look. */
  private poll(): void {
    if (this.failure) return;
    const done = Atomics.load(this.thread.ctl, CTL_DONE);
    if (done === this.regionsDone) return;
    while (this.regionsDone < done) {
      const len = this.inFlight.shift()!;
      this.inFlightBytes -= len;
      this.written += len;
      this.regionsDone++;
    }
    this.hooks.written(this.written);
  }

  /** Ask the thread for a `wake` message after its next region, unless one finished meanwhile. */
  private armWake(): boolean {
    Atomics.store(this.thread.ctl, CTL_WAKE, 1);
    const before = this.regionsDone;
    this.poll();
    if (this.regionsDone === before) return true;
    Atomics.store(this.thread.ctl, CTL_WAKE, 0);
    return false;
  }

  /** Bytes in the ring not yet written: handed over, or still being gathered. */
  private get used(): number {
    return this.inFlightBytes + (this.tail - this.regionStart);
  }

  /** Copy as much of `chunk` into the ring as fits; returns the rest (empty when all fit). */
  private put(chunk: Buffer): Buffer {
    let off = 0;
    while (off < chunk.length) {
      let room = Math.min(this.ring.length - this.tail, this.ring.length - this.used);
      if (room === 0) {
        this.poll();
        room = Math.min(this.ring.length - this.tail, this.ring.length - this.used);
        if (room === 0) break;
      }
      const n = Math.min(room, chunk.length - off);
      // fill() with a Buffer is one memcpy in C++; copy() into shared memory is a slower relaxed copy.
      this.ring.fill(off === 0 && n === chunk.length ? chunk : chunk.subarray(off, off + n), this.tail, this.tail + n);
      this.tail += n;
      off += n;
      if (this.tail - this.regionStart >= DiskThread.regionBytes || this.tail === this.ring.length) this.flush();
    }
    return off === 0 ? chunk : chunk.subarray(off);
  }

  append(chunk: Buffer): boolean {
    if (this.failure) return true; // the body is being stopped; nothing more is written
    if (this.overflow.length === 0) {
      const rest = this.put(chunk);
      if (rest.length === 0) {
        if (Date.now() - this.lastHandOver >= FLUSH_INTERVAL_MS) this.flush();
        return true;
      }
      chunk = rest;
    }
    this.overflow.push(chunk);
    // Full: the thread wakes us when a region is written (refill arms that, or finds room at once).
    this.refill();
    return this.overflow.length === 0;
  }

  /** Ring space came back: move waiting chunks in, and let the body go on once none wait. */
  private refill(): void {
    if (this.overflow.length === 0 || this.failure) return;
    while (this.overflow.length) {
      const rest = this.put(this.overflow[0]!);
      if (rest.length) {
        this.overflow[0] = rest;
        if (this.armWake()) return;
        continue; // a region finished meanwhile: there is room again
      }
      this.overflow.shift();
    }
    if (this.drainWaiters.length) this.flush();
    this.hooks.drain();
  }

  flush(): void {
    const len = this.tail - this.regionStart;
    this.lastHandOver = Date.now();
    if (len === 0 || this.failure) return;
    this.thread.send({ op: 'write', start: this.regionStart, end: this.tail });
    this.inFlight.push(len);
    this.inFlightBytes += len;
    this.regionsSent++;
    if (this.tail === this.ring.length) this.tail = 0;
    this.regionStart = this.tail;
  }

  private isDrained(): boolean {
    return this.failure != null || (this.overflow.length === 0 && this.tail === this.regionStart && this.inFlight.length === 0);
  }

  private checkDrained(): void {
    if (!this.drainWaiters.length) return;
    if (this.isDrained()) {
      for (const resolve of this.drainWaiters.splice(0)) resolve();
      return;
    }
    // Not yet: ask to be woken after the next region (a wake that raced with us polls again at once).
    if (!this.armWake()) queueMicrotask(() => (this.refill(), this.checkDrained()));
  }

  drained(): Promise<void> {
    const p = new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    this.flush();
    this.poll();
    this.checkDrained();
    return p;
  }

  async quiesce(): Promise<void> {
    if (this.crashed) return;
    const quiet = this.reply('quiet');
    this.thread.send({ op: 'quiesce' });
    await quiet;
  }

  async digest(): Promise<string> {
    const d = this.reply<{ hex?: string; error?: { message: string } }>('digest');
    this.thread.send({ op: 'digest' });
    const r = await d;
    if (!r.hex) throw new Error(r.error?.message ?? 'the disk thread gave no digest');
    return r.hex;
  }

  release(): void {
    if (!this.crashed) this.thread.release();
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

/**
 * Make the rename itself durable, sharing the work between files that land together: one fsync of a
 * directory covers every rename done in it before the fsync began, so a request that arrives while
 * one runs waits for the next, and all requests waiting for that next one share it.
 */
const directorySyncs = new Map<string, { running: Promise<void> | null; queued: Promise<void> | null }>();

function syncDirectory(dir: string): Promise<void> {
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

function startDirectorySync(dir: string, st: { running: Promise<void> | null; queued: Promise<void> | null }): Promise<void> {
  const p: Promise<void> = fsyncDirectory(dir).finally(() => {
    if (st.running === p) st.running = null;
    if (!st.running && !st.queued) directorySyncs.delete(dir);
  });
  st.running = p;
  return p;
}

/** Best effort: some filesystems cannot fsync a directory. */
async function fsyncDirectory(dir: string): Promise<void> {
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
