// Receiving a response body into the part file. Chunks are taken from the moment the response
// arrives (flowing mode), so if the connection fails while the output is still being chosen, every
// byte received is still ours to write and resume from; a paused or buffered stream would drop them.

import type { Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { PartFile } from './partfile.js';

// Chunks are hashed as they arrive and written in batches of about this much, with one write in
// flight while the next batch fills, so disk and network overlap and a 1 GiB transfer costs about a
// thousand writes, not sixteen thousand.
const BATCH_BYTES = 1024 * 1024;
/** A slow transfer still reaches the disk (and the progress display) this often. */
const FLUSH_INTERVAL_MS = 250;
/** Held in memory before the part file is open; past this the body is paused. */
const EARLY_BYTES = BATCH_BYTES;

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
 * Stream the body into the part file: hash every chunk, hand batches to the part file (the body is
 * paused only while a second batch waits for the disk), report progress per batch. On a failure the
 * bytes already received are written before the error is thrown. Returns the body bytes received.
 */
export async function writeBody(incoming: Incoming, part: PartFile, hash: Hash, progress: (received: number) => void): Promise<number> {
  const { body } = incoming;
  let batch: Buffer[] = [];
  let batchBytes = 0;
  let received = 0;
  let lastHandOver = Date.now();
  let waiting = 0;
  let handedOver: Promise<void> = Promise.resolve();

  const handOver = (): void => {
    const chunks = batch;
    const size = batchBytes;
    const upTo = received;
    batch = [];
    batchBytes = 0;
    lastHandOver = Date.now();
    waiting++;
    handedOver = handedOver.then(() => part.write(chunks, size)).then(() => {
      waiting--;
      progress(upTo);
    });
    handedOver.then(
      () => {
        if (waiting <= 1 && body.isPaused() && !body.destroyed) body.resume();
      },
      (err) => body.destroy(err),
    );
    if (waiting > 1) body.pause();
  };

  incoming.start((chunk) => {
    hash.update(chunk);
    batch.push(chunk);
    batchBytes += chunk.length;
    received += chunk.length;
    if (batchBytes >= BATCH_BYTES || Date.now() - lastHandOver >= FLUSH_INTERVAL_MS) handOver();
  });

  let failure: unknown = null;
  try {
    await incoming.done;
  } catch (err) {
    failure = err;
  }
  if (batchBytes > 0) handOver();
  await handedOver.catch(() => {});
  if (failure) throw failure;
  await part.sync();
  return received;
}
