// Receiving a response body into the part file. Chunks are taken from the moment the response
// arrives (flowing mode), so if the connection fails while the output is still being chosen, every
// byte received is still ours to write and resume from; a paused or buffered stream would drop them.

import type { Readable } from 'node:stream';
import type { PartFile } from './partfile.js';

/** Held in memory before the part file is open; past this the body is paused. */
const EARLY_BYTES = 1024 * 1024;
/** A fresh body of at most this many bytes (by its Content-Length) may be received into memory... */
export const SMALL_BODY_MAX = 256 * 1024;
/** ...if it arrives within this long; else it moves to a part file and is made durable as it grows. */
const SMALL_BODY_MS = 1000;

export class Incoming {
  private early: Buffer[] = [];
  private earlyBytes = 0;
  private sink: ((chunk: Buffer) => void) | null = null;
  /** Settles when the body ends (or fails). */
  readonly done: Promise<void>;

  constructor(readonly body: Readable) {
    this.done = new Promise<void>((resolve, reject) => {
      body.once('end', resolve);
      body.once('error', reject);
    });
    this.done.catch(() => {}); // observed later by writeBody; never an unhandled rejection
    body.on('data', (chunk: Buffer) => {
      if (this.sink) return this.sink(chunk);
      this.early.push(chunk);
      this.earlyBytes += chunk.length;
      if (this.earlyBytes >= EARLY_BYTES) body.pause();
    });
  }

  /** Deliver what has arrived so far, then every further chunk, to `sink`. */
  start(sink: (chunk: Buffer) => void): void {
    this.sink = sink;
    const early = this.early;
    this.early = [];
    for (const chunk of early) sink(chunk);
    if (this.body.isPaused() && !this.body.destroyed) this.body.resume();
  }

  /** Not going to read it: close the connection. */
  discard(): void {
    this.body.destroy();
  }
}

/**
 * Stream the body into the part file, which hashes and writes it (pausing the body while its buffers
 * are full). On a failure the bytes already received are written before the error is thrown.
 * Returns the body bytes received, all written but not yet fsync'd: the caller verifies them first
 * and then makes the file durable once, together with its final mode (PartFile.finish).
 */
export async function writeBody(incoming: Incoming, part: PartFile): Promise<number> {
  const { body } = incoming;
  let received = 0;
  part.bind({
    drain: () => {
      if (body.isPaused() && !body.destroyed) body.resume();
    },
    fail: (err) => body.destroy(err as Error),
  });
  incoming.start((chunk) => {
    received += chunk.length;
    if (!part.append(chunk)) body.pause();
  });

  let failure: unknown = null;
  try {
    await incoming.done;
  } catch (err) {
    failure = err;
  }
  await part.settle();
  if (failure) throw failure;
  if (part.failure) throw part.failure;
  return received;
}

export type SmallBody =
  | { kind: 'memory'; chunks: Buffer[]; received: number }
  /** Moved to a part file: too slow, or it failed (then `failure` is set and what arrived is written). */
  | { kind: 'file'; part: PartFile; received: number; failure: unknown };

/**
 * Receive a small body into memory, to be verified and put in place in one step. A body that takes
 * longer than SMALL_BODY_MS (a slow link) or fails goes to a part file opened with `open`, with what
 * arrived so far, and continues there like any other: durable offsets and resuming work as for large
 * files. Throws only when the part file cannot be opened.
 */
export async function receiveSmall(incoming: Incoming, open: () => Promise<PartFile>, progress: (received: number) => void): Promise<SmallBody> {
  const { body } = incoming;
  let chunks: Buffer[] = [];
  let received = 0;
  let part: PartFile | null = null;
  let moving: Promise<void> | null = null;
  let openError: unknown = null;

  const moveToFile = (): Promise<void> =>
    (moving ??= open().then(
      (p) => {
        p.bind({
          drain: () => {
            if (body.isPaused() && !body.destroyed) body.resume();
          },
          fail: (err) => body.destroy(err as Error),
        });
        let more = true;
        for (const chunk of chunks) more = p.append(chunk) && more;
        chunks = [];
        part = p;
        if (!more) body.pause();
      },
      (err) => {
        openError = err;
        incoming.discard();
      },
    ));
  const timer = setTimeout(() => void moveToFile(), SMALL_BODY_MS);
  incoming.start((chunk) => {
    received += chunk.length;
    if (part) {
      if (!part.append(chunk)) body.pause();
      return;
    }
    chunks.push(chunk);
    progress(received);
  });

  let failure: unknown = null;
  try {
    await incoming.done;
  } catch (err) {
    failure = err;
  }
  clearTimeout(timer);
  if (!failure && !moving) return { kind: 'memory', chunks, received };
  await moveToFile();
  if (openError) throw openError;
  const p = part as PartFile | null;
  await p!.settle();
  return { kind: 'file', part: p!, received, failure: failure ?? p!.failure };
}
