import { describe, expect, it } from 'vitest';
import type { Task } from '../../src/shared/model.js';
import { orderCandidates, schedule, transfersCounted } from '../../src/worker/scheduler.js';

let nextId = 1;
function task(p: Partial<Task> = {}): Task {
  return {
    id: nextId++, session: 'default', kind: 'download', url: 'http://a.test/x', finalUrl: null, method: 'GET', headers: [], output: null,
    outputFixed: false, dir: '/tmp', uploadFile: null, uploadSize: null, state: 'queued', waitReason: null, waitDetail: null, notBefore: null,
    beginAt: null, discretionary: false, priority: 'normal', expectSend: null, expectReceive: null, sha256Expected: null, sha256: null,
    bytesReceived: 0, bytesExpected: null, bytesSent: 0, httpStatus: null, attempts: 0, error: null, etag: null, lastModified: null,
    resumeOffset: 0, responseBody: null, insecure: false, caFile: null, allowDowngrade: false, fromHook: false, speed: null,
    createdAt: 0, startedAt: null, finishedAt: null, claim: 0, partPath: null, partId: null, partBoot: null, maxSize: null, proxy: null,
    netrcFile: null, cookiesFile: null, skipExisting: false, ifChanged: false, checksums: null, maxAttempts: null, outcome: null,
    protocol: null, limitRate: null, split: null, segments: null, ...p,
  };
}
const good = { ok: true, reason: null };
const bad = { ok: false, reason: 'on battery power' };
const slots = (over: Partial<Parameters<typeof schedule>[1]> = {}) => ({ running: 0, runningByOrigin: new Map(), maxConcurrent: 8, perHost: 6, ...over });

describe('scheduler', () => {
  it('orders by priority, then age', () => {
    const a = task({ priority: 'low' });
    const b = task();
    const c = task({ priority: 'high' });
    const d = task();
    expect(orderCandidates([a, b, c, d]).map((t) => t.id)).toEqual([c.id, b.id, d.id, a.id]);
  });
  it('puts discretionary tasks after ordinary ones, smallest expected first', () => {
    const big = task({ discretionary: true, expectReceive: 5e9 });
    const unknown = task({ discretionary: true });
    const small = task({ discretionary: true, expectReceive: 1000 });
    const plain = task();
    expect(orderCandidates([big, unknown, small, plain]).map((t) => t.id)).toEqual([plain.id, small.id, big.id, unknown.id]);
  });
  it('respects maxConcurrent', () => {
    const ts = Array.from({ length: 10 }, (_, i) => task({ url: `http://h${i}.test/` }));
    expect(schedule(ts, slots({ maxConcurrent: 3, running: 1 }), good).start).toHaveLength(2);
  });
  it('respects perHost per origin and fills other hosts', () => {
    const same = Array.from({ length: 5 }, () => task({ url: 'http://one.test/f' }));
    const other = task({ url: 'http://two.test/f' });
    const d = schedule([...same, other], slots({ perHost: 2, runningByOrigin: new Map([['http://one.test', 1]]), running: 1 }), good);
    expect(d.start.map((t) => t.id)).toEqual([same[0]!.id, other.id]);
  });
  it('holds discretionary tasks when conditions are bad and says why', () => {
    const disc = task({ discretionary: true });
    const plain = task();
    const d = schedule([disc, plain], slots(), bad);
    expect(d.start.map((t) => t.id)).toEqual([plain.id]);
    expect(d.hold).toEqual([{ id: disc.id, reason: 'conditions', detail: 'on battery power' }]);
  });
  it('does not rewrite a hold that is already recorded, and releases it when conditions turn good', () => {
    const held = task({ discretionary: true, waitReason: 'conditions', waitDetail: 'on battery power' });
    expect(schedule([held], slots(), bad).hold).toEqual([]);
    const d = schedule([held], slots(), good);
    expect(d.release).toEqual([held.id]);
    expect(d.start.map((t) => t.id)).toEqual([held.id]);
  });
  it('decides the same when told the origins and allowed to stop early', () => {
    // A fixed pseudo-random sequence: candidates over a few origins, various running counts and limits.
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    for (let round = 0; round < 300; round++) {
      const hosts = 1 + rnd(4);
      const ts = Array.from({ length: rnd(40) }, () => task({ url: `http://h${rnd(hosts)}.test/f`, priority: (['low', 'normal', 'high'] as const)[rnd(3)] }));
      const runningByOrigin = new Map<string, number>();
      for (let h = 0; h < hosts; h++) if (rnd(2)) runningByOrigin.set(`http://h${h}.test`, rnd(5));
      const s = slots({ maxConcurrent: 1 + rnd(12), perHost: 1 + rnd(6), runningByOrigin, running: [...runningByOrigin.values()].reduce((a, b) => a + b, 0) });
      // Room behind busy connections for some origins, for GET downloads only.
      if (rnd(2)) s.behind = { room: new Map(Array.from({ length: hosts }, (_, h) => [`http://h${h}.test`, rnd(3)])), fits: (t) => t.kind === 'download' && t.method === 'GET' };
      for (const t of ts) if (rnd(4) === 0) t.method = 'PUT';
      // The origins given may hold more than the candidates have (tasks taken since the window was read).
      const origins = new Set([...ts.map((t) => new URL(t.url).origin), 'http://gone.test']);
      expect(schedule(ts, s, good, { origins })).toEqual(schedule(ts, s, good));
      expect(schedule(orderCandidates(ts), s, good, { origins, ordered: true })).toEqual(schedule(ts, s, good));
    }
  });
  it('starts tasks behind busy connections once the origin is at perHost: as many as there is room, those that fit, below maxConcurrent', () => {
    const put = task({ url: 'http://one.test/p', method: 'PUT' });
    const one = Array.from({ length: 6 }, () => task({ url: 'http://one.test/f' }));
    const late = task({ url: 'http://one.test/q', method: 'PUT' });
    const behind = { room: new Map([['http://one.test', 3]]), fits: (t: { method: string }) => t.method === 'GET' };
    const d = schedule([put, ...one, late], slots({ perHost: 2, maxConcurrent: 8, behind }), good);
    // The first two get connections (perHost 2); then GETs go behind, three of them; a PUT never does.
    expect(d.start.map((t) => t.id)).toEqual([put.id, one[0]!.id]);
    expect(d.behind.map((t) => t.id)).toEqual([one[1]!.id, one[2]!.id, one[3]!.id]);
    // At maxConcurrent nothing starts, not even behind another.
    const full = schedule(one, slots({ perHost: 2, maxConcurrent: 2, running: 2, runningByOrigin: new Map([['http://one.test', 2]]), behind }), good);
    expect([full.start, full.behind]).toEqual([[], []]);
    // Below perHost a task gets a connection of its own, whatever the room.
    const free = schedule(one.slice(0, 1), slots({ behind }), good);
    expect([free.start.length, free.behind.length]).toEqual([1, 0]);
  });
  it('stops early: once every origin is at perHost, what follows is not looked at', () => {
    const one = Array.from({ length: 3 }, () => task({ url: 'http://one.test/f' }));
    // A later candidate the pass never reaches: reading its URL throws.
    const unseen = { ...task({ url: 'http://one.test/g' }), get url(): string { throw new Error('looked at'); } };
    const d = schedule([...one, unseen], slots({ perHost: 2 }), good, { origins: new Set(['http://one.test']) });
    expect(d.start.map((t) => t.id)).toEqual([one[0]!.id, one[1]!.id]);
  });
});

describe('transfersCounted', () => {
  const tasks = (moving: number, placing: number) => [
    ...Array.from({ length: moving }, () => ({ placing: false })),
    ...Array.from({ length: 5 }, () => ({ placing: false, behind: true })),
    ...Array.from({ length: placing }, () => ({ placing: true })),
  ];
  it.each([
    // moving, placing, maxConcurrent, counted
    [0, 0, 8, 0],
    [6, 0, 8, 6],
    [6, 3, 8, 6],
    [8, 8, 8, 8],
    // Up to PLACING_PER_SLOT (16) placing per slot of maxConcurrent leave their slot; more count again.
    [8, 128, 8, 8],
    [8, 129, 8, 9],
    [1, 17, 2, 1],
    [1, 33, 2, 2],
    [1, 40, 2, 9],
    // …and never more than PLACING_MAX (4000) in all.
    [1000, 4000, 1000, 1000],
    [1000, 4001, 1000, 1001],
  ])('%i moving and %i placing with maxConcurrent %i count as %i', (moving, placing, max, counted) => {
    expect(transfersCounted(tasks(moving, placing), max)).toBe(counted);
  });
});
