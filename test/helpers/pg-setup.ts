// Vitest global set-up: the shared-store tests need a PostgreSQL. When BGDL_TEST_PG is not given (CI's
// .ci/run gives one) and PostgreSQL's server programs are installed, start a throwaway cluster for this
// run — initdb into a temporary directory, a free port on 127.0.0.1, its socket in that directory — and
// stop it at the end, so that `npm test` runs those tests on any machine that has PostgreSQL.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

function serverBin(): string | null {
  const roots = ['/usr/lib/postgresql', '/usr/local/lib/postgresql'];
  for (const root of roots) {
    let versions: string[] = [];
    try {
      versions = fs.readdirSync(root).sort().reverse();
    } catch {
      continue;
    }
    for (const v of versions) if (fs.existsSync(path.join(root, v, 'bin', 'initdb'))) return path.join(root, v, 'bin');
  }
  return null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export default async function setup(): Promise<(() => void) | undefined> {
  if (process.env.BGDL_TEST_PG) return undefined;
  const bin = serverBin();
  if (!bin) return undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-test-pg-'));
  // The server refuses to run as root: as root, run it as the postgres user.
  const asRoot = process.getuid?.() === 0;
  const run = (cmd: string, args: string[]) =>
    asRoot
      ? execFileSync('su', ['postgres', '-s', '/bin/sh', '-c', [cmd, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ')], { stdio: 'ignore' })
      : execFileSync(cmd, args, { stdio: 'ignore' });
  try {
    if (asRoot) execFileSync('chown', ['postgres:', dir]);
    const port = await freePort();
    run(path.join(bin, 'initdb'), ['-D', path.join(dir, 'data'), '-U', 'postgres', '-A', 'trust']);
    run(path.join(bin, 'pg_ctl'), ['-D', path.join(dir, 'data'), '-l', path.join(dir, 'log'), '-w', '-o', `-k ${dir} -p ${port} -c listen_addresses=127.0.0.1`, 'start']);
    process.env.BGDL_TEST_PG = `postgres://postgres@127.0.0.1:${port}/postgres`;
  } catch (err) {
    console.warn(`notice: could not start a throwaway PostgreSQL for the shared-store tests (${(err as Error).message.split('\n')[0]})`);
    fs.rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
  return () => {
    try {
      run(path.join(bin, 'pg_ctl'), ['-D', path.join(dir, 'data'), '-m', 'immediate', 'stop']);
    } catch {
      /* already gone */
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
}
