// .netrc: the credentials file curl (--netrc-optional) and wget read. Parsed when a transfer starts,
// never stored in the task (only the file's path is), and looked up per request host. Pure functions
// plus one reader that refuses a file others can read.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface NetrcEntry {
  /** The machine name (lowercase), or null for the `default` entry. */
  machine: string | null;
  login: string | null;
  password: string | null;
}

/**
 * Tokens separated by white space; a value may be double-quoted with `\"`, `\\`, `\n`, `\r`, `\t`
 * escapes (as curl reads them). `#` at the start of a keyword position comments out the rest of the
 * line; `macdef NAME` skips its macro body up to the next blank line.
 */
export function parseNetrc(text: string): NetrcEntry[] {
  const entries: NetrcEntry[] = [];
  let current: NetrcEntry | null = null;
  let i = 0;
  const n = text.length;
  const skipSpace = () => {
    while (i < n && /\s/.test(text[i]!)) i++;
  };
  const token = (): string | null => {
    skipSpace();
    if (i >= n) return null;
    if (text[i] === '"') {
      i++;
      let out = '';
      while (i < n && text[i] !== '"') {
        const c = text[i++]!;
        if (c === '\\' && i < n) {
          const e = text[i++]!;
          out += e === 'n' ? '\n' : e === 'r' ? '\r' : e === 't' ? '\t' : e;
        } else out += c;
      }
      i++; // the closing quote
      return out;
    }
    const start = i;
    while (i < n && !/\s/.test(text[i]!)) i++;
    return text.slice(start, i);
  };
  for (;;) {
    skipSpace();
    if (i >= n) break;
    if (text[i] === '#') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    const keyword = token();
    if (keyword == null) break;
    switch (keyword) {
      case 'machine':
        current = { machine: (token() ?? '').toLowerCase(), login: null, password: null };
        entries.push(current);
        break;
      case 'default':
        current = { machine: null, login: null, password: null };
        entries.push(current);
        break;
      case 'login':
        if (current) current.login = token();
        else token();
        break;
      case 'password':
        if (current) current.password = token();
        else token();
        break;
      case 'account':
        token();
        break;
      case 'macdef': {
        token();
        const end = text.indexOf('\n\n', i);
        i = end === -1 ? n : end + 2;
        break;
      }
      default:
        // Unknown words are skipped, as curl and wget do.
        break;
    }
  }
  return entries;
}

/**
 * The credentials for `host`: the first `machine` with that name, else the `default` entry. With
 * `login` (a URL that names the user but no password), only an entry for that login counts.
 */
export function netrcLookup(entries: NetrcEntry[], host: string, login?: string): NetrcEntry | null {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  const usable = (e: NetrcEntry) => (login === undefined ? e.login != null || e.password != null : e.login === login);
  return entries.find((e) => e.machine === h && usable(e)) ?? entries.find((e) => e.machine == null && usable(e)) ?? null;
}

/** The netrc file a command would read: `--netrc-file` (explicit: it must exist), else `NETRC`, else `~/.netrc`. */
export function netrcPath(env: NodeJS.ProcessEnv, flag: string | undefined, cwd: string): { file: string; explicit: boolean } {
  if (flag !== undefined) return { file: path.resolve(cwd, flag), explicit: true };
  // NETRC, like ~/.netrc, is optional: a missing file means no credentials.
  if (env.NETRC) return { file: path.resolve(cwd, env.NETRC), explicit: false };
  return { file: path.join(env.HOME || os.homedir(), '.netrc'), explicit: false };
}

/** Why a netrc file cannot be used (not a regular file, readable by group or others), or null when it can. */
export function netrcProblem(st: fs.Stats): string | null {
  if (!st.isFile()) return 'not a regular file';
  if ((st.mode & 0o077) !== 0) return `readable or writable by others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}): run chmod 600 on it`;
  return null;
}

/**
 * Read and parse a netrc file for a transfer. A missing file gives no credentials; a file that others
 * can read or write is refused (an Error saying so), as the credentials in it may already be known.
 */
export function readNetrc(file: string): NetrcEntry[] {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return [];
    throw new Error(`cannot read netrc file ${file}: ${code ?? (err as Error).message}`);
  }
  try {
    const problem = netrcProblem(fs.fstatSync(fd));
    if (problem) throw new Error(`netrc file ${file} not used: ${problem}`);
    return parseNetrc(fs.readFileSync(fd, 'utf8'));
  } finally {
    fs.closeSync(fd);
  }
}
