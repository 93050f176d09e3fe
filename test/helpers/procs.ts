// Finding this test's worker processes through /proc (Linux): `bgdl worker` processes whose
// environment has our BGDL_HOME.

import fs from 'node:fs';

export function workerPids(home: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (!cmd.some((a) => a.endsWith('bin/bgdl.js')) || cmd.at(-2) !== 'worker') continue;
      const env = fs.readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0');
      if (env.includes(`BGDL_HOME=${home}`)) pids.push(Number(entry));
    } catch {
      /* gone */
    }
  }
  return pids;
}
