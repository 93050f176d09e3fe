// The log file (`bgdl log`): one line per worker decision, attempt, error and hook run, tagged with
// the session. Created 0600; credentials are redacted before anything is written.

import fs from 'node:fs';
import { logPath } from './paths.js';
import { redactText } from './redact.js';

const MAX_LOG_BYTES = 20 * 1024 * 1024;
/**
 * The file stays open between lines (one write each; opening and closing it for every line was
 * three system calls a line, two lines per file of a batch). Every this many lines the name is
 * looked at again: rotated (by this or another process) or removed, the log is opened afresh.
 */
const CHECK_EVERY = 100;

export class Logger {
  private readonly file: string;
  private writes = 0;
  private fd: number | null = null;

  constructor(home: string, private readonly echo = process.env.BGDL_DEBUG === '1') {
    this.file = logPath(home);
  }

  /** `scope` is a session name or `worker`. */
  write(scope: string, message: string): void {
    const text = redactText(message).replace(/\r?\n/g, '\n    ');
    const line = `${new Date().toISOString()} [${scope}] ${text}\n`;
    try {
      if (this.fd === null || ++this.writes % CHECK_EVERY === 0) this.check();
      fs.writeSync(this.fd!, line);
    } catch {
      // The log is best effort: a full disk must not stop transfers.
      this.close();
    }
    if (this.echo) process.stderr.write(line);
  }

  /** Release the file (it is opened again by the next line). */
  close(): void {
    if (this.fd === null) return;
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already closed */
    }
    this.fd = null;
  }

  /** Rotate a log grown past MAX_LOG_BYTES, and open the file at the name unless the open one is it. */
  private check(): void {
    let st = fs.statSync(this.file, { throwIfNoEntry: false });
    if (st && st.size > MAX_LOG_BYTES) {
      fs.renameSync(this.file, `${this.file}.1`);
      st = undefined;
    }
    if (this.fd !== null && st && fs.fstatSync(this.fd).ino === st.ino) return;
    this.close();
    this.fd = fs.openSync(this.file, 'a', 0o600);
  }
}
