// Where state lives: BGDL_HOME (default $XDG_DATA_HOME/bgdl) holds the store, the log and hook files.

import os from 'node:os';
import path from 'node:path';

export function bgdlHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BGDL_HOME) return path.resolve(env.BGDL_HOME);
  const data = env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(data, 'bgdl');
}

export const storePath = (home: string): string => path.join(home, 'bgdl.db');
export const logPath = (home: string): string => path.join(home, 'bgdl.log');
export const hookDir = (home: string): string => path.join(home, 'hooks');

/** The partial file beside a destination, so the final rename stays on one filesystem. */
export const partPathFor = (output: string): string => `${output}.bgdl-part`;

export const DEFAULT_SESSION = 'default';
