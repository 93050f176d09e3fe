import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS } from '../../src/shared/config.js';
import { heartbeatInterval } from '../../src/shared/lease.js';
import { leaveToOthers } from '../../src/worker/attempt.js';
import { formatPartBoot, parsePartBoot, planPart } from '../../src/worker/ownership.js';
import { napLength } from '../../src/worker/worker.js';

const here = { boot: 'boot-A', pid: 100, alive: (pid: number) => pid === 100 || pid === 200 };
const task = (p: Partial<Parameters<typeof planPart>[0]> = {}) => ({
  output: '/d/f.bin', partPath: null, partId: null, partBoot: null, resumeOffset: 0, claim: 7, ...p,
});

describe('planPart: who may touch the partial file', () => {
  const recorded = { partPath: '/d/f.bin.bgdl-part', partId: '1:2' };
  it.each([
    ['no partial file yet', task(), { recorded: null, trustLength: false, copy: false }],
    ['written this boot by a dead worker: adopted in place, every byte kept', task({ ...recorded, partBoot: 'boot-A/300' }), { trustLength: true, copy: false }],
    ['written this boot by a live worker (frozen past its lease): copied', task({ ...recorded, partBoot: 'boot-A/200' }), { trustLength: true, copy: true }],
    ['written this boot by this very worker (an earlier attempt): adopted', task({ ...recorded, partBoot: 'boot-A/100' }), { trustLength: true, copy: false }],
    ['written before a reboot: adopted, only the fsync\'d offset kept', task({ ...recorded, partBoot: 'boot-B/200' }), { trustLength: false, copy: false }],
    ['recorded without a boot: only the fsync\'d offset kept', task({ ...recorded }), { trustLength: false, copy: false }],
    ['written with direct I/O this boot by a dead worker: only the fsync\'d offset kept', task({ ...recorded, partBoot: 'boot-A/300/direct' }), { trustLength: false, copy: false }],
    ['written with direct I/O by a live worker (frozen past its lease): copied, only the fsync\'d offset', task({ ...recorded, partBoot: 'boot-A/200/direct' }), { trustLength: false, copy: true }],
    ['written with direct I/O by this very worker (its writes all ended with that attempt): every byte kept', task({ ...recorded, partBoot: 'boot-A/100/direct' }), { trustLength: true, copy: false }],
  ])('%s', (_name, t, want) => {
    const plan = planPart(t, here);
    expect(plan).toMatchObject({ ...want, tag: '7' });
    if (!('recorded' in want)) expect(plan.recorded).toEqual({ path: '/d/f.bin.bgdl-part', id: '1:2' });
  });

  it('on a shared store, a file written under another boot may be a live host\'s: copied, only the fsync\'d offset kept', () => {
    const shared = { ...here, shared: true };
    expect(planPart(task({ ...recorded, partBoot: 'boot-B/200' }), shared)).toMatchObject({ trustLength: false, copy: true });
    expect(planPart(task({ ...recorded, partBoot: 'boot-A/300' }), shared)).toMatchObject({ trustLength: true, copy: false });
    expect(planPart(task({ ...recorded }), shared)).toMatchObject({ trustLength: false, copy: false });
  });

  it('a task stored by an older bgdl (no recorded file, a resume offset) owns <output>.bgdl-part by name', () => {
    expect(planPart(task({ resumeOffset: 500 }), here)).toMatchObject({ recorded: { path: '/d/f.bin.bgdl-part', id: null }, trustLength: false, copy: false });
    expect(planPart(task({ output: null, resumeOffset: 500 }), here).recorded).toBeNull();
  });

  it('part_boot round-trips, and a malformed one is no owner', () => {
    expect(parsePartBoot(formatPartBoot('0f1e-2d3c', 4242))).toEqual({ boot: '0f1e-2d3c', pid: 4242, direct: false });
    expect(parsePartBoot(formatPartBoot('0f1e-2d3c', 4242, true))).toEqual({ boot: '0f1e-2d3c', pid: 4242, direct: true });
    expect(parsePartBoot('nonsense')).toBeNull();
    expect(parsePartBoot(null)).toBeNull();
  });
});

describe('leaveToOthers: a host that cannot write a directory leaves the task to the others', () => {
  it.each([
    [true, 'E_DEST', false, true],
    [true, 'E_DEST', true, false],
    [false, 'E_DEST', false, false],
    [true, 'E_HTTP_STATUS', false, false],
  ])('shared %s, %s, directory writable %s: leave %s', (shared, code, writable, leave) => expect(leaveToOthers(shared, code, writable)).toBe(leave));
});

describe('leaseTimeout', () => {
  it('defaults to 30s and takes 1s to 1d', () => {
    const spec = CONFIG_KEYS.leaseTimeout;
    expect(spec.parse(spec.defaultText(), 'leaseTimeout')).toBe(30_000);
    expect(spec.parse('2s', 'leaseTimeout')).toBe(2000);
    expect(() => spec.parse('500ms', 'leaseTimeout')).toThrow(/1s to 1d/);
    expect(() => spec.parse('2d', 'leaseTimeout')).toThrow(/1s to 1d/);
  });

  it('heartbeats come a few times within it, every 2 s at most', () => {
    expect(heartbeatInterval(30_000)).toBe(2000);
    expect(heartbeatInterval(2000)).toBe(500);
    expect(heartbeatInterval(1000)).toBe(250);
  });
});

describe('napLength: the worker never sleeps through a heartbeat', () => {
  it.each([
    ['idle, nothing due: a second', { now: 0, busy: false, nextWake: null, heartbeatDue: 2000 }, 1000],
    ['transfers running: a quarter second', { now: 0, busy: true, nextWake: null, heartbeatDue: 2000 }, 250],
    ['a begin-at comes first', { now: 0, busy: false, nextWake: 400, heartbeatDue: 2000 }, 400],
    ['a short lease: the heartbeat comes first', { now: 0, busy: false, nextWake: null, heartbeatDue: 250 }, 250],
    ['a heartbeat overdue: no sleep', { now: 500, busy: false, nextWake: null, heartbeatDue: 250 }, 0],
  ])('%s', (_name, input, want) => {
    expect(napLength(input)).toBe(want);
  });
});
