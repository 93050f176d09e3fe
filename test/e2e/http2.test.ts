// HTTP/2 from the real CLI: a batch to an origin that offers it over TLS shares one connection, and
// `status ID` / `status --json` say which protocol each transfer used.

import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { testdir, waitFinal, type TestDir } from '../helpers/cli.js';
import { bodyFor, sha256, startHttp2Server, type Http2TestServer } from '../helpers/server.js';

let t: TestDir;
let s: Http2TestServer;
beforeEach(async () => {
  // The worker must outlive the gap between the two adds, so that one connection can carry both.
  t = await testdir({ BGDL_WORKER_LINGER: '15000' });
  s = await startHttp2Server({ size: 40_000, delayMs: 200 });
});
afterEach(async () => {
  await t.cleanup();
  await s.close();
});

it('a batch over HTTP/2 is multiplexed, and status shows the protocol', async () => {
  const first = await t.bgdl(['add', '--json', '--ca-file', s.caFile, s.url('/first.bin')]);
  expect(first.code, first.stderr).toBe(0);
  await waitFinal(t, [JSON.parse(first.stdout)[0].id]);
  const list = Array.from({ length: 6 }, (_, i) => s.url(`/f${i}.bin`)).join('\n');
  const r = await t.bgdl(['add', '--json', '--ca-file', s.caFile, '-i', '-'], { input: list });
  expect(r.code, r.stderr).toBe(0);
  const done = await waitFinal(t, JSON.parse(r.stdout).map((x: any) => x.id));
  for (const d of done) {
    expect(d).toMatchObject({ state: 'completed', protocol: 'HTTP/2' });
    expect(sha256(fs.readFileSync(d.output))).toBe(sha256(bodyFor(40_000)));
  }
  // One worker, one origin: the first transfer's connection carried every later one.
  expect(s.sessions).toBe(1);
  expect(s.requests).toBe(7);
  const detail = await t.bgdl(['status', String(done[0].id)]);
  expect(detail.stdout).toMatch(/^protocol:\s+HTTP\/2$/m);
  expect(path.dirname(done[0].output)).toBe(t.downloads);
});

it('a large file over HTTP/2 (written with direct I/O from undici\'s buffers) is byte-identical', async () => {
  const BIG = 36 * 1024 * 1024; // over TUNING.directMinBytes
  const big = await startHttp2Server({ size: BIG });
  try {
    const r = await t.bgdl(['add', '--json', '--ca-file', big.caFile, big.url('/large.bin')]);
    expect(r.code, r.stderr).toBe(0);
    const [done] = await waitFinal(t, [JSON.parse(r.stdout)[0].id], 60_000);
    expect(done).toMatchObject({ state: 'completed', protocol: 'HTTP/2', sha256: sha256(bodyFor(BIG)) });
    expect(sha256(fs.readFileSync(done.output))).toBe(sha256(bodyFor(BIG)));
  } finally {
    await big.close();
  }
}, 60_000);
