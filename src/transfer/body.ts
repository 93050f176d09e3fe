// Receiving a response body into the part file. Chunks are taken from the moment the response
// arrives (flowing mode), so if the connection fails while the output is still being chosen, every
// byte received is still ours to write and resume from; a paused or buffered stream would drop them.

import type { Readable } from 'node:stream';
import type { PartFile } from './partfile.js';

/** Held in memory before the part file is open; past this the body is paused. */
const EARLY_BYTES = 1024 * 1024;

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
 * `admit` sees each chunk's size first: an error from it stops the body, that chunk unwritten.
 * Returns the body bytes received, all written but not yet fsync'd: the caller verifies them first
 * and then makes the file durable once, together with its final mode (PartFile.finish).
 */
export async function writeBody(incoming: Incoming, part: PartFile, admit?: (bytes: number) => Error | null): Promise<number> {
  const { body } = incoming;
  let received = 0;
  let refused: Error | null = null;
  part.bind({
    drain: () => {
      if (body.isPaused() && !body.destroyed) body.resume();
    },
    fail: (err) => body.destroy(err as Error),
  });
  incoming.start((chunk) => {
    if (refused) return;
    refused = admit?.(chunk.length) ?? null;
    if (refused) return void body.destroy(refused);
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
  if (refused) throw refused;
  if (failure) throw failure;
  if (part.failure) throw part.failure;
  return received;
}
