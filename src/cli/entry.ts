// What bin/bgdl.js runs. A plain `bgdl worker` (how the CLI starts the detached worker) goes straight
// to the worker command without loading commander and the program's definition, which a process that
// parses no options does not need (measured: an idle worker's peak RSS 62.1 -> 60.9 MiB). Everything
// else, `bgdl worker --ensure` and `bgdl worker --help` included, goes through the commander program in
// main.ts.

import { reportError } from './report.js';

export async function run(argv: string[]): Promise<number> {
  if (argv.length !== 3 || argv[2] !== 'worker') {
    const { main } = await import('./main.js');
    return main(argv);
  }
  const [{ makeCtx, closeStore }, { worker, workerNotice }] = await Promise.all([import('./context.js'), import('./commands/worker.js')]);
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
