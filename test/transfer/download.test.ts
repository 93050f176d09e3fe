import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { download } from '../../src/transfer/download.js';
import { closeDispatchers } from '../../src/transfer/dispatch.js';
import { nameFromResponse, pickFreePath } from '../../src/transfer/naming.js';
import { TransferError, type DownloadCallbacks, type DownloadRequest, type ResponseMeta } from '../../src/transfer/types.js';
import { bodyFor, sha256, startServer, type TestServer } from '../helpers/server.js';

let dir: string;
let servers: TestServer[] = [];

beforeEach(() => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-dl-')));
});
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  fs.rmSync(dir, { recursive: true, force: true });
});
afterAll(() => closeDispatchers());

async function server(): Promise<TestServer> {
  const s = await startServer();
  servers.push(s);
  return s;
}

function req(url: string, over: Partial<DownloadRequest> = {}): DownloadRequest {
  return {
    url, method: 'GET', headers: [], allowDowngrade: false, output: null, outputFixed: false, resume: null,
    sha256Expected: null, expectReceive: null, stallTimeoutMs: 5000, insecure: false, caFile: null, ...over,
  };
}

/** Callbacks like the worker's: a derived name in `dir` unless the request has an output. */
function callbacks(over: Partial<DownloadCallbacks> = {}) {
  const abort = new AbortController();
  const seen = { metas: [] as ResponseMeta[], progress: [] as number[], durable: [] as number[] };
  const cb: DownloadCallbacks = {
    signal: abort.signal,
    chooseOutput: async (meta) => {
      seen.metas.push(meta);
      return pickFreePath(dir, nameFromResponse(meta.dispositionName, meta.finalUrl), new Set());
    },
    onProgress: (n) => seen.progress.push(n),
    onDurable: (n) => seen.durable.push(n),
    ...over,
  };
  return { cb, abort, seen };
}

/** Callbacks for a fixed output path (`-o`, or a resume). */
function fixed(output: string, over: Partial<DownloadCallbacks> = {}) {
  const c = callbacks(over);
  const choose = c.cb.chooseOutput;
  c.cb.chooseOutput = async (meta) => {
    c.seen.metas.push(meta);
    return over.chooseOutput ? choose(meta) : output;
  };
  return c;
}

async function failure(p: Promise<unknown>): Promise<TransferError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(TransferError);
    return err as TransferError;
  }
  throw new Error('expected the transfer to fail');
}

const part = (output: string) => `${output}.bgdl-part`;
const umask = process.umask();

describe('download: plain transfers', () => {
  it('downloads to a derived name with the right bytes, hash, mode and headers', async () => {
    const s = await server();
    s.route('/files/data.bin', { body: { size: 300_000 } });
    const { cb, seen } = callbacks();
    const r = await download(req(s.url('/files/data.bin'), { headers: [['Accept-Encoding', 'gzip, br'], ['X-Custom', 'v']] }), cb);
    const body = bodyFor(300_000);
    expect(r).toEqual({ output: path.join(dir, 'data.bin'), finalUrl: s.url('/files/data.bin'), httpStatus: 200, bytes: body.length, sha256: sha256(body) });
    expect(fs.readFileSync(r.output!).equals(body)).toBe(true);
    expect(fs.statSync(r.output!).mode & 0o777).toBe(0o644 & ~umask);
    expect(fs.existsSync(part(r.output!))).toBe(false);
    expect(seen.metas).toHaveLength(1);
    expect(seen.metas[0]).toMatchObject({ status: 200, totalBytes: body.length, startOffset: 0 });
    expect(seen.durable.at(-1)).toBe(body.length);
    expect(seen.progress.at(-1)).toBe(body.length);
    const sent = s.requests[0]!.headers;
    expect(sent['accept-encoding']).toBe('identity');
    expect(sent['user-agent']).toMatch(/^bgdl\//);
    expect(sent['x-custom']).toBe('v');
    expect(sent.range).toBeUndefined();
  });

  it('writes a large body completely (batched writes)', async () => {
    const s = await server();
    const size = 12 * 1024 * 1024 + 13;
    s.route('/big', { body: { size, seed: 'big' } });
    const { cb, seen } = callbacks();
    const r = await download(req(s.url('/big')), cb);
    expect(r.sha256).toBe(sha256(bodyFor(size, 'big')));
    expect(fs.statSync(r.output!).size).toBe(size);
    // Durable offsets only grow and never pass what was written.
    expect([...seen.durable].sort((a, b) => a - b)).toEqual(seen.durable);
    expect(Math.max(...seen.durable)).toBe(size);
  });

  it('uses a sanitised Content-Disposition name and never writes outside the directory', async () => {
    const s = await server();
    s.route('/dl', { body: 'hello', contentDisposition: 'attachment; filename="../../evil.sh"' });
    const { cb } = callbacks();
    const r = await download(req(s.url('/dl')), cb);
    expect(r.output).toBe(path.join(dir, 'evil.sh'));
    expect(fs.readdirSync(dir)).toEqual(['evil.sh']);
    expect(fs.existsSync(path.join(dir, '..', '..', 'evil.sh'))).toBe(false);
  });

  it('stores a gzip body as sent, at its wire size', async () => {
    const s = await server();
    s.route('/page.html.gz', { body: 'hello '.repeat(10_000), gzip: true });
    const { cb } = callbacks();
    const r = await download(req(s.url('/page.html.gz')), cb);
    const wire = s.wireBody('/page.html.gz');
    expect(wire.length).toBeLessThan(60_000);
    expect(r.bytes).toBe(wire.length);
    expect(fs.readFileSync(r.output!).equals(wire)).toBe(true);
    expect(s.requests[0]!.headers['accept-encoding']).toBe('identity');
  });

  it('a FIFO that takes a derived name after it was chosen is left alone: the file lands at the next free name', async () => {
    const s = await server();
    s.route('/p.bin', { body: 'piped' });
    const fifo = path.join(dir, 'p.bin');
    const { cb } = callbacks({
      chooseOutput: async () => {
        execFileSync('mkfifo', [fifo]);
        return fifo;
      },
    });
    const r = await download(req(s.url('/p.bin')), cb);
    expect(r.output).toBe(path.join(dir, 'p.1.bin'));
    expect(fs.lstatSync(fifo).isFIFO()).toBe(true);
    expect(fs.readFileSync(r.output!, 'utf8')).toBe('piped');
  });

  it('never replaces an existing file under a derived name (link, then the next free name)', async () => {
    const s = await server();
    s.route('/f.bin', { body: 'new content' });
    const mine = path.join(dir, 'f.bin');
    const { cb } = callbacks({
      chooseOutput: async () => {
        // Another program takes the name between choosing it and finishing.
        fs.writeFileSync(mine, 'mine');
        return mine;
      },
    });
    const r = await download(req(s.url('/f.bin')), cb);
    expect(r.output).toBe(path.join(dir, 'f.1.bin'));
    expect(fs.readFileSync(mine, 'utf8')).toBe('mine');
    expect(fs.readFileSync(r.output!, 'utf8')).toBe('new content');
    expect(fs.readdirSync(dir).sort()).toEqual(['f.1.bin', 'f.bin']);
  });

  it('-o replaces an existing file', async () => {
    const s = await server();
    s.route('/f', { body: 'fresh' });
    const out = path.join(dir, 'out.txt');
    fs.writeFileSync(out, 'old old old');
    const r = await download(req(s.url('/f'), { output: out, outputFixed: true }), fixed(out).cb);
    expect(r.output).toBe(out);
    expect(fs.readFileSync(out, 'utf8')).toBe('fresh');
  });

  it('verifies a matching sha256', async () => {
    const s = await server();
    s.route('/ok', { body: 'checked' });
    const r = await download(req(s.url('/ok'), { sha256Expected: sha256('checked').toUpperCase() }), callbacks().cb);
    expect(r.sha256).toBe(sha256('checked'));
  });

  it('a checksum mismatch leaves nothing at the destination', async () => {
    const s = await server();
    s.route('/bad', { body: { size: 50_000 } });
    const e = await failure(download(req(s.url('/bad'), { sha256Expected: 'a'.repeat(64) }), callbacks().cb));
    expect(e.code).toBe('E_CHECKSUM');
    expect(e.transient).toBe(false);
    expect(e.message).toBe(`sha256 mismatch: expected ${'a'.repeat(64)}, got ${sha256(bodyFor(50_000))}`);
    expect(e.extra.partial).toBeUndefined();
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('a checksum mismatch with -o leaves the existing destination untouched', async () => {
    const s = await server();
    s.route('/bad', { body: 'tampered' });
    const out = path.join(dir, 'keep.txt');
    fs.writeFileSync(out, 'previous version');
    const e = await failure(download(req(s.url('/bad'), { output: out, outputFixed: true, sha256Expected: 'b'.repeat(64) }), fixed(out).cb));
    expect(e.code).toBe('E_CHECKSUM');
    expect(fs.readFileSync(out, 'utf8')).toBe('previous version');
    expect(fs.existsSync(part(out))).toBe(false);
  });
});

describe('download: statuses and failures', () => {
  it('404 is permanent, names the status, and writes nothing', async () => {
    const s = await server();
    const { cb, seen } = callbacks();
    const e = await failure(download(req(s.url('/missing')), cb));
    expect(e).toMatchObject({ code: 'E_HTTP_STATUS', transient: false, message: `HTTP 404 Not Found from ${s.url('/missing')}` });
    expect(e.extra).toMatchObject({ httpStatus: 404, finalUrl: s.url('/missing') });
    expect(seen.metas).toHaveLength(0);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('503 with Retry-After is transient and carries the delay', async () => {
    const s = await server();
    s.route('/busy', { body: 'x', status503: { times: 1, retryAfter: '7' } });
    const e = await failure(download(req(s.url('/busy')), callbacks().cb));
    expect(e).toMatchObject({ code: 'E_HTTP_STATUS', transient: true });
    expect(e.extra).toMatchObject({ httpStatus: 503, retryAfterMs: 7000 });
    const r = await download(req(s.url('/busy')), callbacks().cb);
    expect(fs.readFileSync(r.output!, 'utf8')).toBe('x');
  });

  it('a refused connection is a transient connection error', async () => {
    const s = await startServer();
    const url = s.url('/x');
    await s.close();
    const e = await failure(download(req(url), callbacks().cb));
    expect(e).toMatchObject({ code: 'E_CONNECTION', transient: true });
  });

  it('waits for disk space when the expected size does not fit', async () => {
    const s = await server();
    s.route('/huge', { body: 'small really', chunked: true });
    const e = await failure(download(req(s.url('/huge'), { expectReceive: 2 ** 52 }), callbacks().cb));
    expect(e).toMatchObject({ code: 'E_DISK_SPACE', transient: true });
    expect(e.extra.waitFor).toBe('disk-space');
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('an unwritable directory is a permanent E_DEST', async () => {
    const s = await server();
    s.route('/f', { body: 'x' });
    const ro = path.join(dir, 'ro');
    fs.mkdirSync(ro, 0o500);
    // root writes through mode bits, so as root make it a read-only mount instead.
    const asRoot = process.getuid?.() === 0;
    if (asRoot) execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', ro]);
    try {
      const out = path.join(ro, 'f');
      const e = await failure(download(req(s.url('/f'), { output: out, outputFixed: true }), fixed(out).cb));
      expect(e.code).toBe('E_DEST');
      expect(e.transient).toBe(false);
      expect(e.message).toBe(`cannot write ${part(out)}: ${asRoot ? 'read-only file system' : 'permission denied'}`);
    } finally {
      if (asRoot) execFileSync('umount', [ro]);
    }
  });

  it('a destination whose parent is not a directory is a permanent E_DEST', async () => {
    const s = await server();
    s.route('/f', { body: 'x' });
    fs.writeFileSync(path.join(dir, 'file'), '');
    const out = path.join(dir, 'file', 'out');
    const e = await failure(download(req(s.url('/f'), { output: out, outputFixed: true }), fixed(out).cb));
    expect(e).toMatchObject({ code: 'E_DEST', transient: false, message: `cannot write ${part(out)}: a parent is not a directory` });
  });

  it('a stalled body is E_STALL and keeps the partial file', async () => {
    const s = await server();
    s.route('/slow', { body: { size: 100_000 }, etag: '"s"', stallAfter: { bytes: 10_000, ms: 5_000, times: 1 } });
    const out = path.join(dir, 'slow.bin');
    const started = Date.now();
    const e = await failure(download(req(s.url('/slow'), { output: out, outputFixed: true, stallTimeoutMs: 300 }), fixed(out).cb));
    expect(Date.now() - started).toBeLessThan(4000);
    expect(e).toMatchObject({ code: 'E_STALL', transient: true });
    expect(e.extra.partial).toEqual({ output: out, offset: 10_000, etag: '"s"', lastModified: null });
    expect(fs.statSync(part(out)).size).toBe(10_000);
  });

  it('a body shorter than its Content-Length is E_SHORT_BODY with the partial offset', async () => {
    const s = await server();
    s.route('/short', { body: { size: 20_000 }, etag: '"e"', shortBody: { bytes: 5_000, times: 1 } });
    const out = path.join(dir, 'short.bin');
    const e = await failure(download(req(s.url('/short'), { output: out, outputFixed: true }), fixed(out).cb));
    expect(e).toMatchObject({ code: 'E_SHORT_BODY', transient: true });
    expect(e.extra.partial).toMatchObject({ output: out, offset: 5_000, etag: '"e"' });
    const r = await download(req(s.url('/short'), { output: out, outputFixed: true, resume: e.extra.partial! }), fixed(out).cb);
    expect(r.sha256).toBe(sha256(bodyFor(20_000)));
    expect(s.requestsTo('/short')[1]!.headers.range).toBe('bytes=5000-');
  });

  it('stopping via the signal keeps a 0600 part file and reports the durable offset', async () => {
    const s = await server();
    s.route('/throttled', { body: { size: 400_000 }, etag: '"t"', throttle: 200_000 });
    const out = path.join(dir, 't.bin');
    const { cb, abort, seen } = fixed(out);
    cb.onProgress = (n) => {
      seen.progress.push(n);
      if (n >= 30_000) abort.abort();
    };
    const e = await failure(download(req(s.url('/throttled'), { output: out, outputFixed: true }), cb));
    expect(e).toMatchObject({ code: 'E_ABORTED', message: 'stopped', transient: true });
    const offset = e.extra.partial!.offset;
    expect(offset).toBeGreaterThanOrEqual(30_000);
    expect(offset).toBeLessThan(400_000);
    expect(seen.durable.at(-1)).toBe(offset);
    const st = fs.statSync(part(out));
    expect(st.size).toBe(offset);
    expect(st.mode & 0o777).toBe(0o600);
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('download: resume', () => {
  it('a dropped connection leaves a partial; the next attempt resumes with Range and If-Range', async () => {
    const s = await server();
    const size = 2 * 1024 * 1024;
    s.route('/r.bin', { body: { size, seed: 'r' }, etag: '"abc"', dropAfter: { bytes: 700_000, times: 1 } });
    const out = path.join(dir, 'r.bin');
    const first = fixed(out);
    const e = await failure(download(req(s.url('/r.bin'), { output: out, outputFixed: true }), first.cb));
    expect(e.transient).toBe(true);
    const partial = e.extra.partial!;
    expect(partial).toMatchObject({ output: out, etag: '"abc"' });
    expect(partial.offset).toBeGreaterThan(0);
    expect(partial.offset).toBeLessThanOrEqual(700_000);
    expect(fs.statSync(part(out)).size).toBeGreaterThanOrEqual(partial.offset);

    const second = fixed(out);
    const r = await download(req(s.url('/r.bin'), { output: out, outputFixed: true, resume: partial }), second.cb);
    expect(r.httpStatus).toBe(206);
    expect(r.sha256).toBe(sha256(bodyFor(size, 'r')));
    expect(fs.readFileSync(out).equals(bodyFor(size, 'r'))).toBe(true);
    expect(second.seen.metas[0]).toMatchObject({ status: 206, startOffset: partial.offset, totalBytes: size });
    const resumed = s.requestsTo('/r.bin')[1]!.headers;
    expect(resumed.range).toBe(`bytes=${partial.offset}-`);
    expect(resumed['if-range']).toBe('"abc"');
  });

  it('uses Last-Modified for If-Range when there is no strong ETag', async () => {
    const s = await server();
    const lm = 'Wed, 01 Jan 2025 00:00:00 GMT';
    s.route('/w', { body: { size: 10_000 }, etag: 'W/"weak"', lastModified: lm });
    const out = path.join(dir, 'w');
    fs.writeFileSync(part(out), bodyFor(10_000).subarray(0, 4000));
    const r = await download(req(s.url('/w'), { output: out, outputFixed: true, resume: { offset: 4000, etag: 'W/"weak"', lastModified: lm } }), fixed(out).cb);
    expect(r.httpStatus).toBe(206);
    expect(r.sha256).toBe(sha256(bodyFor(10_000)));
    expect(s.requests[0]!.headers['if-range']).toBe(lm);
  });

  it('a server that ignores Range (200) restarts cleanly', async () => {
    const s = await server();
    s.route('/nr', { body: { size: 50_000 }, ranges: false });
    const out = path.join(dir, 'nr');
    fs.writeFileSync(part(out), Buffer.alloc(20_000, 0x78));
    const { cb, seen } = fixed(out);
    const r = await download(req(s.url('/nr'), { output: out, outputFixed: true, resume: { offset: 20_000, etag: null, lastModified: null } }), cb);
    expect(s.requests[0]!.headers.range).toBe('bytes=20000-');
    expect(s.requests[0]!.headers['if-range']).toBeUndefined();
    expect(r.httpStatus).toBe(200);
    expect(seen.metas[0]!.startOffset).toBe(0);
    expect(fs.readFileSync(out).equals(bodyFor(50_000))).toBe(true);
  });

  it('a changed ETag starts over (If-Range answered with the new version)', async () => {
    const s = await server();
    s.route('/v', { body: { size: 100_000, seed: 'A' }, etag: '"a"', dropAfter: { bytes: 30_000, times: 1 } });
    const out = path.join(dir, 'v');
    const e = await failure(download(req(s.url('/v'), { output: out, outputFixed: true }), fixed(out).cb));
    s.route('/v', { body: { size: 100_000, seed: 'B' }, etag: '"b"' });
    const r = await download(req(s.url('/v'), { output: out, outputFixed: true, resume: e.extra.partial! }), fixed(out).cb);
    expect(s.requestsTo('/v')[1]!.headers['if-range']).toBe('"a"');
    expect(r.httpStatus).toBe(200);
    expect(fs.readFileSync(out).equals(bodyFor(100_000, 'B'))).toBe(true);
  });

  it('a 206 with a changed ETag (If-Range ignored) is not spliced: it asks again without Range', async () => {
    const s = await server();
    s.route('/v', { body: { size: 100_000, seed: 'A' }, etag: '"a"', dropAfter: { bytes: 30_000, times: 1 } });
    const out = path.join(dir, 'v');
    const e = await failure(download(req(s.url('/v'), { output: out, outputFixed: true }), fixed(out).cb));
    s.route('/v', { body: { size: 100_000, seed: 'B' }, etag: '"b"', ifRange: false });
    const { cb, seen } = fixed(out);
    const r = await download(req(s.url('/v'), { output: out, outputFixed: true, resume: e.extra.partial! }), cb);
    const reqs = s.requestsTo('/v');
    expect(reqs).toHaveLength(3);
    expect(reqs[1]!.headers.range).toBeDefined();
    expect(reqs[2]!.headers.range).toBeUndefined();
    expect(seen.metas).toHaveLength(1);
    expect(r.httpStatus).toBe(200);
    expect(fs.readFileSync(out).equals(bodyFor(100_000, 'B'))).toBe(true);
  });

  it('a 206 starting at the wrong offset is not appended', async () => {
    const s = await server();
    const size = 10_000;
    s.route('/wrong', { body: { size }, etag: '"x"', headers: { 'Content-Range': `bytes 0-${size - 1}/${size}` } });
    const out = path.join(dir, 'wrong');
    fs.writeFileSync(part(out), bodyFor(size).subarray(0, 3000));
    const r = await download(req(s.url('/wrong'), { output: out, outputFixed: true, resume: { offset: 3000, etag: '"x"', lastModified: null } }), fixed(out).cb);
    expect(s.hits('/wrong')).toBe(2);
    expect(s.requests[1]!.headers.range).toBeUndefined();
    expect(fs.readFileSync(out).equals(bodyFor(size))).toBe(true);
    expect(r.bytes).toBe(size);
  });

  it('416 for a part file that is already complete finishes from it', async () => {
    const s = await server();
    s.route('/done', { body: { size: 8000 }, etag: '"d"' });
    const out = path.join(dir, 'done');
    fs.writeFileSync(part(out), bodyFor(8000));
    const { cb, seen } = fixed(out);
    const r = await download(req(s.url('/done'), { output: out, outputFixed: true, resume: { offset: 8000, etag: '"d"', lastModified: null } }), cb);
    expect(s.hits('/done')).toBe(1);
    expect(s.requests[0]!.headers.range).toBe('bytes=8000-');
    expect(r).toMatchObject({ httpStatus: 206, bytes: 8000, sha256: sha256(bodyFor(8000)) });
    expect(seen.metas).toHaveLength(1);
    expect(fs.readFileSync(out).equals(bodyFor(8000))).toBe(true);
    expect(fs.existsSync(part(out))).toBe(false);
  });

  it('416 for a longer part file starts over', async () => {
    const s = await server();
    s.route('/shrunk', { body: { size: 1000 } });
    const out = path.join(dir, 'shrunk');
    fs.writeFileSync(part(out), Buffer.alloc(2000, 1));
    const r = await download(req(s.url('/shrunk'), { output: out, outputFixed: true, resume: { offset: 2000, etag: null, lastModified: null } }), fixed(out).cb);
    expect(s.requests.map((q) => q.headers.range)).toEqual(['bytes=2000-', undefined]);
    expect(r.httpStatus).toBe(200);
    expect(fs.readFileSync(out).equals(bodyFor(1000))).toBe(true);
  });

  it('a large download resumes with the right checksum', async () => {
    const s = await server();
    const size = 10 * 1024 * 1024 + 7;
    s.route('/large.bin', { body: { size, seed: 'L' }, etag: '"L"', dropAfter: { bytes: 3 * 1024 * 1024, times: 1 } });
    const out = path.join(dir, 'large.bin');
    const e = await failure(download(req(s.url('/large.bin'), { output: out, outputFixed: true }), fixed(out).cb));
    const partial = e.extra.partial!;
    expect(partial.offset).toBeGreaterThan(0);
    expect(fs.statSync(part(out)).size).toBe(partial.offset);
    const second = fixed(out);
    const r = await download(req(s.url('/large.bin'), { output: out, outputFixed: true, resume: partial }), second.cb);
    expect(r).toMatchObject({ httpStatus: 206, bytes: size, sha256: sha256(bodyFor(size, 'L')) });
    expect(fs.readFileSync(out).equals(bodyFor(size, 'L'))).toBe(true);
    expect(second.seen.progress.at(-1)).toBe(size);
    expect(Math.max(...second.seen.durable)).toBe(size);
  });

  it('416 for a large complete part file hashes it and finishes', async () => {
    const s = await server();
    const size = 9 * 1024 * 1024;
    s.route('/whole.bin', { body: { size, seed: 'W' }, etag: '"w"' });
    const out = path.join(dir, 'whole.bin');
    fs.writeFileSync(part(out), bodyFor(size, 'W'));
    const r = await download(req(s.url('/whole.bin'), { output: out, outputFixed: true, resume: { offset: size, etag: '"w"', lastModified: null } }), fixed(out).cb);
    expect(r).toMatchObject({ httpStatus: 206, bytes: size, sha256: sha256(bodyFor(size, 'W')) });
    expect(fs.existsSync(part(out))).toBe(false);
  });

  it('a large part file shorter than the recorded offset starts over', async () => {
    const s = await server();
    const size = 9 * 1024 * 1024;
    s.route('/cut.bin', { body: { size, seed: 'C' }, etag: '"c"' });
    const out = path.join(dir, 'cut.bin');
    fs.writeFileSync(part(out), bodyFor(size, 'C').subarray(0, 1000));
    const r = await download(req(s.url('/cut.bin'), { output: out, outputFixed: true, resume: { offset: 5000, etag: '"c"', lastModified: null } }), fixed(out).cb);
    expect(s.requests[0]!.headers.range).toBeUndefined();
    expect(r.sha256).toBe(sha256(bodyFor(size, 'C')));
  });

  it('stopping a large download keeps a part file of exactly the durable offset', async () => {
    const s = await server();
    s.route('/slow-large.bin', { body: { size: 12 * 1024 * 1024 }, etag: '"sl"', throttle: 4 * 1024 * 1024 });
    const out = path.join(dir, 'slow-large.bin');
    const { cb, abort, seen } = fixed(out);
    cb.onProgress = (n) => {
      seen.progress.push(n);
      if (n >= 1024 * 1024) abort.abort();
    };
    const e = await failure(download(req(s.url('/slow-large.bin'), { output: out, outputFixed: true }), cb));
    expect(e).toMatchObject({ code: 'E_ABORTED', transient: true });
    const offset = e.extra.partial!.offset;
    expect(offset).toBeGreaterThanOrEqual(1024 * 1024);
    expect(seen.durable.at(-1)).toBe(offset);
    expect(fs.statSync(part(out)).size).toBe(offset);
    expect(fs.readFileSync(part(out)).equals(bodyFor(12 * 1024 * 1024).subarray(0, offset))).toBe(true);
  });

  it('a missing part file starts from zero', async () => {
    const s = await server();
    s.route('/gone', { body: 'whole' });
    const out = path.join(dir, 'gone');
    const r = await download(req(s.url('/gone'), { output: out, outputFixed: true, resume: { offset: 3, etag: null, lastModified: null } }), fixed(out).cb);
    expect(s.requests[0]!.headers.range).toBeUndefined();
    expect(fs.readFileSync(r.output!, 'utf8')).toBe('whole');
  });
});

describe('download: partial files are never followed through symlinks', () => {
  const precious = () => {
    const target = path.join(dir, 'bashrc');
    fs.writeFileSync(target, 'precious');
    return target;
  };

  it('refuses a symlinked part file on a fresh start and leaves its target untouched', async () => {
    const s = await server();
    s.route('/f', { body: 'attacker bytes' });
    const target = precious();
    const out = path.join(dir, 'out');
    fs.symlinkSync(target, part(out));
    const e = await failure(download(req(s.url('/f'), { output: out, outputFixed: true }), fixed(out).cb));
    expect(e).toMatchObject({ code: 'E_UNSAFE_PART', transient: false });
    expect(fs.readFileSync(target, 'utf8')).toBe('precious');
    expect(fs.lstatSync(part(out)).isSymbolicLink()).toBe(true);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('refuses a symlinked part file on resume before sending anything', async () => {
    const s = await server();
    s.route('/f', { body: 'attacker bytes' });
    const target = precious();
    const out = path.join(dir, 'out');
    fs.symlinkSync(target, part(out));
    const e = await failure(download(req(s.url('/f'), { output: out, outputFixed: true, resume: { offset: 4, etag: null, lastModified: null } }), fixed(out).cb));
    expect(e.code).toBe('E_UNSAFE_PART');
    expect(s.hits('/f')).toBe(0);
    expect(fs.readFileSync(target, 'utf8')).toBe('precious');
  });

  it('refuses a dangling symlink without creating its target', async () => {
    const s = await server();
    s.route('/f', { body: 'attacker bytes' });
    const out = path.join(dir, 'out');
    const target = path.join(dir, 'created-by-attack');
    fs.symlinkSync(target, part(out));
    const e = await failure(download(req(s.url('/f'), { output: out, outputFixed: true }), fixed(out).cb));
    expect(e.code).toBe('E_UNSAFE_PART');
    expect(fs.existsSync(target)).toBe(false);
  });

  it('a part file that is not the lineage\'s own (a second link, or unrecorded) is never touched: E_OUTPUT_BUSY before any request', async () => {
    const s = await server();
    s.route('/f', { body: 'fresh' });
    const target = precious();
    const linked = path.join(dir, 'linked');
    const plain = path.join(dir, 'plain');
    fs.linkSync(target, part(linked));
    fs.writeFileSync(part(plain), 'another bgdl is writing this');
    for (const out of [linked, plain]) {
      const e = await failure(download(req(s.url('/f'), { output: out, outputFixed: true }), fixed(out).cb));
      expect(e).toMatchObject({ code: 'E_OUTPUT_BUSY', transient: true });
      expect(e.message).toContain(part(out));
      expect(fs.existsSync(out)).toBe(false);
    }
    expect(s.hits('/f')).toBe(0);
    expect(fs.readFileSync(target, 'utf8')).toBe('precious');
    expect(fs.statSync(target).nlink).toBe(2);
    expect(fs.readFileSync(part(plain), 'utf8')).toBe('another bgdl is writing this');
  });

  it('never appends to a part file that is a second link (a task of an older bgdl, recorded by name)', async () => {
    const s = await server();
    s.route('/f', { body: 'precious and more' });
    const target = precious();
    const out = path.join(dir, 'out');
    fs.linkSync(target, part(out));
    const e = await failure(download(req(s.url('/f'), { output: out, outputFixed: true, resume: { offset: 8, etag: null, lastModified: null } }), fixed(out).cb));
    expect(e.code).toBe('E_OUTPUT_BUSY');
    expect(s.hits('/f')).toBe(0);
    expect(fs.readFileSync(target, 'utf8')).toBe('precious');
  });
});

describe('download: one owner per partial file', () => {
  const idOf = (file: string) => {
    const st = fs.statSync(file);
    return `${st.dev}:${st.ino}`;
  };
  const SIZE = 20_000;

  it('resumes from the whole length written since this boot, else from the durable offset (cutting the rest)', async () => {
    const s = await server();
    s.route('/t', { body: { size: SIZE }, etag: '"t"' });
    for (const trustLength of [true, false]) {
      const out = path.join(dir, `t-${trustLength}`);
      fs.writeFileSync(part(out), bodyFor(SIZE).subarray(0, 5000));
      const plan = { recorded: { path: part(out), id: idOf(part(out)) }, trustLength, copy: false, tag: '3' };
      const parts: unknown[] = [];
      const c = fixed(out, { onPartFile: async (p, meta) => (parts.push({ ...p, meta: !!meta }), true) });
      const r = await download(req(s.url('/t'), { output: out, outputFixed: true, resume: { offset: 1000, etag: '"t"', lastModified: null }, part: plan }), c.cb);
      expect(s.requests.at(-1)!.headers.range).toBe(trustLength ? 'bytes=5000-' : 'bytes=1000-');
      expect(r.sha256).toBe(sha256(bodyFor(SIZE)));
      expect(parts).toEqual([{ path: part(out), id: plan.recorded.id, offset: trustLength ? 5000 : 1000, direct: false, meta: true }]);
    }
  });

  it('a takeover while the previous writer may run continues in a copy; the old writer reaches only an orphaned inode', async () => {
    const s = await server();
    s.route('/c', { body: { size: SIZE }, etag: '"c"' });
    const out = path.join(dir, 'c.bin');
    fs.writeFileSync(part(out), bodyFor(SIZE).subarray(0, 6000));
    const stale = fs.openSync(part(out), 'r+'); // the frozen worker's descriptor
    const plan = { recorded: { path: part(out), id: idOf(part(out)) }, trustLength: true, copy: true, tag: '9' };
    const parts: { path: string; offset: number; meta: boolean }[] = [];
    const c = fixed(out, { onPartFile: async (p, meta) => (parts.push({ path: p.path, offset: p.offset, meta: !!meta }), true) });
    const r = await download(req(s.url('/c'), { output: out, outputFixed: true, resume: { offset: 0, etag: '"c"', lastModified: null }, part: plan }), c.cb);
    expect(parts).toEqual([
      { path: `${out}.9.bgdl-part`, offset: 6000, meta: false },
      { path: `${out}.9.bgdl-part`, offset: 6000, meta: true },
    ]);
    expect(s.requests[0]!.headers.range).toBe('bytes=6000-');
    // The old writer wakes up and writes: only its orphaned inode changes.
    fs.writeSync(stale, Buffer.alloc(9000, 0x41), 0, 9000, 0);
    fs.closeSync(stale);
    expect(r.sha256).toBe(sha256(bodyFor(SIZE)));
    expect(sha256(fs.readFileSync(out))).toBe(sha256(bodyFor(SIZE)));
    expect(fs.readdirSync(dir)).toEqual(['c.bin']);
  });

  it('a fresh start never rewrites the lineage\'s file in place: a fresh file, then the old one goes', async () => {
    const s = await server();
    s.route('/r', { body: 'fresh', etag: '"new"', ranges: false });
    const out = path.join(dir, 'r');
    fs.writeFileSync(part(out), 'old bytes of an older version');
    const reader = fs.openSync(part(out), 'r'); // a takeover copying it
    const plan = { recorded: { path: part(out), id: idOf(part(out)) }, trustLength: true, copy: false, tag: '4' };
    const parts: string[] = [];
    const c = fixed(out, { onPartFile: async (p) => (parts.push(p.path), true) });
    const r = await download(req(s.url('/r'), { output: out, outputFixed: true, resume: { offset: 5, etag: '"old"', lastModified: null }, part: plan }), c.cb);
    expect(parts).toEqual([`${out}.4.bgdl-part`]);
    expect(fs.readFileSync(r.output!, 'utf8')).toBe('fresh');
    const buf = Buffer.alloc(64);
    expect(buf.toString('utf8', 0, fs.readSync(reader, buf, 0, 64, 0))).toBe('old bytes of an older version');
    fs.closeSync(reader);
    expect(fs.readdirSync(dir)).toEqual(['r']);
  });

  it('an attempt fenced out when it records its file stops: its fresh file is removed, nothing is renamed', async () => {
    const s = await server();
    s.route('/x', { body: 'late' });
    const out = path.join(dir, 'x');
    const e = await failure(download(req(s.url('/x'), { output: out, outputFixed: true }), fixed(out, { onPartFile: async () => false }).cb));
    expect(e.code).toBe('E_FENCED');
    expect(fs.readdirSync(dir)).toEqual([]);
    const late = await failure(download(req(s.url('/x'), { output: out, outputFixed: true }), fixed(out, { stillOwner: async () => false }).cb));
    expect(late.code).toBe('E_FENCED');
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('download: redirects', () => {
  it('follows a chain and drops credentials when it leaves the origin', async () => {
    const a = await server();
    const b = await server();
    a.route('/start', { redirect: { to: '/hop', status: 301 } });
    a.route('/hop', { redirect: { to: b.url('/final'), status: 307 } });
    b.route('/final', { body: 'arrived', contentDisposition: 'attachment; filename="final.txt"' });
    const url = a.url('/start').replace('http://', 'http://alice:s3cret@');
    const r = await download(req(url, { headers: [['Cookie', 'session=1'], ['X-Trace', 't1']] }), callbacks().cb);
    expect(r.finalUrl).toBe(b.url('/final'));
    expect(r.output).toBe(path.join(dir, 'final.txt'));
    const basic = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
    for (const q of a.requests) {
      expect(q.headers.authorization).toBe(basic);
      expect(q.headers.cookie).toBe('session=1');
    }
    expect(a.requests).toHaveLength(2);
    const final = b.requests[0]!.headers;
    expect(final.authorization).toBeUndefined();
    expect(final.cookie).toBeUndefined();
    expect(final['x-trace']).toBe('t1');
  });

  it('fails after too many redirects', async () => {
    const s = await server();
    s.route('/loop', { redirect: { to: '/loop' } });
    const e = await failure(download(req(s.url('/loop')), callbacks().cb));
    expect(e).toMatchObject({ code: 'E_TOO_MANY_REDIRECTS', transient: false });
    expect(s.hits('/loop')).toBe(21);
    const e2 = await failure(download(req(s.url('/loop'), { maxRedirects: 2 }), callbacks().cb));
    expect(e2.code).toBe('E_TOO_MANY_REDIRECTS');
    expect(s.hits('/loop')).toBe(21 + 3);
  });

  it('refuses a redirect to ftp:', async () => {
    const s = await server();
    s.route('/r', { redirect: { to: 'ftp://127.0.0.1/file' } });
    const e = await failure(download(req(s.url('/r')), callbacks().cb));
    expect(e).toMatchObject({ code: 'E_REDIRECT_SCHEME', transient: false });
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('303 turns a POST into a GET', async () => {
    const s = await server();
    s.route('/form', { redirect: { to: '/result', status: 303 } });
    s.route('/result', { body: 'result' });
    const r = await download(req(s.url('/form'), { method: 'POST' }), callbacks().cb);
    expect(s.requests.map((q) => q.method)).toEqual(['POST', 'GET']);
    expect(fs.readFileSync(r.output!, 'utf8')).toBe('result');
  });
});

describe('limits: maxSize and the free-space reserve', () => {
  it('a length over maxSize fails before the output is chosen; a body without a length stops at it, nothing kept', async () => {
    const s = await server();
    s.route('/big.bin', { body: { size: 200_000 } });
    s.route('/chunked.bin', { body: { size: 200_000 }, chunked: true });
    const a = callbacks();
    const e1 = await failure(download(req(s.url('/big.bin'), { maxSize: 100_000 }), a.cb));
    expect(e1).toMatchObject({ code: 'E_TOO_LARGE', transient: false });
    expect(a.seen.metas).toEqual([]);
    const b = callbacks();
    const e2 = await failure(download(req(s.url('/chunked.bin'), { maxSize: 100_000 }), b.cb));
    expect(e2).toMatchObject({ code: 'E_TOO_LARGE', transient: false });
    expect(e2.extra.partial).toBeUndefined();
    expect(fs.readdirSync(dir)).toEqual([]);
    // At the limit exactly is fine.
    const c = callbacks();
    const r = await download(req(s.url('/chunked.bin'), { maxSize: 200_000 }), c.cb);
    expect(r.bytes).toBe(200_000);
  });

  it('a reserve above the free space waits for disk-space before any file is created', async () => {
    const s = await server();
    s.route('/f.bin', { body: { size: 10_000 } });
    const a = callbacks();
    const e = await failure(download(req(s.url('/f.bin'), { minFreeSpace: { bytes: null, percent: 100 } }), a.cb));
    expect(e).toMatchObject({ code: 'E_DISK_SPACE', transient: true, extra: { waitFor: 'disk-space' } });
    expect(e.message).toMatch(/minFreeSpace/);
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(s.hits('/f.bin')).toBe(1); // no directory given: the response's length is checked
    const withDir = await failure(download(req(s.url('/f.bin'), { dir, minFreeSpace: { bytes: null, percent: 100 } }), callbacks().cb));
    expect(withDir).toMatchObject({ code: 'E_DISK_SPACE' });
    expect(s.hits('/f.bin')).toBe(1); // the directory known: held before any request
  });
});
