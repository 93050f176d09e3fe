// Receiving a response body into the part file. Chunks are taken from the moment the response
// arrives (flowing mode), so if the connection fails while the output is still being chosen, every
// byte received is still ours to write and resume from; a paused or buffered stream would drop them.

import type { Readable } from 'node:stream';
import type { BodySink } from './sink.js';
import { TUNING } from './tuning.js';
import type { Throttle } from './types.js';

type HoldReason = 'early' | 'disk' | 'rate';

/**
 * A response body taken from the moment it arrives. It is held (paused) for any of three reasons — the
 * early buffer is full, the part file's buffers are full, the bandwidth limit says wait — and goes on
 * only when none holds. The limit applies from the first byte, early ones included.
 */
export class Incoming {
  private early: Buffer[] = [];
  private earlyBytes = 0;
  private sink: ((chunk: Buffer) => void) | null = null;
  private readonly holds = new Set<HoldReason>();
  private rateTimer: NodeJS.Timeout | null = null;
  /** Settles when the body ends (or fails). */
  readonly done: Promise<void>;

  constructor(
    readonly body: Readable,
    private readonly throttle?: Throttle,
  ) {
    this.done = new Promise<void>((resolve, reject) => {
      body.once('end', resolve);
      body.once('error', reject);
    });
    this.done.catch(() => {}); // observed later by writeBody; never an unhandled rejection
    body.once('close', () => this.rateTimer && clearTimeout(this.rateTimer));
    body.on('data', (chunk: Buffer) => {
      this.limit(chunk.length);
      if (this.sink) return this.sink(chunk);
      this.early.push(chunk);
      this.earlyBytes += chunk.length;
      if (this.earlyBytes >= TUNING.earlyBytes) this.hold('early');
    });
  }

  hold(reason: HoldReason): void {
    this.holds.add(reason);
    if (!this.body.isPaused()) this.body.pause();
  }

  release(reason: HoldReason): void {
    this.holds.delete(reason);
    if (this.holds.size === 0 && this.body.isPaused() && !this.body.destroyed) this.body.resume();
  }

  /** Charge `n` bytes to the bandwidth limit; hold the body while it says wait. */
  private limit(n: number): void {
    const wait = this.throttle ? this.throttle(n) : 0;
    if (wait <= 0) return;
    if (this.rateTimer) clearTimeout(this.rateTimer);
    this.hold('rate');
    this.rateTimer = setTimeout(() => {
      this.rateTimer = null;
      this.release('rate');
    }, wait);
  }

  /** Deliver what has arrived so far, then every further chunk, to `sink`. */
  start(sink: (chunk: Buffer) => void): void {
    this.sink = sink;
    const early = this.early;
    this.early = [];
    for (const chunk of early) sink(chunk);
    this.release('early');
  }

  /** Not going to read it: close the connection. */
  discard(): void {
    this.body.destroy();
  }
}

/**
 * Stream the body into the sink (pausing the body while the sink is full). On a failure the bytes
 * already received are written before the error is thrown.
 * `admit` sees each chunk's size first: an error from it stops the body, that chunk unwritten.
 * Returns the body bytes received, all written but not yet fsync'd: the caller verifies them first
 * and then makes the file durable once, together with its final mode (FileSink.finish).
 * `onReceived` sees the count as bytes arrive, before they reach the disk: progress shown to people
 * moves with the network even when the writes are batched or on a thread.
 */
export async function writeBody(
  incoming: Incoming,
  sink: BodySink,
  onReceived: (received: number) => void = () => {},
  admit?: (bytes: number) => Error | null,
): Promise<number> {
  const { body } = incoming;
  let received = 0;
  let refused: Error | null = null;
  sink.bind({
    drain: () => incoming.release('disk'),
    fail: (err) => body.destroy(err as Error),
  });
  incoming.start((chunk) => {
    if (refused) return;
    refused = admit?.(chunk.length) ?? null;
    if (refused) return void body.destroy(refused);
    received += chunk.length;
    onReceived(received);
    if (!sink.write(chunk)) incoming.hold('disk');
  });

  let failure: unknown = null;
  try {
    await incoming.done;
  } catch (err) {
    failure = err;
  }
  await sink.settle();
  if (refused) throw refused;
  if (failure) throw failure;
  if (sink.failure) throw sink.failure;
  return received;
}
