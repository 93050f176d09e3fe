// Which boot of this machine we run in: bytes a crashed process wrote are still in the file when the
// machine has not rebooted since (the page cache survives a process), not after a reboot.

import fs from 'node:fs';
import os from 'node:os';
import { childProcess } from './builtins.js';

let cached: string | null = null;

/**
 * An identifier of the current boot: Linux's random boot id, macOS's boot session UUID, else the boot
 * time to the minute (which may differ from one call site to the next only near a minute boundary:
 * then a resume trusts less than it could, never more).
 */
export function bootId(): string {
  if (cached) return cached;
  cached = linuxBootId() ?? macBootId() ?? `boot-time-${Math.round((Date.now() / 1000 - os.uptime()) / 60)}`;
  return cached;
}

function linuxBootId(): string | null {
  try {
    const id = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return id || null;
  } catch {
    return null;
  }
}

function macBootId(): string | null {
  if (process.platform !== 'darwin') return null;
  try {
    // On Linux the boot id is a file: node:child_process is loaded only here.
    const id = childProcess().execFileSync('/usr/sbin/sysctl', ['-n', 'kern.bootsessionuuid'], { encoding: 'utf8', timeout: 2000 }).trim();
    return id || null;
  } catch {
    return null;
  }
}
