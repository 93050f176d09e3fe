// The one body path's sink on a real file: order, back-pressure, durable offsets only after fsync,
// abort keeping the fully written prefix, write errors, and resuming on a kept prefix.

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createExclusive, openNoFollow, partIdOf } from '../../src/shared/files.js';
import { FileSink } from '../../src/transfer/sink.js';
import { TUNING } from '../../src/transfer/tuning.js';
import { TransferError } from '../../src/transfer/types.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-sink-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');
const chunks = (total: number, size = 64 * 1024) => {
  const all = crypto.randomBytes(total);
  const out: Buffer[] = [];
  for (let at = 0; at < total; at += size) out.push(all.subarray(at, Math.min(total, at + size)));
  return { all, out };
};

/** A new partial file `name` (in the test's directory unless absolute) and its sink. */
async function fresh(name = 'f.bgdl-part', start = 0, opts: { direct?: boolean } = {}) {
  const file = path.resolve(dir, name);
  const fh = await createExclusive(file);
  const durable: number[] = [];
  /** Each durable offset with the count written when it was reported. */
  const reports: Array<{ durable: number; written: number }> = [];
  const sink: FileSink = await FileSink.open({ path: file, fh, id: partIdOf(await fh.stat()), size: 0 }, start, {
    onDurable: (n) => {
      durable.push(n);
      reports.push({ durable: n, written: sink.written });
    },
  }, opts);
  return { file, sink, durable, reports };
}

/** Feed `out` to the sink as a connection does: stop when it says full, go on at its drain. */
function feed(sink: FileSink, out: Buffer[], fail: (err: unknown) => void = () => {}): { refusals: () => number } {
  let i = 0;
  let refusals = 0;
  const pump = () => {
    while (i < out.length) if (!sink.write(out[i++]!)) return void refusals++;
  };
  sink.bind({ drain: pump, fail });
  pump();
  return { refusals: () => refusals };
}

/** A partial file holding `head` and then bytes a writer that died left, opened to resume after `head`. */
async function resumedAfter(name: string, head: Buffer, opts: { direct?: boolean } = {}) {
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from('left by a writer that died')]));
  const fh = await openNoFollow(file);
  const st = await fh.stat();
  const sink = await FileSink.open({ path: file, fh, id: partIdOf(st), size: st.size }, head.length, { onDurable: () => {} }, opts);
  return { file, sink };
}

/** Every byte of `whole` in the file and in the digest. */
async function endsAs(file: string, sink: FileSink, whole: Buffer) {
  await sink.end();
  expect(fs.readFileSync(file).equals(whole)).toBe(true);
  expect(sink.digest()).toBe(sha(whole));
  await sink.close();
}

describe('FileSink', () => {
  it('files ending together are each fsync\'d (their fsyncs issued together): every end() resolves with its bytes durable', async () => {
    const sinks = await Promise.all(Array.from({ length: 6 }, (_, i) => fresh(`g${i}.bgdl-part`)));
    const bodies = sinks.map(() => crypto.randomBytes(20_000));
    sinks.forEach(({ sink }, i) => {
      sink.bind({ drain: () => {}, fail: (err) => { throw err; } });
      sink.write(bodies[i]!);
    });
    // A lone end first (fsync'd at once), then the rest together (a stream: they wait for one another).
    await sinks[0]!.sink.end();
    await Promise.all(sinks.slice(1).map(({ sink }) => sink.end()));
    sinks.forEach(({ file, sink, durable }, i) => {
      expect(sink.durable).toBe(bodies[i]!.length);
      expect(durable.at(-1)).toBe(bodies[i]!.length);
      expect(fs.readFileSync(file).equals(bodies[i]!)).toBe(true);
    });
    await Promise.all(sinks.map(({ sink }) => sink.close()));
  });

  it('writes from the event loop while the disk is quick: every full batch is written before write() returns', async () => {
    const { file, sink } = await fresh();
    sink.bind({ drain: () => {}, fail: (err) => { throw err; } });
    const { all, out } = chunks(TUNING.highWaterBytes * 3);
    const accepted = out.map((c) => sink.write(c));
    expect(accepted.every(Boolean)).toBe(true);
    expect(sink.written).toBe(all.length - (all.length % TUNING.writeBatchBytes));
    await sink.end();
    expect(fs.readFileSync(file).equals(all)).toBe(true);
    expect(sink.digest()).toBe(sha(all));
    await sink.close();
  });

  it('through the thread pool (after a slow write), asks the sender to pause past its high-water mark, and to go on once the writes catch up', async () => {
    const { file, sink } = await fresh();
    sink.writeThroughThreadPool();
    let drains = 0;
    sink.bind({ drain: () => drains++, fail: (err) => { throw err; } });
    const { all, out } = chunks(TUNING.highWaterBytes * 3);
    // Everything taken in one turn of the event loop: no write can have finished, so the sink fills.
    const accepted = out.map((c) => sink.write(c));
    const firstRefusal = accepted.indexOf(false);
    expect(firstRefusal).toBeGreaterThan(0);
    expect(firstRefusal * 64 * 1024).toBeGreaterThanOrEqual(TUNING.highWaterBytes - 64 * 1024);
    await sink.end();
    expect(drains).toBeGreaterThan(0);
    expect(sink.written).toBe(all.length);
    expect(fs.readFileSync(file).equals(all)).toBe(true);
    expect(sink.digest()).toBe(sha(all));
    await sink.close();
  });

  it('reports durable offsets as background fsyncs finish while it writes, never past what was written, and all of it at end', async () => {
    const { sink, durable, reports } = await fresh();
    const { all, out } = chunks(TUNING.syncEveryBytes + 3 * 1024 * 1024 + 5);
    let i = 0;
    const pump = () => {
      while (i < out.length) if (!sink.write(out[i++]!)) return;
    };
    sink.bind({ drain: pump, fail: () => {} });
    pump();
    // Past syncEveryBytes a background fdatasync starts; its offset is reported once it finishes.
    const deadline = Date.now() + 20_000;
    while (i < out.length || reports.length === 0) {
      if (Date.now() > deadline) throw new Error('no durable offset reported while writing');
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(reports[0]!.durable).toBeGreaterThanOrEqual(TUNING.syncEveryBytes);
    await sink.end();
    for (const r of reports) expect(r.durable).toBeLessThanOrEqual(r.written);
    expect(durable).toEqual([...durable].sort((a, b) => a - b));
    expect(sink.durable).toBe(all.length);
    expect(durable.at(-1)).toBe(all.length);
    await sink.close();
  });

  it('abort keeps exactly the prefix written, fsync\'d, and reports it durable', async () => {
    const { file, sink, durable } = await fresh();
    sink.bind({ drain: () => {}, fail: () => {} });
    const { all, out } = chunks(1024 * 1024 + 123, 1000);
    for (const c of out) sink.write(c);
    await sink.abort();
    expect(sink.durable).toBe(sink.written);
    expect(durable.at(-1)).toBe(sink.written);
    const kept = fs.readFileSync(file);
    expect(kept.length).toBe(sink.written);
    expect(kept.equals(all.subarray(0, kept.length))).toBe(true);
    // Taken after the abort: ignored, the file is closed.
    expect(sink.write(Buffer.from('late'))).toBe(true);
    expect(fs.statSync(file).size).toBe(kept.length);
  });

  it('a write error stops the sink, tells the sender, and end() throws it', async () => {
    const file = path.join(dir, 'ro.bgdl-part');
    fs.writeFileSync(file, '');
    const fh = await openNoFollow(file, fs.constants.O_RDONLY); // writes fail with EBADF
    const sink = await FileSink.open({ path: file, fh, id: partIdOf(await fh.stat()), size: 0 }, 0, { onDurable: () => {} });
    const failures: unknown[] = [];
    sink.bind({ drain: () => {}, fail: (err) => failures.push(err) });
    sink.write(Buffer.alloc(TUNING.writeBatchBytes));
    await sink.settle();
    expect(failures).toHaveLength(1);
    expect((sink.failure as NodeJS.ErrnoException).code).toBe('EBADF');
    await expect(sink.end()).rejects.toMatchObject({ code: 'EBADF' });
    expect(sink.written).toBe(0);
    await sink.close();
  });

  it('resumes on a kept prefix: hashes it, cuts anything past it, and appends', async () => {
    const head = crypto.randomBytes(300_000);
    const { file, sink } = await resumedAfter('r.bgdl-part', head);
    expect(fs.statSync(file).size).toBe(head.length);
    expect(sink.durable).toBe(head.length);
    sink.bind({ drain: () => {}, fail: () => {} });
    const tail = crypto.randomBytes(70_000);
    sink.write(tail);
    await endsAs(file, sink, Buffer.concat([head, tail]));
  });

  it('a partial file shorter than the offset to resume from is E_RESUME', async () => {
    const file = path.join(dir, 's.bgdl-part');
    fs.writeFileSync(file, 'short');
    const fh = await openNoFollow(file);
    const err = await FileSink.open({ path: file, fh, id: partIdOf(await fh.stat()), size: 5 }, 1000, { onDurable: () => {} }).catch((e) => e);
    await fh.close();
    expect(err).toBeInstanceOf(TransferError);
    expect(err.code).toBe('E_RESUME');
  });

  it('finish renames into place only while the name still holds this file', async () => {
    const { file, sink } = await fresh();
    sink.bind({ drain: () => {}, fail: () => {} });
    sink.write(Buffer.from('complete'));
    // A takeover: the name now holds another file.
    fs.renameSync(file, path.join(dir, 'moved'));
    fs.writeFileSync(file, 'someone else');
    const fenced = new Error('fenced');
    await expect(sink.finish(path.join(dir, 'f'), true, () => fenced)).rejects.toBe(fenced);
    expect(fs.existsSync(path.join(dir, 'f'))).toBe(false);
    expect(fs.readFileSync(file, 'utf8')).toBe('someone else');
  });

  it('finish without replacing takes the next free name and leaves the existing file alone', async () => {
    const { sink } = await fresh('out.txt.bgdl-part');
    sink.bind({ drain: () => {}, fail: () => {} });
    sink.write(Buffer.from('new'));
    fs.writeFileSync(path.join(dir, 'out.txt'), 'old');
    const used = await sink.finish(path.join(dir, 'out.txt'), false, () => new Error('fenced'));
    expect(used).toBe(path.join(dir, 'out.1.txt'));
    expect(fs.readFileSync(path.join(dir, 'out.txt'), 'utf8')).toBe('old');
    expect(fs.readFileSync(used, 'utf8')).toBe('new');
    expect(fs.existsSync(path.join(dir, 'out.txt.bgdl-part'))).toBe(false);
  });
});

describe('FileSink with direct I/O (a large file)', () => {
  const MiB = 1024 * 1024;

  it('writes every byte past the page cache, in order, with its unaligned end, and hashes it', async () => {
    const { file, sink, durable } = await fresh('d.bgdl-part', 0, { direct: true });
    expect(sink.isDirect).toBe(true);
    const { all, out } = chunks(TUNING.directBuffers * TUNING.directBufferBytes * 3 + 12_345, MiB);
    const fed = feed(sink, out);
    await sink.end();
    // Chunks of a whole read came faster than the disk took them: the connection was paused.
    expect(fed.refusals()).toBeGreaterThan(0);
    expect(sink.written).toBe(all.length);
    expect(sink.durable).toBe(all.length);
    expect(durable.at(-1)).toBe(all.length);
    expect(fs.readFileSync(file).equals(all)).toBe(true);
    expect(sink.digest()).toBe(sha(all));
    await sink.close();
  });

  it('names where the next read may land (placeFor): a chunk read there is taken without a copy, mixed with copied ones', async () => {
    const { file, sink } = await fresh('dp.bgdl-part', 0, { direct: true });
    let drained: (() => void) | null = null;
    sink.bind({ drain: () => drained?.(), fail: (err) => { throw err; } });
    const all = crypto.randomBytes(5 * MiB + 4321);
    let at = 0;
    let placed = 0;
    let full = false;
    for (let i = 0; at < all.length; i++) {
      if (full) await new Promise<void>((resolve) => (drained = resolve));
      const want = Math.min(256 * 1024, all.length - at);
      const place = sink.placeFor!(want);
      if (place && i % 3 !== 2) {
        // As a socket read into the place would: the bytes land there, then the chunk is handed over.
        const n = all.copy(place, 0, at, at + Math.min(want, place.length));
        full = !sink.write(place.subarray(0, n));
        placed++;
        at += n;
      } else {
        full = !sink.write(all.subarray(at, at + want));
        at += want;
      }
    }
    await sink.end();
    expect(placed).toBeGreaterThanOrEqual(10);
    expect(fs.readFileSync(file).equals(all)).toBe(true);
    expect(sink.digest()).toBe(sha(all));
    await sink.close();
  });

  it('names no place when the file is not written with direct I/O', async () => {
    const { sink } = await fresh('dn.bgdl-part');
    expect(sink.placeFor!(MiB)).toBeNull();
    await sink.close();
  });

  it('resumes on a prefix that ends inside a block: the block is written again whole, nothing before it changes', async () => {
    const head = crypto.randomBytes(3 * TUNING.directAlign + 1234);
    const { file, sink } = await resumedAfter('dr.bgdl-part', head, { direct: true });
    expect(sink.isDirect).toBe(true);
    const { all: tail, out } = chunks(2 * MiB + 777, 200_000);
    feed(sink, out);
    await endsAs(file, sink, Buffer.concat([head, tail]));
  });

  it('abort keeps exactly the written prefix, however the writes in flight finished', async () => {
    const { file, sink } = await fresh('da.bgdl-part', 0, { direct: true });
    const { all, out } = chunks(5 * MiB + 100, 256 * 1024);
    // Stopped in the middle, with writes in flight.
    feed(sink, out.slice(0, 13));
    await sink.abort();
    const kept = fs.readFileSync(file);
    expect(kept.length).toBe(sink.written);
    expect(sink.durable).toBe(sink.written);
    expect(kept.length).toBe(13 * 256 * 1024);
    expect(kept.equals(all.subarray(0, kept.length))).toBe(true);
  });

  it('lends its buffers to one file at a time: a second large file goes through the page cache, a third gets them back', async () => {
    const first = await fresh('d1.bgdl-part', 0, { direct: true });
    const second = await fresh('d2.bgdl-part', 0, { direct: true });
    expect(first.sink.isDirect).toBe(true);
    expect(second.sink.isDirect).toBe(false);
    const a = crypto.randomBytes(3 * MiB + 5);
    const b = crypto.randomBytes(2 * MiB + 9);
    feed(first.sink, [a]);
    feed(second.sink, [b]);
    await Promise.all([first.sink.end(), second.sink.end()]);
    await Promise.all([first.sink.close(), second.sink.close()]);
    expect(fs.readFileSync(first.file).equals(a)).toBe(true);
    expect(fs.readFileSync(second.file).equals(b)).toBe(true);
    const third = await fresh('d3.bgdl-part', 0, { direct: true });
    expect(third.sink.isDirect).toBe(true);
    await third.sink.close();
  });

  /** A small filesystem of its own (root only, as the other disk-full tests): `type` tmpfs or ramfs. */
  function mounted(type: string, ctx: { skip(): void }): string {
    if (process.getuid?.() !== 0) {
      console.warn(`NOTICE: skipping a direct-I/O sink test: mounting a ${type} needs root`);
      ctx.skip();
    }
    const mnt = fs.mkdtempSync(path.join(os.tmpdir(), `bgdl-${type}-`));
    execFileSync('mount', ['-t', type, '-o', 'size=2m', type, mnt]);
    return mnt;
  }
  const unmount = (mnt: string) => {
    execFileSync('umount', ['-l', mnt]);
    fs.rmSync(mnt, { recursive: true, force: true });
  };

  it('a full disk stops it (the writes in flight end first): end() throws ENOSPC, abort keeps the written prefix', async (ctx) => {
    const mnt = mounted('tmpfs', ctx);
    try {
      const { file, sink } = await fresh(path.join(mnt, 'full.bgdl-part'), 0, { direct: true });
      expect(sink.isDirect).toBe(true);
      const failures: unknown[] = [];
      const { all, out } = chunks(4 * MiB, MiB);
      feed(sink, out, (err) => failures.push(err));
      await expect(sink.end()).rejects.toMatchObject({ code: 'ENOSPC' });
      expect(failures).toHaveLength(1);
      await sink.abort();
      const kept = fs.readFileSync(file);
      expect(kept.length).toBe(sink.written);
      expect(kept.length).toBeLessThan(all.length);
      expect(kept.equals(all.subarray(0, kept.length))).toBe(true);
    } finally {
      unmount(mnt);
    }
  });

  it('on a filesystem that refuses direct I/O (ramfs), writes through the page cache', async (ctx) => {
    const mnt = mounted('ramfs', ctx);
    try {
      const { file, sink } = await fresh(path.join(mnt, 'r.bgdl-part'), 0, { direct: true });
      expect(sink.isDirect).toBe(false);
      const { all, out } = chunks(MiB + 3, 100_000);
      feed(sink, out);
      await sink.end();
      expect(fs.readFileSync(file).equals(all)).toBe(true);
      await sink.close();
      // The buffers were not kept by the file that could not use them.
      const next = await fresh('n.bgdl-part', 0, { direct: true });
      expect(next.sink.isDirect).toBe(true);
      await next.sink.close();
    } finally {
      unmount(mnt);
    }
  });
});

