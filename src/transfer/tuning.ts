// Every tuning constant of the body path, in one block, each with the reason for its value. The
// figures quoted were measured with `npm run bench -- --only=big` on the 2-core development machine
// (Linux 6.18, ext4); see docs/ARCHITECTURE.md, "The body path".

export const TUNING = {
  /**
   * The one buffer every direct HTTP/1.1 connection reads into (h1.ts): a read takes up to this
   * much. Over loopback a 1 MiB buffer took reads of 64 KiB-1 MiB at a time; each read costs a
   * callback and a hash call, so fewer, larger reads cost less CPU, and there is only one buffer.
   */
  readBufferBytes: 1024 * 1024,
  /**
   * Body bytes held in memory while the output is still being chosen (before the partial file is
   * open); past this the connection is paused. One MiB covers what a fast server sends during the
   * few milliseconds of naming and creating the file.
   */
  earlyBytes: 1024 * 1024,
  /**
   * Chunks are gathered and written with one writev() of about this much: fewer system calls and
   * thread-pool hops than one write per 64 KiB chunk, small enough that the kernel keeps using small
   * page-cache folios (larger single writes cost more system time per byte on this kernel).
   */
  writeBatchBytes: 512 * 1024,
  /**
   * Empty write batches kept for the next file (sink.ts): enough for a file being written and the
   * next starting while it finishes, without holding more than a couple of MiB when all is idle.
   */
  spareBatches: 4,
  /**
   * Bytes taken and not yet written (the batch being gathered plus the one being written) above
   * which the body is paused: bounds memory at two batches however slow the disk is. 1 MiB wrote
   * as fast as 2 MiB or 8 MiB did over loopback, and keeps chunks young (see youngGcBytes).
   */
  highWaterBytes: 1024 * 1024,
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
   * Every this many body bytes (all transfers together) a young-generation collection is asked for
   * (runtime.ts says why). It must stay well above highWaterBytes: a chunk still waiting to be written
   * when two collections pass is promoted to the old generation and then lives until a full
   * collection (2 MiB with a 2 MiB high-water mark measured 98 MiB peak RSS for 512 MiB; 4 MiB with
   * 1 MiB, 75 MiB; 8 MiB with 1 MiB, 79 MiB; all at the same CPU time).
   */
  youngGcBytes: 4 * 1024 * 1024,
  /**
   * Every this many body bytes an old-generation collection is started, in the background (runtime.ts).
   * Chunks that still outlive two young collections (a natural one, set off by undici's own
   * allocations, falls between two of ours) are promoted and then held until V8's own full
   * collection, which waits for ~30 MiB of them: 1 GiB measured 101-107 MiB peak RSS without it,
   * 76 MiB with one every 64 MiB, at the same CPU time within the runs' spread.
   */
  oldGcBytes: 64 * 1024 * 1024,
  /** Reading a partial file back to hash its kept prefix: one read of this size at a time. */
  prefixReadBytes: 1024 * 1024,
  /** A statfs() answer for a directory is reused this long for the free-space check of the next file. */
  freeSpaceReuseMs: 1000,
  /** While writing, free space is asked again after this many bytes or this long, whichever first. */
  freeSpaceLookBytes: 4 * 1024 * 1024,
  freeSpaceLookMs: 1000,
} as const;
