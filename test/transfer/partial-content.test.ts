// The transfer's side of "a 206 is saved only when it was asked for", with a real local server:
// a resume answered with the wrong range, then an unasked slice, fails and keeps the partial file as
// it was; the user's own Range header still gets the slice it asked for.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, expect, it } from 'vitest';
import { closeDispatchers } from '../../src/transfer/dispatch.js';
import { download } from '../../src/transfer/download.js';
import { TransferError, type DownloadCallbacks, type DownloadRequest } from '../../src/transfer/types.js';
import { bodyFor, startServer, type TestServer } from '../helpers/server.js';

let dir: string;
let s: TestServer;
beforeEach(async () => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-206-')));
  s = await startServer();
});
afterEach(async () => {
  await s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
afterAll(() => closeDispatchers());

const req = (url: string, over: Partial<DownloadRequest>): DownloadRequest => ({
  url, method: 'GET', headers: [], allowDowngrade: false, output: null, outputFixed: true, resume: null,
  sha256Expected: null, expectReceive: null, stallTimeoutMs: 5000, insecure: false, caFile: null, ...over,
});
const cb = (output: string): DownloadCallbacks => ({
  signal: new AbortController().signal,
  chooseOutput: async () => output,
  onProgress: () => {},
  onDurable: () => {},
});

it('a resume answered with another range, then with an unasked slice, fails E_PARTIAL_CONTENT and leaves the partial file as it was', async () => {
  const size = 10_000;
  // Every Range request gets a 206 claiming to start at 0; the plain retry gets the first 1,000 bytes as a 206.
  s.route('/slice', { body: { size }, etag: '"s"', headers: { 'Content-Range': 'bytes 0-999/10000' }, rangeForPlainGet: { start: 0, end: 999 } });
  const out = path.join(dir, 'slice');
  const kept = bodyFor(size).subarray(0, 3000);
  fs.writeFileSync(`${out}.bgdl-part`, kept);
  let err: unknown;
  try {
    await download(req(s.url('/slice'), { output: out, resume: { offset: 3000, etag: '"s"', lastModified: null } }), cb(out));
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(TransferError);
  expect((err as TransferError).code).toBe('E_PARTIAL_CONTENT');
  expect((err as TransferError).transient).toBe(false);
  expect((err as TransferError).extra.partial).toMatchObject({ output: out, offset: 3000 });
  expect(s.requests.map((r) => r.headers.range)).toEqual(['bytes=3000-', undefined]);
  expect(fs.existsSync(out)).toBe(false);
  expect(fs.readFileSync(`${out}.bgdl-part`).equals(kept)).toBe(true);
});

it('a Range header of the user\'s own gets the slice it asked for', async () => {
  s.route('/mine', { body: { size: 10_000 } });
  const out = path.join(dir, 'mine');
  const r = await download(req(s.url('/mine'), { output: out, headers: [['Range', 'bytes=100-199']] }), cb(out));
  expect(r).toMatchObject({ httpStatus: 206, bytes: 100 });
  expect(fs.readFileSync(out).equals(bodyFor(10_000).subarray(100, 200))).toBe(true);
});
