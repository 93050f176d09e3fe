// Who may touch a task's partial file, decided from what the store recorded with it: the boot and the
// worker pid that last wrote it. Pure: the caller passes this machine's boot id, its own pid and a
// liveness check.

import { recordedPart } from '../shared/files.js';
import type { Task } from '../shared/model.js';
import type { PartPlan } from '../transfer/index.js';

export interface Here {
  boot: string;
  pid: number;
  alive(pid: number): boolean;
  /**
   * The store is shared by the workers of several hosts: a file written under another boot id may be
   * another host's, whose worker (frozen past its lease) may still write to it.
   */
  shared?: boolean;
}

/**
 * `part_boot` as stored: the boot id and the pid of the worker writing the file, and `/direct` when it
 * writes with direct I/O (several writes at once, finishing in any order).
 */
export function formatPartBoot(boot: string, pid: number, direct = false): string {
  return `${boot}/${pid}${direct ? '/direct' : ''}`;
}

export function parsePartBoot(value: string | null): { boot: string; pid: number; direct: boolean } | null {
  const m = value ? /^(.+)\/(\d+)(\/direct)?$/.exec(value) : null;
  return m ? { boot: m[1]!, pid: Number(m[2]), direct: !!m[3] } : null;
}

/**
 * How this attempt treats its lineage's partial file. Written since this boot: every byte in it is
 * kept (a process crash loses none), else only the fsync'd offset. Written with direct I/O by another
 * process, only the fsync'd offset too: its writes finish in any order, so a writer that died may
 * have left the file longer than the bytes it holds (a later write landed, an earlier one did not).
 * Its last writer provably gone (a dead pid of this boot, a previous boot, this very worker) or
 * unknown (a store of an older bgdl): the file is adopted in place. Its last writer a live process of this boot (a frozen worker whose lease
 * lapsed, say), or on a shared store any writer under another boot (another host's worker, which no
 * pid check here can see): the kept bytes are copied to a fresh file, so that writer cannot reach ours.
 */
export function planPart(t: Pick<Task, 'output' | 'partPath' | 'partId' | 'partBoot' | 'resumeOffset' | 'claim'>, here: Here): PartPlan {
  const recorded = recordedPart(t);
  const tag = String(t.claim);
  if (!recorded) return { recorded: null, trustLength: false, copy: false, tag };
  const owner = parsePartBoot(t.partBoot);
  const sameBoot = !!owner && owner.boot === here.boot;
  const mayStillWrite = sameBoot ? owner!.pid !== here.pid && here.alive(owner!.pid) : !!owner && !!here.shared;
  const trustLength = sameBoot && (!owner!.direct || owner!.pid === here.pid);
  return { recorded, trustLength, copy: mayStillWrite, tag };
}
