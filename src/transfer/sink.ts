// The one body path: a BodySink takes a response body's chunks in order, with back-pressure, and
// reports how much of it is durable. FileSink, its implementation, writes the partial file: it hashes
// each chunk (SHA-256) on the event loop as it arrives, copies it into a write batch (a chunk is only
// valid during the call: it may be a view of the connection's one read buffer), writes each full
// batch with one write() (from the event loop while the disk is quick, else through the thread pool,
// one in flight while the next gathers), and fdatasync()s in the background as it goes (tuning.ts says
// how often); only an fsync'd offset is ever reported durable. A large file is written with direct
// I/O instead: its batches are aligned buffers written past the page cache, several at once through
// the thread pool, its unaligned end through the page cache. The file-safety steps it needs (rename or
// link without clobbering, the name still ours, directory fsync, the direct descriptor) come from
// src/shared/files.ts.

import fs from 'node:fs';
import path from 'node:path';
import { createHash, type Hash } from 'node:crypto';
import { linkWithoutClobber, reopenDirect, stillNamed, syncDirectory, unlinkIfSame, type Descriptor } from '../shared/files.js';
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
  /**
   * Optional: where the next `max` bytes at most may be read so that they land where `write` would
   * copy them (a view of the sink's own buffer), or null. A chunk `write` is given at that very place
   * is taken without a copy.
   */
  placeFor?(max: number): Buffer | null;
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

/**
 * Memory for direct writes. O_DIRECT needs buffers whose address is a multiple of the device's block,
 * which no Buffer allocation promises (malloc's large blocks start 16 bytes into a page); a
 * WebAssembly memory starts on a page boundary. Made at the first large file, TUNING.directBuffers
 * of TUNING.directBufferBytes each, and lent to one file at a time. undefined: not made yet; null:
 * cannot be (no room for the reservation), and no file is written direct.
 */
let directMemory: Buffer[] | null | undefined;
let directLent = false;

function borrowDirectBuffers(): Buffer[] | null {
  if (directLent) return null;
  if (directMemory === undefined) {
    const size = TUNING.directBufferBytes;
    try {
      const pages = (TUNING.directBuffers * size) / 65536;
      const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
      directMemory = Array.from({ length: TUNING.directBuffers }, (_, i) => Buffer.from(memory.buffer, i * size, size));
    } catch {
      directMemory = null;
    }
  }
  if (!directMemory) return null;
  directLent = true;
  return [...directMemory];
}

/** A buffer of direct writes, free again once every piece written from it is. */
interface Slot {
  buf: Buffer;
  pending: number;
}

/** One write of a direct-I/O file: `slot.buf[from, from + length)` at file offset `pos`. */
interface Piece {
  slot: Slot;
  from: number;
  length: number;
  pos: number;
  /** Through the direct descriptor; false: the page cache (the file's unaligned end, a short write's rest, or direct writes refused). */
  direct: boolean;
  done: boolean;
}

/** A file being written with direct I/O. */
interface Direct {
  /** The O_DIRECT descriptor (closed with the file: a write may be queued on it). */
  fd: number;
  /** The filesystem refused a direct write (EINVAL): the rest goes through the page cache. */
  refused: boolean;
  free: Buffer[];
  /** Every piece not yet below the written offset, in file order. */
  pieces: Piece[];
  inFlight: number;
  /** Copies of bytes that came while every buffer was busy (a chunk must be taken whole), in order. */
  overflow: Buffer[];
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
  /** Direct I/O (a large file); null: through the page cache. */
  private direct: Direct | null = null;
  /** Direct I/O: the file offset of the buffer being filled (a multiple of TUNING.directAlign). */
  private curPos = 0;

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
  static async open(
    opened: { path: string; fh: Descriptor; id: string; size: number },
    start: number,
    events: SinkEvents,
    /** With direct I/O if it can be had (the body is large: TUNING.directMinBytes). */
    opts: { direct?: boolean } = {},
  ): Promise<FileSink> {
    const { fh } = opened;
    const hash = createHash('sha256');
    await hashPrefix(fh, start, hash);
    if (start > 0) {
      if (opened.size !== start) await fh.truncate(start);
      await fh.datasync();
    }
    const sink = new FileSink(opened.path, opened.id, fh, start, hash, events);
    if (opts.direct) await sink.goDirect(start);
    return sink;
  }

  /** Written with direct I/O (decided at open: the buffers were free and the filesystem takes it). */
  get isDirect(): boolean {
    return this.direct !== null;
  }

  /**
   * Take the direct buffers and a direct descriptor, when both can be had. Direct writes start at a
   * block boundary: a kept prefix that ends inside a block has that block's first bytes read back
   * into the first buffer and written again with the rest.
   */
  private async goDirect(start: number): Promise<void> {
    const free = borrowDirectBuffers();
    if (!free) return;
    const fd = reopenDirect(this.fd);
    const first = free.pop()!;
    const head = start % TUNING.directAlign;
    try {
      if (fd === null) throw new Error('no direct descriptor');
      for (let got = 0; got < head; ) {
        const { bytesRead } = await this.fh.read(first, got, head - got, start - head + got);
        if (bytesRead === 0) throw new Error('the kept prefix is shorter');
        got += bytesRead;
      }
    } catch {
      if (fd !== null) fs.closeSync(fd);
      directLent = false;
      return;
    }
    this.direct = { fd, refused: false, free, pieces: [], inFlight: 0, overflow: [] };
    this.cur = first;
    this.curUsed = head;
    this.curPos = start - head;
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
    if (this.direct) return this.writeDirect(this.direct, chunk);
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

  /**
   * Direct I/O: copy the chunk into the buffers, each written as it fills. Full (false) while less
   * room is left than one read of a connection brings, so that what comes next finds a buffer.
   */
  private writeDirect(d: Direct, chunk: Buffer): boolean {
    const cur = this.cur;
    if (d.overflow.length > 0) d.overflow.push(Buffer.from(chunk));
    else if (cur && chunk.buffer === cur.buffer && chunk.byteOffset === cur.byteOffset + this.curUsed && chunk.length <= cur.length - this.curUsed) {
      // Read in place (placeFor): already where it goes.
      this.curUsed += chunk.length;
      if (this.curUsed === cur.length) this.sealDirect(d, false);
    } else this.fill(d, chunk, false);
    if (Date.now() - this.lastHandOver >= TUNING.flushIntervalMs) this.sealDirect(d, false);
    if (d.overflow.length === 0 && this.directRoom(d) >= TUNING.readBufferBytes) return true;
    this.full = true;
    return false;
  }

  /**
   * Direct I/O: the free part of the buffer being filled (taking a free buffer when none is), for the
   * next socket read to land in place; null when bytes wait for a buffer or too little room is left.
   * Until that read is handed over nothing else writes there: only `write` fills the buffer (and
   * `overflow`, empty here, grows only in `write`); a finished write frees buffers, never this one.
   */
  placeFor(max: number): Buffer | null {
    const d = this.direct;
    if (!d || this.failure || this.closed || d.overflow.length > 0) return null;
    if (!this.cur) {
      const next = d.free.pop();
      if (!next) return null;
      this.cur = next;
      this.curUsed = 0;
    }
    const room = this.cur.length - this.curUsed;
    if (room < TUNING.placedReadMinBytes) return null;
    return this.cur.subarray(this.curUsed, this.curUsed + Math.min(room, max));
  }

  private directRoom(d: Direct): number {
    return d.free.length * TUNING.directBufferBytes + (this.cur ? this.cur.length - this.curUsed : 0);
  }

  /** Copy into the buffers (a full one is written at once); what finds none free waits in `overflow`. */
  private fill(d: Direct, chunk: Buffer, owned: boolean): void {
    for (let off = 0; off < chunk.length; ) {
      if (!this.cur) {
        const next = d.free.pop();
        if (!next) {
          d.overflow.push(owned ? chunk.subarray(off) : Buffer.from(chunk.subarray(off)));
          return;
        }
        this.cur = next;
        this.curUsed = 0;
      }
      const n = chunk.copy(this.cur, this.curUsed, off);
      this.curUsed += n;
      off += n;
      if (this.curUsed === this.cur.length) this.sealDirect(d, false);
    }
  }

  /** Bytes that waited for a buffer go in, in order, as buffers come free. */
  private drainOverflow(d: Direct): void {
    const waiting = d.overflow;
    d.overflow = [];
    for (let i = 0; i < waiting.length; i++) {
      this.fill(d, waiting[i]!, true);
      if (d.overflow.length > 0) {
        d.overflow.push(...waiting.slice(i + 1));
        return;
      }
    }
  }

  /**
   * Direct I/O: write what the buffer being filled holds. A full buffer goes whole, and so does the
   * last one (`final`), its unaligned end through the page cache. Before that, only its whole blocks
   * go, the rest moved to the start of the next buffer (none free: it waits for the next call).
   */
  private sealDirect(d: Direct, final: boolean): void {
    const buf = this.cur;
    if (!buf || this.curUsed === 0) return;
    const used = this.curUsed;
    const pos = this.curPos;
    const blocks = used - (used % TUNING.directAlign);
    if (used === buf.length || final) {
      this.cur = null;
      this.curUsed = 0;
      this.curPos = pos + used;
      const slot: Slot = { buf, pending: 0 };
      if (blocks > 0) this.issue(d, slot, 0, blocks, pos, pos % TUNING.directAlign === 0);
      if (blocks < used) this.issue(d, slot, blocks, used - blocks, pos + blocks, false);
      return;
    }
    if (blocks === 0 || d.free.length === 0) return;
    const next = d.free.pop()!;
    buf.copy(next, 0, blocks, used);
    this.cur = next;
    this.curUsed = used - blocks;
    this.curPos = pos + blocks;
    this.issue(d, { buf, pending: 0 }, 0, blocks, pos, pos % TUNING.directAlign === 0);
  }

  private issue(d: Direct, slot: Slot, from: number, length: number, pos: number, direct: boolean): void {
    const piece: Piece = { slot, from, length, pos, direct, done: false };
    slot.pending++;
    d.pieces.push(piece);
    d.inFlight++;
    this.lastHandOver = Date.now();
    this.send(d, piece);
  }

  private send(d: Direct, p: Piece): void {
    fs.write(p.direct && !d.refused ? d.fd : this.fd, p.slot.buf, p.from, p.length, p.pos, (err, n) => this.pieceWritten(d, p, err, n));
  }

  private pieceWritten(d: Direct, p: Piece, err: NodeJS.ErrnoException | null, n: number): void {
    if (!err && n === 0) err = noProgress();
    if (err?.code === 'EINVAL' && p.direct && !this.failure) {
      // A filesystem that opens files for direct I/O but refuses these writes: the page cache, from now on.
      d.refused = true;
      p.direct = false;
      return this.send(d, p);
    }
    if (!err && n < p.length) {
      // A short write: the rest through the page cache (its offset may not be a block's).
      p.from += n;
      p.pos += n;
      p.length -= n;
      p.direct = false;
      return this.send(d, p);
    }
    d.inFlight--;
    if (err) {
      if (!this.failure) this.failed(err);
      return this.wakeIdle();
    }
    p.done = true;
    if (--p.slot.pending === 0) d.free.push(p.slot.buf);
    // The written offset only passes bytes with none missing below them: writes finish in any order.
    while (d.pieces[0]?.done) {
      const q = d.pieces.shift()!;
      this.written = q.pos + q.length;
    }
    if (this.failure || this.closed) return this.wakeIdle();
    this.syncIfDue();
    this.drainOverflow(d);
    if (this.idleWaiters.length > 0 && d.overflow.length === 0) this.sealDirect(d, true);
    if (this.full && d.overflow.length === 0 && this.directRoom(d) >= TUNING.readBufferBytes) {
      this.full = false;
      this.sender?.drain();
    }
    this.wakeIdle();
  }

  private failed(err: unknown): void {
    this.failure = err;
    this.inFlight = 0;
    this.cur = null;
    this.curUsed = 0;
    this.sealed = [];
    this.sealedBytes = 0;
    if (this.direct) this.direct.overflow = [];
    this.sender?.fail(err);
    this.wakeIdle();
  }

  /** A write in flight, or (unless a write failed) bytes taken and not yet written. */
  private busy(): boolean {
    if (this.inFlight > 0 || (this.direct?.inFlight ?? 0) > 0) return true;
    if (this.failure) return false;
    return this.curUsed + this.sealedBytes > 0 || (this.direct?.overflow.length ?? 0) > 0;
  }

  private wakeIdle(): void {
    if (this.busy()) return;
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
    if (!this.busy()) return;
    const idle = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    if (!this.direct) {
      this.seal();
      this.pump();
    } else if (this.direct.overflow.length === 0) this.sealDirect(this.direct, true);
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
    if (this.direct) {
      // Nothing is in flight (quiesce): the descriptor can go, and the buffers to the next large file.
      fs.closeSync(this.direct.fd);
      directLent = false;
    } else if (this.cur) giveBack(this.cur);
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
