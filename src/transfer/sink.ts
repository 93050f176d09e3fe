// The one body path: a BodySink takes a response body's chunks in order, with back-pressure, and
// reports how much of it is durable. FileSink, its implementation, writes the partial file: it hashes
// each chunk (SHA-256) on the event loop as it arrives, copies it into a write batch (a chunk is only
// valid during the call: it may be a view of the connection's one read buffer), writes each full
// batch with one write() (from the event loop while the disk is quick, else through the thread pool,
// one in flight while the next gathers), and fdatasync()s in the background as it goes (tuning.ts says
// how often); only an fsync'd offset is ever reported durable. The file-safety steps it needs (rename
// or link without clobbering, the name still ours, directory fsync) come from src/shared/files.ts.

import fs from 'node:fs';
import path from 'node:path';
import { createHash, type Hash } from 'node:crypto';
import { linkWithoutClobber, stillNamed, syncDirectory, unlinkIfSame, type Descriptor } from '../shared/files.js';
import { pickFreePath } from './naming.js';
import { TUNING } from './tuning.js';
import { TransferError } from './types.js';

/** Who sends the bytes: told when a full sink can take more, and when a write failed. */
export interface SinkSender {
  drain(): void;
  fail(err: unknown): void;
}

/** Where a body goes: in order, with back-pressure and a durable offset. */
export interface BodySink {
  /** End of the bytes written so far (completed writes). */
  readonly written: number;
  /** End of the bytes known to be on disk (fsync'd). */
  readonly durable: number;
  /** The write error that stopped the sink, if any (ENOSPC, EIO, …). */
  readonly failure: unknown;
  bind(sender: SinkSender): void;
  /** Take the next chunk (valid during this call only). False: full; send no more until the sender's `drain`. */
  write(chunk: Buffer): boolean;
  /** Every byte taken is written (or the first write error is known). Never throws. */
  settle(): Promise<void>;
  /** Everything taken is written and fsync'd (the durable offset reaches it). Throws the first error. */
  end(): Promise<void>;
  /** Stop: keep the prefix fully written, fsync it, release the file. Never throws; `durable` is what is kept. */
  abort(): Promise<void>;
}

export interface SinkEvents {
  /** The durable offset moved forward (a background or final fsync finished). */
  onDurable(offset: number): void;
}

let finalMode: number | null = null;
/** The mode of a finished file: 0644 less the umask, as a file created by any other tool. */
function finishedMode(): number {
  // process.umask() without an argument only reads it (setting and restoring would race other threads).
  if (finalMode == null) finalMode = 0o644 & ~process.umask();
  return finalMode;
}

/**
 * Write batches no sink is using: a few are kept for the next one, so a stream of files allocates none.
 * Allocated outside Node's small-buffer pool: each is a whole TUNING.writeBatchBytes of its own.
 */
const spareBatches: Buffer[] = [];
const batchBuffer = (): Buffer => spareBatches.pop() ?? Buffer.allocUnsafeSlow(TUNING.writeBatchBytes);
function giveBack(buf: Buffer): void {
  if (spareBatches.length < TUNING.spareBatches) spareBatches.push(buf);
}

/** Files whose final fsync waits for the window to close, and when the last window was opened. */
let syncWaiting: Array<{ fh: Descriptor; resolve: () => void; reject: (err: unknown) => void }> = [];
let syncWindow: NodeJS.Timeout | null = null;
let lastWindowAt = -Infinity;

/**
 * A file's final fsync. Alone, at once; in a stream of files (another window was opened within
 * TUNING.syncStreamMs), after waiting up to TUNING.syncWindowMs for the files finishing with it, all
 * their fsyncs issued together: ext4 then commits its journal once for the lot instead of once per
 * file, and the other files' creates and name lookups wait behind fewer commits. A file is still
 * fsync'd before it is reported complete; only its placing (off its slot) takes longer.
 */
function syncWithOthers(fh: Descriptor): Promise<void> {
  const now = performance.now();
  if (!syncWindow && now - lastWindowAt > TUNING.syncStreamMs) {
    lastWindowAt = now;
    return fh.sync();
  }
  return new Promise<void>((resolve, reject) => {
    syncWaiting.push({ fh, resolve, reject });
    if (syncWindow) return;
    lastWindowAt = now;
    syncWindow = setTimeout(() => {
      const batch = syncWaiting;
      syncWaiting = [];
      syncWindow = null;
      for (const w of batch) w.fh.sync().then(w.resolve, w.reject);
    }, TUNING.syncWindowMs);
  });
}

const noProgress = () => Object.assign(new Error('no progress writing the partial file'), { code: 'EIO', syscall: 'write' });

/** The partial file being written: the only BodySink. */
export class FileSink implements BodySink {
  written: number;
  durable: number;
  failure: unknown = null;
  private readonly fd: number;
  private readonly hash: Hash;
  private sender: SinkSender | null = null;
  /** The batch being filled, and how much of it is. */
  private cur: Buffer | null = null;
  private curUsed = 0;
  /** Full batches waiting for the write in flight, and their total. */
  private sealed: Array<{ buf: Buffer; length: number }> = [];
  private sealedBytes = 0;
  /** Bytes of the write in flight (0: none). */
  private inFlight = 0;
  private full = false;
  private lastHandOver = Date.now();
  private syncing: Promise<void> | null = null;
  private lastSyncAt = Date.now();
  private lastSyncFrom: number;
  private idleWaiters: Array<() => void> = [];
  private closed = false;
  /** Writes go from the event loop until some are slow (see writeAll). */
  private inline = true;
  private slowWrites = 0;

  private constructor(
    readonly path: string,
    /** `dev:ino`: the final rename and a discard act only while the name still holds this file. */
    readonly id: string,
    private readonly fh: Descriptor,
    start: number,
    hash: Hash,
    private readonly events: SinkEvents,
  ) {
    this.fd = fh.fd;
    this.written = start;
    this.durable = start;
    this.lastSyncFrom = start;
    this.hash = hash;
  }

  /**
   * Write into an opened partial file after its first `start` bytes: they are hashed (E_RESUME when
   * the file is shorter), anything past them cut off, and the kept prefix fsync'd (it may hold bytes a
   * crashed process wrote). The caller closes `fh` if this throws.
   */
  static async open(opened: { path: string; fh: Descriptor; id: string; size: number }, start: number, events: SinkEvents): Promise<FileSink> {
    const { fh } = opened;
    const hash = createHash('sha256');
    await hashPrefix(fh, start, hash);
    if (start > 0) {
      if (opened.size !== start) await fh.truncate(start);
      await fh.datasync();
    }
    return new FileSink(opened.path, opened.id, fh, start, hash, events);
  }

  bind(sender: SinkSender): void {
    this.sender = sender;
  }

  /** Bytes taken and not yet written: the batch being filled, the full ones, the one being written. */
  private get unwritten(): number {
    return this.curUsed + this.sealedBytes + this.inFlight;
  }

  write(chunk: Buffer): boolean {
    if (this.failure || this.closed) return true; // the body is being stopped; nothing more is written
    this.hash.update(chunk);
    for (let off = 0; off < chunk.length; ) {
      if (!this.cur) this.cur = batchBuffer();
      const n = chunk.copy(this.cur, this.curUsed, off);
      this.curUsed += n;
      off += n;
      if (this.curUsed === this.cur.length) this.seal();
    }
    if (Date.now() - this.lastHandOver >= TUNING.flushIntervalMs) this.seal();
    this.pump();
    if (this.unwritten < TUNING.highWaterBytes) return true;
    this.full = true;
    return false;
  }

  /** The batch being filled is ready to be written (full, or its bytes have waited long enough). */
  private seal(): void {
    if (!this.cur || this.curUsed === 0) return;
    this.sealed.push({ buf: this.cur, length: this.curUsed });
    this.sealedBytes += this.curUsed;
    this.cur = null;
    this.curUsed = 0;
  }

  /** Start the next write unless one is in flight. */
  private pump(): void {
    if (this.inFlight > 0 || this.sealed.length === 0 || this.failure) return;
    const { buf, length } = this.sealed.shift()!;
    this.sealedBytes -= length;
    this.inFlight = length;
    this.lastHandOver = Date.now();
    this.writeAll(buf, 0, length);
  }

  /**
   * Write `buf[from, to)` at the end of what is written. From the event loop, as curl and aria2c write:
   * a write into the page cache takes tens of microseconds, and a trip through the thread pool cost
   * more CPU than the write itself. Writes that take longer than TUNING.inlineWriteMs (the kernel
   * throttling a writer, a network filesystem) move this file's writes to the thread pool for good,
   * so a slow disk holds the event loop (and every other transfer) only a few times.
   */
  private writeAll(buf: Buffer, from: number, to: number): void {
    if (!this.inline) return void fs.write(this.fd, buf, from, to - from, this.written, (err, n) => this.wrote(buf, from, to, err, n));
    const began = performance.now();
    let n = 0;
    let err: NodeJS.ErrnoException | null = null;
    try {
      n = fs.writeSync(this.fd, buf, from, to - from, this.written);
    } catch (e) {
      err = e as NodeJS.ErrnoException;
    }
    // One slow write may be this process being preempted on a busy machine; a disk that holds writers
    // back is slow again and again.
    if (performance.now() - began > TUNING.inlineWriteMs && ++this.slowWrites >= TUNING.slowWritesToPool) this.writeThroughThreadPool();
    this.wrote(buf, from, to, err, n);
  }

  /** From now on, write through the thread pool (a slow write did this; the tests do it to exercise that path). */
  writeThroughThreadPool(): void {
    this.inline = false;
  }

  private wrote(buf: Buffer, from: number, to: number, err: NodeJS.ErrnoException | null, n: number): void {
    if (!err && n === 0) err = noProgress();
    if (err) return this.failed(err);
    this.written += n;
    if (from + n < to) return this.writeAll(buf, from + n, to);
    giveBack(buf);
    this.inFlight = 0;
    this.syncIfDue();
    if (this.idleWaiters.length > 0) this.seal();
    this.pump();
    if (this.full && this.unwritten < TUNING.highWaterBytes) {
      this.full = false;
      this.sender?.drain();
    }
    if (this.inFlight === 0) this.wakeIdle();
  }

  private failed(err: unknown): void {
    this.failure = err;
    this.inFlight = 0;
    this.cur = null;
    this.curUsed = 0;
    this.sealed = [];
    this.sealedBytes = 0;
    this.sender?.fail(err);
    this.wakeIdle();
  }

  private wakeIdle(): void {
    if (this.inFlight > 0 || (this.curUsed + this.sealedBytes > 0 && !this.failure)) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  /** Start an fdatasync in the background when one is due; the durable offset is what was written when it began. */
  private syncIfDue(): void {
    const now = Date.now();
    if (this.syncing || (now - this.lastSyncAt < TUNING.durableLagMs && this.written - this.lastSyncFrom < TUNING.syncEveryBytes)) return;
    this.lastSyncAt = now;
    this.lastSyncFrom = this.written;
    const upTo = this.written;
    this.syncing = new Promise<void>((resolve) =>
      fs.fdatasync(this.fd, (err) => {
        // A failed background sync is not reported: the final fsync fails the same way.
        if (!err) this.markDurable(upTo);
        this.syncing = null;
        resolve();
      }),
    );
  }

  private markDurable(offset: number): void {
    if (offset <= this.durable) return;
    this.durable = offset;
    this.events.onDurable(offset);
  }

  async settle(): Promise<void> {
    if (this.inFlight === 0 && (this.curUsed + this.sealedBytes === 0 || this.failure)) return;
    const idle = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    this.seal();
    this.pump();
    await idle;
  }

  /** Nothing in flight that uses the descriptor: writes and background syncs. */
  private async quiesce(): Promise<void> {
    await this.settle();
    while (this.syncing) await this.syncing;
  }

  async end(): Promise<void> {
    await this.quiesce();
    if (this.failure) throw this.failure;
    await syncWithOthers(this.fh);
    this.markDurable(this.written);
  }

  async abort(): Promise<void> {
    if (this.closed) return;
    await this.quiesce();
    try {
      await this.fh.truncate(this.written);
      await this.fh.sync();
      this.markDurable(this.written);
    } catch {
      /* keep the last durable offset */
    }
    await this.close();
  }

  /** SHA-256 of the whole file as written (after `end`). */
  digest(): string {
    return this.hash.digest('hex');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.quiesce();
    this.closed = true;
    if (this.cur) giveBack(this.cur);
    this.cur = null;
    await this.fh.close().catch(() => {});
  }

  /** Remove the partial file (nothing of it is worth keeping), if the name is still ours. */
  async discard(): Promise<void> {
    await this.close();
    await unlinkIfSame(this.path, this.id);
  }

  /**
   * Make the complete, verified file the destination: final mode, fsync, then `rename` over `output`
   * when the user chose the path, else link without clobbering so an existing file is never replaced
   * (the next free numbered name is taken instead); then fsync the directory. Returns the path used.
   * Throws E_FENCED when the name no longer holds this file (a takeover continues in a copy).
   */
  async finish(output: string, replace: boolean, fenced: () => Error): Promise<string> {
    // The steps around the fsyncs do not wait on the disk: synchronous (see linkWithoutClobber).
    fs.fchmodSync(this.fd, finishedMode());
    await this.end();
    await this.close();
    if (!(await stillNamed(this.path, this.id))) throw fenced();
    const used = replace ? renameInto(this.path, output) : await linkInto(this.path, output);
    await syncDirectory(path.dirname(used));
    return used;
  }
}

async function hashPrefix(fh: Descriptor, length: number, hash: Hash): Promise<void> {
  if (length <= 0) return;
  const buf = Buffer.allocUnsafe(Math.min(TUNING.prefixReadBytes, length));
  let pos = 0;
  while (pos < length) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - pos), pos);
    if (bytesRead === 0) throw new TransferError('E_RESUME', `the partial file is shorter than ${length} bytes`, true);
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
}

function renameInto(part: string, output: string): string {
  fs.renameSync(part, output);
  return output;
}

/** Link under `output`, or the next free numbered name when it is taken. */
async function linkInto(part: string, output: string): Promise<string> {
  let target = output;
  for (let tries = 0; tries < 1000; tries++) {
    try {
      linkWithoutClobber(part, target);
      return target;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      target = await pickFreePath(path.dirname(output), path.basename(output), new Set());
    }
  }
  throw new TransferError('E_DEST', `no free file name for ${output}`, false);
}
