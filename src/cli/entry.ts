// What bin/bgdl.js runs. A plain `bgdl worker` (how the CLI starts the detached worker) goes straight
// to the worker command without loading commander and the program's definition, which a process that
// parses no options does not need (measured: an idle worker's peak RSS 62.1 -> 60.9 MiB); a held one
// (worker-start.ts) first waits for its go. Everything else, `bgdl worker --ensure` and `bgdl worker
// --help` included, goes through the commander program in main.ts.

import { childProcess } from '../shared/builtins.js';
import { storeUrl } from '../shared/config.js';
import { mustLoadAtStart, restoreExtraCaCerts } from '../shared/extra-ca.js';
import { bgdlHome } from '../shared/paths.js';
import { reportError } from './report.js';

export async function run(argv: string[]): Promise<number> {
  // Only a process whose certificates were carried reads the store's URL for this (a config file read).
  if (restoreExtraCaCerts(process.env) && mustLoadExtraCaCerts()) return startAgain(argv);
  if (argv.length !== 3 || argv[2] !== 'worker') {
    // The commands that queue new work give their worker a head start (worker-start.ts): it boots
    // while the command does.
    if (argv[2] === 'add' || argv[2] === 'upload') (await import('./worker-start.js')).startHeldWorker(process.env);
    const { main } = await import('./main.js');
    return main(argv);
  }
  const load = () => Promise.all([import('./context.js'), import('./commands/worker.js'), import('../worker/index.js')]);
  // Held (worker-start.ts): loaded ahead, it starts only if the command that started it says so.
  const { takeHeld, heldUntilGo } = await import('./held-worker.js');
  if (takeHeld(process.env) && !(await heldUntilGo(bgdlHome(process.env), load))) return 0;
  const [{ makeCtx, closeStore }, { worker, workerNotice }] = await load();
  try {
    const notice = workerNotice(await worker(makeCtx(), {}));
    if (notice) process.stderr.write(`bgdl: ${notice}\n`);
    return 0;
  } catch (err) {
    return reportError(err);
  } finally {
    await closeStore().catch(() => {});
  }
}

/** A store URL that cannot be read is the command's to report; here it only means no TLS to care about. */
function mustLoadExtraCaCerts(): boolean {
  try {
    return mustLoadAtStart(storeUrl(process.env), process.env);
  } catch {
    return false;
  }
}

/**
 * The same command again, in a Node.js that loads NODE_EXTRA_CA_CERTS as it starts (the variable is
 * back in the environment): its exit status is ours, a signal that ended it ends us the same way.
 */
function startAgain(argv: string[]): number {
  const r = childProcess().spawnSync(process.execPath, [...process.execArgv, ...argv.slice(1)], { stdio: 'inherit', env: process.env });
  if (r.signal) process.kill(process.pid, r.signal);
  if (r.error) {
    process.stderr.write(
      `bgdl: cannot start Node.js again with NODE_EXTRA_CA_CERTS loaded, as the PostgreSQL store over TLS needs (${r.error.message}); run \`node ${argv[1]}\` instead of \`bgdl\`, which loads it at once\n`,
    );
    return 1;
  }
  return r.status ?? 1;
}
