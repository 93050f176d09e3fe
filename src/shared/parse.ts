// Parsing of what people type: sizes, durations, times, headers, URLs, names. Pure functions that
// throw UsageError with a message that says what was wrong and what is accepted.

import { UsageError } from './errors.js';
import { PRIORITIES, type Header, type Priority } from './model.js';
import { isCredentialHeader, redactUrl } from './redact.js';
import { printable } from './text.js';

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4,
};

/** `500K`, `2MB`, `1GiB`, `1234` → bytes. K/M/G are 1000s, KiB/MiB/GiB 1024s. */
export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new UsageError(`invalid ${what} '${text}': use a number of bytes with an optional unit (500K, 2MB, 1GiB)`);
  }
  const n = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(n)) throw new UsageError(`invalid ${what} '${text}': too large`);
  return n;
}

/** A free-space reserve: a size, a percentage of the filesystem, or both (the smaller applies). */
export interface FreeSpaceRule {
  bytes: number | null;
  percent: number | null;
}

/** `256MiB`, `5%`, `1%,256MiB` (the smaller of the two), `0` (no reserve). */
export function parseFreeSpace(text: string, what = 'free-space reserve'): FreeSpaceRule {
  const rule: FreeSpaceRule = { bytes: null, percent: null };
  const terms = text.split(',');
  const bad = (why: string) => new UsageError(`invalid ${what} '${text}': ${why}`);
  if (terms.length > 2) throw bad('use a size (256MiB), a percentage of the filesystem (5%), or one of each (1%,256MiB)');
  for (const raw of terms) {
    const term = raw.trim();
    const pct = /^(\d+(?:\.\d+)?)\s*%$/.exec(term);
    if (pct) {
      if (rule.percent != null || Number(pct[1]) > 100) throw bad('a percentage is at most 100%, given once');
      rule.percent = Number(pct[1]);
    } else {
      if (rule.bytes != null || term === '') throw bad('use a size (256MiB), a percentage of the filesystem (5%), or one of each (1%,256MiB)');
      rule.bytes = parseSize(term, what);
    }
  }
  return rule;
}

/** The bytes a rule keeps free on a filesystem of `totalBytes`. */
export function reserveBytes(rule: FreeSpaceRule, totalBytes: number): number {
  const pct = rule.percent == null ? Infinity : Math.ceil((totalBytes * rule.percent) / 100);
  return Math.min(pct, rule.bytes ?? Infinity);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * The longest duration any option or key takes: 100 years (36525d). Anything longer is a typo, and
 * a time that far ahead would not even be a date (`new Date` ends in the year 275760).
 */
export const MAX_DURATION_MS = 36_525 * 86_400_000;

/** The milliseconds `text` says (not yet bounded), or null when it is not a duration. */
function durationMs(text: string): number | null {
  const s = text.trim().toLowerCase();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    matched = re.lastIndex;
  }
  return s === '' || matched !== s.length ? null : total;
}

/** `250ms`, `90s`, `15m`, `1h`, `2d`, or combinations such as `1h30m` → milliseconds. A bare number is seconds. */
export function parseDuration(text: string, what = 'duration'): number {
  const ms = durationMs(text);
  if (ms == null) throw new UsageError(`invalid ${what} '${text}': use a number with ms, s, m, h or d (90s, 15m, 1h30m)`);
  if (!(ms <= MAX_DURATION_MS)) throw new UsageError(`invalid ${what} '${text}': at most 36525d (100 years)`);
  return Math.round(ms);
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  let s = Math.round(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60]] as const) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  if (s || parts.length === 0) parts.push(`${s}s`);
  return parts.join('');
}

const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3})\d*)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$/i;

/**
 * `--begin-at WHEN`: an ISO 8601 time (local time when it has no zone) or a delay from now
 * (`90s`, `15m`, `1h`, `2d`). Returns epoch milliseconds.
 */
export function parseWhen(text: string, now: number): number {
  const s = text.trim();
  const m = ISO_RE.exec(s);
  if (m) {
    const [, y, mo, d, h = '0', mi = '0', sec = '0', frac = '0', zone] = m;
    const parts = [Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(sec), Number(frac.padEnd(3, '0'))] as const;
    let ms: number;
    if (zone) {
      ms = Date.UTC(...parts);
      if (zone.toUpperCase() !== 'Z') {
        const z = /([+-])(\d{2}):?(\d{2})/.exec(zone)!;
        const offset = (Number(z[2]) * 60 + Number(z[3])) * 60_000;
        ms -= z[1] === '+' ? offset : -offset;
      }
    } else {
      ms = new Date(...parts).getTime();
    }
    const check = new Date(Date.UTC(parts[0], parts[1], parts[2]));
    if (Number.isNaN(ms) || check.getUTCMonth() !== parts[1] || check.getUTCDate() !== parts[2] || parts[3] > 23 || parts[4] > 59 || parts[5] > 59) {
      throw new UsageError(`invalid time '${text}': not a real date and time`);
    }
    if (ms - now > MAX_DURATION_MS) throw new UsageError(`invalid time '${text}': at most 100 years from now`);
    return ms;
  }
  const delay = durationMs(s);
  if (delay == null) throw new UsageError(`invalid time '${text}': use an ISO 8601 time (2026-05-01T02:00, 2026-05-01T02:00Z) or a delay (90s, 15m, 1h, 2d)`);
  if (!(delay <= MAX_DURATION_MS)) throw new UsageError(`invalid time '${text}': a delay of at most 36525d (100 years)`);
  return now + Math.round(delay);
}

const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Control characters other than TAB: never valid in a header (CR/LF would inject another one). */
const HEADER_CONTROL_RE = /[\x00-\x08\x0a-\x1f\x7f]/;

/** A refused header as an error message shows it: one line, a credential's value as ***. */
function shownHeader(text: string): string {
  const i = text.indexOf(':');
  const secret = i > 0 && isCredentialHeader(text.slice(0, i));
  return printable(secret ? `${text.slice(0, i)}: ***` : text);
}

/** `-H 'Name: value'`: a valid header name; no CR, LF, NUL or other control character; a value HTTP can carry. */
export function parseHeader(text: string): Header {
  if (HEADER_CONTROL_RE.test(text)) {
    throw new UsageError(`invalid header '${shownHeader(text)}': headers must not contain CR, LF, NUL or other control characters`);
  }
  const i = text.indexOf(':');
  const name = i > 0 ? text.slice(0, i).trim() : '';
  if (i <= 0 || !TOKEN_RE.test(name)) {
    throw new UsageError(`invalid header '${shownHeader(text)}': use 'Name: value' with a name made of letters, digits and -`);
  }
  const value = text.slice(i + 1).trim();
  if (/[^\x00-\xff]/.test(value)) {
    throw new UsageError(`invalid header '${shownHeader(text)}': a header value can only hold ASCII and Latin-1 characters`);
  }
  return [name, value];
}

/** A download or upload URL: absolute, http or https, with a host. Returns the normalized URL. */
export function parseHttpUrl(text: string): string {
  let u: URL;
  try {
    u = new URL(text.trim());
  } catch {
    throw new UsageError(`invalid URL '${redactUrl(text)}': give an absolute http:// or https:// URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new UsageError(`unsupported URL scheme '${u.protocol.replace(/:$/, '')}' in '${redactUrl(text)}': only http and https are supported`);
  }
  if (!u.hostname) throw new UsageError(`invalid URL '${redactUrl(text)}': it has no host`);
  return u.href;
}

export function parsePriority(text: string): Priority {
  const p = text.toLowerCase();
  if (!(PRIORITIES as readonly string[]).includes(p)) {
    throw new UsageError(`unknown priority '${text}': use low, normal or high`);
  }
  return p as Priority;
}

export function parseMethod(text: string): string {
  const m = text.toUpperCase();
  if (!TOKEN_RE.test(m)) throw new UsageError(`invalid method '${text}': use an HTTP method such as GET or POST`);
  if (m === 'CONNECT' || m === 'TRACE') throw new UsageError(`method '${m}' cannot be used for a transfer`);
  return m;
}

export function parseSha256(text: string): string {
  const h = text.trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(h)) throw new UsageError(`invalid --sha256 '${text}': give 64 hexadecimal digits`);
  return h;
}

/** Session names become part of file names and log lines, so keep them plain. */
export function parseSessionName(text: string): string {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(text)) {
    throw new UsageError(`invalid session name '${text}': use up to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'`);
  }
  return text;
}

export function parseTaskId(text: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || !Number.isSafeInteger(Number(text))) {
    throw new UsageError(`invalid task id '${text}': task ids are positive integers (see bgdl status)`);
  }
  return Number(text);
}

/** `01:00-06:00` (may wrap midnight). Returns minutes since midnight. */
export function parseWindow(text: string): { start: number; end: number } {
  const m = /^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$/.exec(text.trim());
  if (!m || +m[1]! > 23 || +m[2]! > 59 || +m[3]! > 24 || +m[4]! > 59 || (+m[3]! === 24 && +m[4]! !== 0)) {
    throw new UsageError(`invalid window '${text}': use HH:MM-HH:MM in local time, e.g. 01:00-06:00`);
  }
  return { start: +m[1]! * 60 + +m[2]!, end: +m[3]! * 60 + +m[4]! };
}

export function formatBytes(n: number | null | undefined): string {
  if (n == null) return '-';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}
