// What a request returns, whichever client sent it: a status, the headers and a body. Direct http://
// requests come from our own HTTP/1.1 reader (h1.ts), whose body chunks are views of one reused read
// buffer; everything else (TLS with HTTP/2, proxies, uploads) from undici, whose body is a stream of
// fresh buffers, seen through `readableBody`. The body path (body.ts, sink.ts) is written once, for
// the stricter of the two: a chunk is only valid during the call that hands it over.

import type { Readable } from 'node:stream';
import { countTowardsCollection } from './runtime.js';

export type Headers = Record<string, string | string[] | undefined>;

export interface ResponseBody {
  /**
   * Hand every chunk to `take`, in order, from now on (bytes that came before are handed over first).
   * A chunk is only valid during the call unless `owned` says it is the taker's to keep: `take`
   * copies what it keeps of the others. One taker per body.
   */
  take(take: (chunk: Buffer, owned: boolean) => void): void;
  /** Settles when the body has ended (or fails, or is destroyed). */
  readonly done: Promise<void>;
  /** No chunk is handed over until `resume`. */
  pause(): void;
  resume(): void;
  /** Stop reading; the connection is closed. `done` rejects with `err` (or an abort error). */
  destroy(err?: Error): void;
  readonly destroyed: boolean;
  /** Read and drop the body up to `limit` bytes (the connection stays usable); past it, close. */
  dump(opts?: { limit?: number; signal?: AbortSignal }): Promise<void>;
  /** The chunks as buffers of their own, for consumers that keep them across an `await`. */
  [Symbol.asyncIterator](): AsyncIterator<Buffer>;
  /**
   * Optional (our HTTP/1.1 reader over plain TCP): once a read has been handled, `place(max)` may
   * name where the next read's bytes of the body should land (at most `max` of them: the body's
   * remaining length), a view of the taker's own buffer, or null for the connection's buffer. A
   * chunk read there is handed to `take` as usual; the taker recognises it and need not copy it.
   * The taker must not write into a place it named before that read lands (nothing it does between
   * reads touches the free part of its buffer).
   */
  readInto?(place: (max: number) => Buffer | null): void;
}

export interface Response {
  statusCode: number;
  /** Lower-case names; a repeated header is an array. */
  headers: Headers;
  body: ResponseBody;
}

type UndiciBody = Readable & { dump(opts?: { limit?: number; signal?: AbortSignal }): Promise<void> };

/**
 * undici's body stream as a ResponseBody. Its chunks are fresh buffers: each socket read is one, and
 * runtime.ts collects them early (countTowardsCollection) so they do not pile up in the process's memory.
 */
export function readableBody(stream: UndiciBody): ResponseBody {
  const done = new Promise<void>((resolve, reject) => {
    stream.once('end', resolve);
    stream.once('error', reject);
    stream.once('close', () => {
      if (!stream.readableEnded) reject(Object.assign(new Error('the response body was closed'), { code: 'UND_ERR_ABORTED' }));
    });
  });
  done.catch(() => {}); // observed by whoever takes the body; never an unhandled rejection
  return {
    take(take) {
      stream.on('data', (chunk: Buffer) => {
        countTowardsCollection(chunk.length);
        take(chunk, true);
      });
    },
    done,
    pause: () => void stream.pause(),
    resume: () => void (stream.destroyed || stream.resume()),
    destroy: (err) => void stream.destroy(err),
    get destroyed() {
      return stream.destroyed;
    },
    dump: (opts) => stream.dump(opts),
    [Symbol.asyncIterator]: () => stream[Symbol.asyncIterator](),
  };
}
