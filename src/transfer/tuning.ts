// Every tuning constant of the body path, in one block, each with the reason for its value. The
// figures quoted were measured with `npm run bench -- --only=big` on the 2-core development machine
// (Linux 6.18, ext4); see docs/ARCHITECTURE.md, "The body path".

export const TUNING = {
  /**
   * The one buffer every direct HTTP/1.1 connection reads into (h1.ts): a read takes up to this
   * much. Each read costs a callback, a hash call and a copy, so fewer, larger reads cost less: for
   * 1 GiB over loopback the worker spent 1.25-1.31 s of CPU with 1 MiB against 1.41-1.46 s with
   * 256 KiB, and there is only one such buffer in the process.
   */
  readBufferBytes: 1024 * 1024,
  /**
   * Body bytes held in memory while the output is still being chosen (before the partial file is
   * open); past this the connection is paused. The few milliseconds of naming and creating the file
   * cost a fast transfer little waiting; a MiB of copies here was part of a 1 GiB download's peak RSS.
   */
  earlyBytes: 256 * 1024,
  /**
   * Chunks are copied into batches of this size, each written with one write(): fewer system calls
   * than one per read, small enough that the kernel keeps using small page-cache folios (larger single
   * writes cost more system time per byte on this kernel: 512 KiB measured 1.76-2.18 s of worker CPU
   * for 1 GiB against 1.25-1.31 s with 256 KiB). 128 KiB against 256 KiB, later: the worker's CPU
   * for 1 GiB 1.29-1.33 s against 1.34-1.37 s (`npm run bench -- --only=big`), and by hand, four
   * interleaved pairs, the main thread 1.30-1.80 s against 1.47-2.17 s; 64 KiB measured as 128.
   */
  writeBatchBytes: 128 * 1024,
  /**
   * A write of a batch from the event loop that takes longer than this is slow; `slowWritesToPool` of
   * them move that file's writes to the thread pool (sink.ts). Into the page cache a 256 KiB write
   * takes well under a millisecond; a kernel throttling a heavy writer pauses it for up to 200 ms, a
   * network filesystem longer. Inline writes measured 1.58-1.69 s of worker CPU for 1 GiB against
   * 1.95-1.99 s through the thread pool.
   */
  inlineWriteMs: 50,
  /**
   * How many slow writes (above) move a file's writes to the thread pool. One slow write of 20 ms was
   * too few, and three still moved some 1 GiB downloads on a busy 2-core machine (a write preempted
   * by the server's process): those used 0.3 s more CPU and 3-5 MiB more memory (bodies held while
   * the pool wrote, their reads set aside in copies), peaking at 63.5-65.5 MiB against 60.4-61.0;
   * with four of 50 ms, six runs out of six stayed at 60.4-61.0 MiB. The event loop is held at most
   * four times per file (a throttled writer is paused for 200 ms at most).
   */
  slowWritesToPool: 4,
  /**
   * Empty write batches kept for the next file (sink.ts): enough for a file being written and the
   * next starting while it finishes, without holding more than a couple of MiB when all is idle.
   */
  spareBatches: 4,
  /**
   * Bytes taken and not yet written (the batch being filled, full ones waiting, the one being
   * written) above which the body is paused: bounds memory however slow the disk is. Writes from the
   * event loop leave less than a batch unwritten; it matters once a file's writes go through the
   * thread pool (a slow disk), where two batches keep the disk busy while the next one fills.
   */
  highWaterBytes: 512 * 1024,
  /**
   * A file with at least this many bytes still to come (its length known) is written with direct I/O
   * (O_DIRECT): from our buffers straight to the disk, past the page cache (sink.ts). On the 2-core
   * development machine (a virtual machine, ext4) filling the page cache is the costliest step of a
   * large download: 1 GiB received, hashed and written by a bare Node.js program took 2.84-4.02 s
   * (2.4-3.6 s of CPU) through the page cache, 1.06-1.16 s (1.1-1.2 s) with direct writes, where
   * `curl -o` + `sync` took 1.37-1.57 s (scripts/bench-floor.mjs measures the same). Smaller files
   * stay in the page cache: their writes cost little, and a file read again soon after it lands
   * (a hook) is read from memory.
   */
  directMinBytes: 32 * 1024 * 1024,
  /**
   * Direct writes: this many buffers of this size, lent to one file at a time (a second large file
   * goes through the page cache: the disk is shared either way), written as each fills, several at
   * once. The bare program above: 1 GiB in 1.06-1.16 s with 4 x 1 MiB, 1.23-1.28 s with 3 x 1 MiB,
   * 1.24-1.33 s with 6 x 512 KiB, 1.26-1.31 s with one write in flight at a time, 1.65-2.05 s with
   * 2 x 1 or 2 x 2 MiB (the reader waits for a buffer). The worker (`npm run bench -- --only=big`):
   * 3 x 1 MiB peaked at 61.8 MiB of RSS, 4 x 1 MiB at 63.3 (the bar is 64), both at the same speed
   * within the runs' spread; 512 KiB reads instead of 1 MiB saved ~1.5 MiB and cost 10% more CPU.
   * Once bodies were read in place and no longer cut in 16 KiB pieces, 4 peaked at 61.1-61.3 MiB
   * and let a read find a free buffer more often: 64% of a 1 GiB download's bytes landed in place
   * against 13-31% with 3, the main thread's user time 0.75-0.83 s against 0.87-0.94 s, the task
   * 1.13-1.18 s against 1.20-1.51 s (three interleaved pairs by hand).
   */
  directBuffers: 4,
  directBufferBytes: 1024 * 1024,
  /** File offsets and lengths of direct writes are multiples of this (ext4's block; a device's is 512 or 4096). */
  directAlign: 4096,
  /**
   * A socket read lands straight in a direct-I/O buffer (no copy: h1.ts readTarget, sink.ts
   * placeFor) when at least this much of the buffer is free and of the body is left; less, and the
   * read goes to the shared buffer and is copied (no short reads).
   */
  placedReadMinBytes: 64 * 1024,
  /** A slow transfer still reaches the disk this often, so a crash keeps what had arrived. */
  flushIntervalMs: 250,
  /**
   * A background fdatasync() starts (when none is running) once this much has been written since the
   * last one began, or `durableLagMs` has passed. For a fast transfer this keeps the disk writing
   * while the network delivers, so the final fsync has little left to do: measured on 512 MiB, syncs
   * back to back finished the task in ~0.85-1.0 s against ~1.05-1.3 s with one every 1-5 s, at the
   * same CPU time (1.10 s). A slow transfer is synced about once a second instead of ten times.
   */
  syncEveryBytes: 16 * 1024 * 1024,
  /**
   * The durable offset (what a resume after a reboot starts from) lags the written one by at most
   * about this long while bytes arrive. A process crash loses nothing either way (the bytes are in the
   * page cache and the next attempt keeps the file's length).
   */
  durableLagMs: 1000,
  /**
   * Bodies read by undici only (TLS, proxies: response.ts `readableBody`), whose every socket read is
   * a fresh buffer: every this many body bytes (all such transfers together) a young-generation
   * collection is asked for (runtime.ts says why). Measured when all bodies came that way, with the
   * chunks themselves batched: 2 MiB with a 2 MiB high-water mark gave 98 MiB peak RSS for 512 MiB;
   * 4 MiB with 1 MiB, 75 MiB; 8 MiB with 1 MiB, 79 MiB; all at the same CPU time.
   */
  youngGcBytes: 4 * 1024 * 1024,
  /**
   * Bodies read by undici only: every this many body bytes an old-generation collection is started,
   * in the background (runtime.ts).
   * Chunks that still outlive two young collections (a natural one, set off by undici's own
   * allocations, falls between two of ours) are promoted and then held until V8's own full
   * collection, which waits for ~30 MiB of them: 1 GiB measured 101-107 MiB peak RSS without it,
   * 76 MiB with one every 64 MiB, at the same CPU time within the runs' spread.
   */
  oldGcBytes: 64 * 1024 * 1024,
  /**
   * In a stream of finished files, a file's final fsync waits up to this long for the others
   * finishing with it, and all are issued together (sink.ts `syncWithOthers`): one journal commit
   * for the lot. 2,000 x 16 KiB, worker started by hand, five runs each way: at 6 connections
   * 1.88-2.26 s and 1.98-2.48 s of worker CPU against 2.32-2.44 s and 2.55-2.69 s; at 16, 1.95 s
   * against 2.03-2.07 s. Without a wait (the next group forming while one is in flight) it gained
   * nothing; 5 ms and 20 ms gained less than 10.
   */
  syncWindowMs: 10,
  /** A final fsync waits for a window only when another window opened this recently (a stream of files); a lone file is fsync'd at once. */
  syncStreamMs: 100,
  /** Reading a partial file back to hash its kept prefix: one read of this size at a time. */
  prefixReadBytes: 1024 * 1024,
  /** A statfs() answer for a directory is reused this long for the free-space check of the next file. */
  freeSpaceReuseMs: 1000,
  /**
   * A directory's real path (pickFreePath) is reused this long for the next file named in it: each
   * realpath is an lstat of every component (3 of the ~6 lstats a small file cost). It only keeps
   * apart two spellings of one directory; the file itself is created by its own path.
   */
  realDirReuseMs: 1000,
  /** While writing, free space is asked again after this many bytes or this long, whichever first. */
  freeSpaceLookBytes: 4 * 1024 * 1024,
  freeSpaceLookMs: 1000,
} as const;
