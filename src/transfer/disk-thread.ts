// A thread that hashes and writes a large download, so the event loop only receives: the main thread
// copies each body chunk into a shared ring buffer and hands over regions of half a MiB; the thread
// feeds them to SHA-256 and pwrite()s them while the bytes are still in its cache, and fdatasync()s
// about once a second so the durable offset keeps up. A few such threads are pooled.
//
// Waking a sleeping thread costs (a futex and an inter-processor interrupt each time, more in a VM),
// so there is one message per region towards the thread and, back, only when the main thread is
// waiting for ring space or for the end: otherwise it reads the count of regions done from shared
// memory whenever it looks.

import { Worker } from 'node:worker_threads';
import os from 'node:os';

/** Bytes of the ring shared with a thread: eight regions in flight (network and disk overlap). */
const RING_BYTES = 4 * 1024 * 1024;
/**
 * A region is handed over at this size (one hash update and one pwrite). Not larger: writes of 1 MiB
 * and more make the kernel allocate large page-cache folios, which cost several times the system
 * time of the copy itself (measured on Linux 6.18 ext4: 2 MiB writes ~4x the sys time of 512 KiB).
 */
const REGION_BYTES = 512 * 1024;
/** At most this many threads (each holds a ring); more large downloads at once write on the event loop. */
const MAX_THREADS = Math.max(1, Math.min(4, os.availableParallelism?.() ?? os.cpus().length));
/** An idle thread is ended after this long. */
const IDLE_MS = 30_000;
/** Just under glibc's largest dynamic mmap threshold (32 MiB on 64-bit). */
const PRIME_BYTES = 32 * 1024 * 1024 - 64 * 1024;

/** Slots of the shared control words. */
export const CTL_DONE = 0; // regions written since `open` (the thread stores, the main thread loads)
export const CTL_WAKE = 1; // 1: the main thread waits; the thread posts `wake` after its next region

/**
 * The thread's code. It runs from its source text (so it works from dist/ and from the TypeScript
 * sources under test alike): it may use only its own scope and `require`.
 */
function diskThreadMain(): void {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { parentPort, workerData } = require('node:worker_threads') as typeof import('node:worker_threads');
  const fs = require('node:fs') as typeof import('node:fs');
  const crypto = require('node:crypto') as typeof import('node:crypto');
  const ring = Buffer.from(workerData.ring as SharedArrayBuffer);
  const ctl = new Int32Array(workerData.ctl as SharedArrayBuffer);
  /**
   * fdatasync in the background this often, as the event-loop writer does: the durable offset is at
   * most about a second behind. (Syncing every few MiB instead keeps the final fsync short but
   * stalls the writes more than it saves: measured slower end to end.)
   */
  const SYNC_MS = 1000;
  const port = parentPort!;
  let fd = -1;
  let pos = 0;
  let done = 0;
  let hash: import('node:crypto').Hash | null = null;
  let failed = false;
  let syncing = false;
  let lastSyncAt = 0;
  let quietWaiters = 0;
  const errorOf = (err: NodeJS.ErrnoException) => ({ code: err.code, message: err.message, syscall: err.syscall, errno: err.errno });

  const quietNow = () => {
    if (syncing) return;
    for (; quietWaiters > 0; quietWaiters--) port.postMessage({ op: 'quiet' });
  };
  const maybeSync = () => {
    const now = Date.now();
    if (syncing || now - lastSyncAt < SYNC_MS) return;
    syncing = true;
    lastSyncAt = now;
    const upTo = pos;
    fs.fdatasync(fd, (err) => {
      syncing = false;
      // A failed background sync is not reported: the final fsync will fail the same way.
      if (!err) port.postMessage({ op: 'durable', upTo });
      quietNow();
    });
  };

  port.on('message', (m: { op: string; fd?: number; start?: number; end?: number }) => {
    switch (m.op) {
      case 'open': {
        fd = m.fd!;
        pos = m.start!;
        done = 0;
        Atomics.store(ctl, 0, 0);
        Atomics.store(ctl, 1, 0);
        hash = crypto.createHash('sha256');
        failed = false;
        lastSyncAt = Date.now();
        // Resuming: the bytes already in the file start the hash.
        try {
          const length = m.start!;
          let at = 0;
          while (at < length) {
            const n = fs.readSync(fd, ring, 0, Math.min(ring.length, length - at), at);
            if (n === 0) {
              port.postMessage({ op: 'opened', short: true });
              return;
            }
            hash.update(ring.subarray(0, n));
            at += n;
          }
          port.postMessage({ op: 'opened' });
        } catch (err) {
          port.postMessage({ op: 'opened', error: errorOf(err as NodeJS.ErrnoException) });
        }
        return;
      }
      case 'write': {
        if (failed) return;
        const region = ring.subarray(m.start!, m.end!);
        hash!.update(region);
        try {
          for (let off = 0; off < region.length; ) {
            const n = fs.writeSync(fd, region, off, region.length - off, pos);
            if (n === 0) throw Object.assign(new Error('no progress writing the partial file'), { code: 'EIO', syscall: 'write' });
            off += n;
            pos += n;
          }
        } catch (err) {
          failed = true;
          port.postMessage({ op: 'failed', written: pos, error: errorOf(err as NodeJS.ErrnoException) });
          return;
        }
        Atomics.store(ctl, 0, ++done);
        if (Atomics.exchange(ctl, 1, 0) === 1) port.postMessage({ op: 'wake' });
        maybeSync();
        return;
      }
      case 'quiesce':
        quietWaiters++;
        quietNow();
        return;
      case 'digest':
        port.postMessage({ op: 'digest', hex: hash!.digest('hex') });
        hash = null;
        return;
      case 'close':
        fd = -1;
        hash = null;
        return;
    }
  });
}

type Reply =
  | { op: 'opened'; short?: boolean; error?: ThreadErrorInfo }
  | { op: 'wake' }
  | { op: 'failed'; written: number; error: ThreadErrorInfo }
  | { op: 'durable'; upTo: number }
  | { op: 'quiet' }
  | { op: 'digest'; hex: string };

interface ThreadErrorInfo {
  code?: string;
  message: string;
  syscall?: string;
  errno?: number;
}

export function errorFromThread(e: ThreadErrorInfo): NodeJS.ErrnoException {
  return Object.assign(new Error(e.message), { code: e.code, syscall: e.syscall, errno: e.errno });
}

/** What a thread tells the part file it is working for. */
export interface ThreadSession {
  onReply(reply: Reply): void;
  /** The thread died (a bug): every wait ends with this error. */
  onCrash(err: Error): void;
}

/** One pooled thread with its ring. */
export class DiskThread {
  readonly ring: Buffer;
  readonly ctl: Int32Array;
  private session: ThreadSession | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private dead = false;

  private constructor(private readonly worker: Worker, sab: SharedArrayBuffer, ctl: SharedArrayBuffer) {
    this.ring = Buffer.from(sab);
    this.ctl = new Int32Array(ctl);
    worker.on('message', (m: Reply) => this.session?.onReply(m));
    worker.on('error', (err) => this.die(err));
    worker.on('exit', (code) => this.die(new Error(`the disk thread exited (${code})`)));
  }

  static create(): DiskThread {
    const sab = new SharedArrayBuffer(RING_BYTES);
    const ctl = new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT);
    const worker = new Worker(`(${diskThreadMain.toString()})()`, { eval: true, workerData: { ring: sab, ctl } });
    return new DiskThread(worker, sab, ctl);
  }

  static get regionBytes(): number {
    return REGION_BYTES;
  }

  private die(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    pool.delete(this);
    const s = this.session;
    this.session = null;
    s?.onCrash(err);
  }

  attach(session: ThreadSession): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    this.session = session;
    // While a file is open the thread's replies are awaited: keep the process alive for them.
    this.worker.ref();
  }

  send(msg: { op: 'open'; fd: number; start: number } | { op: 'write'; start: number; end: number } | { op: 'quiesce' } | { op: 'digest' } | { op: 'close' }): void {
    this.worker.postMessage(msg);
  }

  /** The part file is done with the thread: back to the pool (ended after a while unused). */
  release(): void {
    if (this.dead) return;
    this.send({ op: 'close' });
    this.session = null;
    this.worker.unref();
    this.idleTimer = setTimeout(() => {
      pool.delete(this);
      this.dead = true;
      void this.worker.terminate();
    }, IDLE_MS);
    this.idleTimer.unref();
  }

  get busy(): boolean {
    return this.session != null;
  }
}

const pool = new Set<DiskThread>();
let primed = false;

/**
 * Node reads a socket into a fresh 64 KiB malloc() block each time, and a fast transfer frees them by
 * the thousand. glibc then keeps giving the top of its heap back to the kernel and faulting it in
 * again: at 1 GiB that costs more system time than the copying itself. Freeing one large mmap()ed
 * block once makes glibc raise its mmap and trim thresholds (its documented dynamic adjustment), so
 * the heap stays put. The block is dropped at once and freed at the next garbage collection.
 */
function primeAllocator(): void {
  if (primed) return;
  primed = true;
  Buffer.allocUnsafeSlow(PRIME_BYTES).fill(0, 0, 1);
}

/** A free thread, started if needed; null when MAX_THREADS are all busy. */
export function takeDiskThread(): DiskThread | null {
  primeAllocator();
  for (const t of pool) if (!t.busy) return t;
  if (pool.size >= MAX_THREADS) return null;
  const t = DiskThread.create();
  pool.add(t);
  return t;
}
