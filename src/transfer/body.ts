// Receiving a response body into the part file. Chunks are taken from the moment the response
// arrives, so if the connection fails while the output is still being chosen, every byte received is
// still ours to write and resume from; a paused or buffered body would drop them. Chunks are only valid
// during the call that hands them over (response.ts): what is kept is copied.

import type { ResponseBody } from './response.js';
import type { BodySink } from './sink.js';
import { MIN_BURST_BYTES } from './throttle.js';
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
  /** Bytes arrived while the bandwidth limit holds the body, in order (copies). */
  private backlog: Buffer[] = [];
  private onDrained: (() => void) | null = null;
  /** Settles when the body ends (or fails). */
  readonly done: Promise<void>;

  constructor(
    readonly body: ResponseBody,
    private readonly throttle?: Throttle,
  ) {
    // The body has ended once its last bytes are handed over, those the limit still holds included.
    this.done = body.done.then(() => (this.backlog.length === 0 ? undefined : new Promise<void>((resolve) => (this.onDrained = resolve))));
    this.done.catch(() => this.rateTimer && clearTimeout(this.rateTimer));
    body.take((chunk, owned) => (this.throttle ? this.metered(chunk, owned) : this.deliver(chunk, owned)));
  }

  private deliver(chunk: Buffer, owned: boolean): void {
    if (this.sink) return this.sink(chunk);
    this.early.push(owned ? chunk : Buffer.from(chunk));
    this.earlyBytes += chunk.length;
    if (this.earlyBytes >= TUNING.earlyBytes) this.hold('early');
  }

  /**
   * Under a bandwidth limit a chunk goes on in pieces of the smallest burst, each charged as it goes:
   * one read may bring up to a MiB, and taking it whole would move the file (and its progress) in
   * jumps of seconds. What the limit holds back waits here, copied, until the wait is over.
   */
  private metered(chunk: Buffer, owned: boolean): void {
    if (this.backlog.length > 0) return void this.backlog.push(owned ? chunk : Buffer.from(chunk));
    // No rate now: nothing to charge, the chunk goes whole (a MiB read in 16 KiB pieces was 64 trips
    // through the body path, ~15% of a 1 GiB download's main thread).
    if (!this.throttle!.limited()) return this.deliver(chunk, owned);
    for (let off = 0; off < chunk.length; ) {
      const piece = chunk.subarray(off, off + MIN_BURST_BYTES);
      off += piece.length;
      this.deliver(piece, owned);
      const wait = this.throttle!(piece.length);
      if (wait <= 0) continue;
      if (off < chunk.length) this.backlog.push(owned ? chunk.subarray(off) : Buffer.from(chunk.subarray(off)));
      return this.waitFor(wait);
    }
  }

  /** Hold the body for `ms`, then hand over what the limit held back, then read on. */
  private waitFor(ms: number): void {
    if (this.rateTimer) clearTimeout(this.rateTimer);
    this.hold('rate');
    this.rateTimer = setTimeout(() => {
      this.rateTimer = null;
      this.holds.delete('rate');
      const held = this.backlog;
      this.backlog = [];
      for (let i = 0; i < held.length; i++) {
        this.metered(held[i]!, true);
        if (this.rateTimer) {
          // Held again: what is left of the backlog stays in order behind the rest of this chunk.
          this.backlog.push(...held.slice(i + 1));
          return;
        }
      }
      this.onDrained?.();
      this.release('rate');
    }, ms);
  }

  hold(reason: HoldReason): void {
    this.holds.add(reason);
    this.body.pause();
  }

  release(reason: HoldReason): void {
    this.holds.delete(reason);
    if (this.holds.size === 0 && !this.body.destroyed) this.body.resume();
  }

  /** Deliver what has arrived so far, then every further chunk, to `sink`. */
  start(sink: (chunk: Buffer) => void): void {
    this.sink = sink;
    const early = this.early;
    this.early = [];
    for (const chunk of early) sink(chunk);
    this.release('early');
  }

  /**
   * Let the body read straight into the sink's buffers (`place`, see ResponseBody.readInto) while
   * nothing is held here: a chunk held (early, the disk, the bandwidth limit) is copied as before.
   */
  placeReads(place: (max: number) => Buffer | null): void {
    this.body.readInto?.((max) => (this.sink && this.holds.size === 0 && this.backlog.length === 0 && this.early.length === 0 ? place(max) : null));
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
  if (sink.placeFor) incoming.placeReads((max) => sink.placeFor!(max));

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
