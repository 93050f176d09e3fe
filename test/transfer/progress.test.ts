// Progress never freezes: at any speed, the bytes reported to the worker (and so to the store and the
// bars) move while bytes arrive — also for a large file, whose writes are batched.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, expect, it } from 'vitest';
import { closeDispatchers } from '../../src/transfer/dispatch.js';
import { download } from '../../src/transfer/download.js';
import { startServer, type TestServer } from '../helpers/server.js';

let dir: string;
let s: TestServer;
beforeEach(async () => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-progress-')));
  s = await startServer();
});
afterEach(async () => {
  await s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
afterAll(() => closeDispatchers());

it('a 9 MiB file at 200 KB/s reports progress every second or so, not only when the writes catch up', async () => {
  s.route('/slow-big.bin', { body: { size: 9 * 1024 * 1024 }, etag: '"p"', throttle: 200_000 });
  const out = path.join(dir, 'slow-big.bin');
  const abort = new AbortController();
  let latest = 0;
  const attempt = download(
    {
      url: s.url('/slow-big.bin'), method: 'GET', headers: [], allowDowngrade: false, output: out, outputFixed: true, resume: null,
      sha256Expected: null, expectReceive: null, stallTimeoutMs: 10_000, insecure: false, caFile: null,
    },
    { signal: abort.signal, chooseOutput: async () => out, onProgress: (n) => (latest = n), onDurable: () => {} },
  ).catch(() => null);
  // Look once a second for five seconds (about 1 MB arrives meanwhile): the reported count must have
  // moved at most looks apart. The old path reported only when a 512 KiB region reached the disk
  // thread and the ring had filled, which at this speed took tens of seconds.
  const seen: number[] = [];
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    seen.push(latest);
  }
  abort.abort();
  await attempt;
  const moves = seen.filter((v, i) => i > 0 && v > seen[i - 1]!).length;
  expect(seen.at(-1)).toBeGreaterThan(0);
  expect(moves, `progress seen: ${seen.join(', ')}`).toBeGreaterThanOrEqual(3);
});
