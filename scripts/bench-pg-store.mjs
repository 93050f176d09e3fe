// The shared store's cost per claimed task: W workers (each its own store handle and home, in this one
// process) claim, record progress for and finish N tasks, as the worker does. Usage (after npm run build):
//   node scripts/bench-pg-store.mjs postgres://USER@HOST:PORT/DB [N=2000] [W=1]
// It works in a fresh schema bench_<time>, left behind for inspection (DROP SCHEMA … CASCADE).
import { PgStore } from '../dist/store/postgres/store.js';
const base = process.argv[2];
const N = Number(process.argv[3] ?? 2000);
const W = Number(process.argv[4] ?? 1);
const url = `${base}?schema=bench_${Date.now()}`;
const rl = { base: 10000, max: 3600000 };
const nt = (i) => ({ session: 'b', kind: 'download', url: `http://h${i % 10}.test/f${i}`, method: 'GET', headers: [], output: null, outputFixed: false, dir: '/tmp', beginAt: null, discretionary: null, priority: 'normal', expectSend: null, expectReceive: null, sha256Expected: null, suspended: false, insecure: false, caFile: null, allowDowngrade: false, fromHook: false });
const first = await PgStore.open(url, { home: '/bench/0', staleMs: 30000 });
let t0 = Date.now();
await first.enqueue(Array.from({ length: N }, (_, i) => nt(i)), rl);
const enqMs = Date.now() - t0;
const stores = [first];
for (let w = 1; w < W; w++) stores.push(await PgStore.open(url, { home: `/bench/${w}`, staleMs: 30000 }));
t0 = Date.now();
let claimed = 0;
await Promise.all(stores.map(async (s, w) => {
  const lease = await s.takeLease(10000 + w, Date.now(), 30000, () => true);
  for (;;) {
    const c = await s.runnableCandidates(Date.now(), 16);
    if (c.length === 0) break;
    for (const cand of c) {
      const t = await s.markRunning(cand.id, Date.now(), lease, { perHost: 1000 });
      if (!t) continue;
      claimed++;
      await s.recordProgress([{ id: t.id, claim: t.claim, bytesReceived: 1, resumeOffset: 1 }]);
      await s.finishTask({ id: t.id, claim: t.claim }, { state: 'completed', sha256: 'x', bytesReceived: 1 });
    }
  }
}));
const ms = Date.now() - t0;
console.log(JSON.stringify({ tasks: N, workers: W, claimed, enqueueMs: enqMs, drainMs: ms, perTaskMs: +(ms / N).toFixed(3), tasksPerSecond: Math.round(N / (ms / 1000)) }));
for (const s of stores) await s.close();
