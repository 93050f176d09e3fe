// The log file (`bgdl log`): one line per worker decision, attempt, error and hook run, tagged with
// the session. Created 0600; credentials are redacted before anything is written.

import fs from 'node:fs';
import { logPath } from './paths.js';
import { redactText } from './redact.js';

const MAX_LOG_BYTES = 20 * 1024 * 1024;

export class Logger {
  private readonly file: string;
  private writes = 0;

  constructor(home: string, private readonly echo = process.env.BGDL_DEBUG === '1') {
    this.file = logPath(home);
  }

  /** `scope` is a session name or `worker`. */
  write(scope: string, message: string): void {
    const text = redactText(message).replace(/\r?\n/g, '\n    ');
    const line = `${new Date().toISOString()} [${scope}] ${text}\n`;
    try {
      if (++this.writes % 500 === 0) this.rotate();
      fs.appendFileSync(this.file, line, { mode: 0o600 });
    } catch {
      // The log is best effort: a full disk must not stop transfers.
    }
    if (this.echo) process.stderr.write(line);
  }

  private rotate(): void {
    try {
      if (fs.statSync(this.file).size > MAX_LOG_BYTES) fs.renameSync(this.file, `${this.file}.1`);
    } catch {
      /* no log yet */
    }
  }
}
