// File names for downloads: what the server suggests (Content-Disposition, the URL's last segment),
// reduced to a safe base name, and the numbered alternatives a derived name takes instead of clobbering.

import fs from 'node:fs';
import path from 'node:path';
import { partPathFor } from '../shared/paths.js';
import { TUNING } from './tuning.js';
import { TransferError } from './types.js';

/** Longest name we produce, in bytes of UTF-8 (filesystems allow 255; leave room for `.N` and `.bgdl-part`). */
const MAX_NAME_BYTES = 200;
/** Extensions kept whole when a name is numbered or shortened. */
const DOUBLE_EXTENSIONS = ['.tar.gz', '.tar.bz2', '.tar.xz', '.tar.zst'];
/** An extension longer than this is treated as part of the stem when shortening. */
const MAX_EXTENSION_BYTES = 32;
const WINDOWS_DEVICE = /^(con|prn|aux|nul|com[1-9]|lpt[1-9])$/i;
/** The partial-file suffix (see partPathFor): a server-chosen name never ends in it, in any case. */
const PART_SUFFIX = /(\.bgdl-part)+$/i;

/**
 * The filename a Content-Disposition header suggests, raw (not yet made safe): `filename*`
 * (RFC 5987 `charset'lang'percent-encoded`) is preferred over `filename` (quoted or token).
 */
export function parseContentDisposition(header: string | null): string | null {
  if (!header) return null;
  const params = new Map<string, string>();
  const re = /;\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)/g;
  for (let m = re.exec(header); m; m = re.exec(header)) {
    const name = m[1]!.toLowerCase();
    let value = m[2]!.trim();
    if (value.startsWith('"')) value = value.slice(1, -1).replace(/\\(.)/g, '$1');
    if (!params.has(name)) params.set(name, value);
  }
  const extended = params.get('filename*');
  if (extended != null) {
    const decoded = decodeExtValue(extended);
    if (decoded != null) return decoded;
  }
  const plain = params.get('filename');
  return plain == null ? null : latin1AsUtf8(plain);
}

/** RFC 5987 ext-value: `UTF-8''%e2%82%ac%20rates`; ISO-8859-1 is the other charset allowed. */
function decodeExtValue(value: string): string | null {
  const m = /^([^']*)'[^']*'(.*)$/.exec(value);
  if (!m) return null;
  const charset = m[1]!.toLowerCase();
  const bytes: number[] = [];
  const text = m[2]!;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '%') {
      const hex = text.slice(i + 1, i + 3);
      if (!/^[0-9a-f]{2}$/i.test(hex)) return null;
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(text[i]!, 'utf8'));
    }
  }
  const buf = Buffer.from(bytes);
  if (charset === 'iso-8859-1') return buf.toString('latin1');
  if (charset !== 'utf-8' && charset !== 'utf8') return null;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    return null;
  }
}

/** HTTP header values arrive as latin1; servers often put raw UTF-8 in `filename="…"`. */
function latin1AsUtf8(value: string): string {
  if (!/[\x80-\xff]/.test(value) || /[^\x00-\xff]/.test(value)) return value;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(value, 'latin1'));
  } catch {
    return value;
  }
}

/**
 * Reduce a server-chosen name to a safe base name: no directory part, no control characters,
 * never hidden, never a partial file's name (`.bgdl-part` is dropped from its end), no Windows device
 * names, at most 200 bytes. null when nothing usable is left.
 */
export function safeBaseName(raw: string): string | null {
  // Control characters (C0, DEL, C1) and the bidirectional overrides that can disguise an extension.
  let name = raw.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, '');
  name = name.slice(Math.max(name.lastIndexOf('/'), name.lastIndexOf('\\')) + 1);
  for (let prev = ''; prev !== name; ) {
    prev = name;
    name = name.replace(/^[.\s]+/, '').replace(/[.\s]+$/, '').replace(PART_SUFFIX, '');
  }
  if (name === '') return null;
  if (WINDOWS_DEVICE.test(name.split('.')[0]!.trim())) name = `_${name}`;
  const bounded = boundLength(name);
  // Shortening can bring a `.bgdl-part` from the middle to the end: reduce that name again.
  return PART_SUFFIX.test(bounded) ? safeBaseName(bounded.replace(PART_SUFFIX, '')) : bounded;
}

/** `stem` + `ext`, where `ext` is a known double extension, else from the last dot (a leading dot is not one). */
function splitExtension(name: string): { stem: string; ext: string } {
  const lower = name.toLowerCase();
  const double = DOUBLE_EXTENSIONS.find((e) => lower.endsWith(e) && lower.length > e.length);
  const dot = double ? name.length - double.length : name.lastIndexOf('.');
  if (dot <= 0) return { stem: name, ext: '' };
  return { stem: name.slice(0, dot), ext: name.slice(dot) };
}

function boundLength(name: string): string {
  if (Buffer.byteLength(name) <= MAX_NAME_BYTES) return name;
  let { stem, ext } = splitExtension(name);
  if (Buffer.byteLength(ext) > MAX_EXTENSION_BYTES) {
    stem = name;
    ext = '';
  }
  let budget = MAX_NAME_BYTES - Buffer.byteLength(ext);
  let cut = '';
  for (const ch of stem) {
    const size = Buffer.byteLength(ch);
    if (size > budget) break;
    cut += ch;
    budget -= size;
  }
  return cut.replace(/[.\s]+$/, '') + ext;
}

/** The name to save a response under: Content-Disposition, else the final URL's last path segment, else index.html. */
export function nameFromResponse(dispositionName: string | null, finalUrl: string): string {
  const fromHeader = dispositionName == null ? null : safeBaseName(dispositionName);
  if (fromHeader) return fromHeader;
  let segment = '';
  try {
    const pathname = new URL(finalUrl).pathname;
    segment = pathname.slice(pathname.lastIndexOf('/') + 1);
  } catch {
    /* not a URL: fall through */
  }
  try {
    segment = decodeURIComponent(segment);
  } catch {
    /* malformed escapes: use the segment as it is */
  }
  return safeBaseName(segment) ?? 'index.html';
}

/** `name.1.ext`, `name.2.ext`, …; `archive.tar.gz` → `archive.1.tar.gz`; no extension → `name.1`. */
export function numberedName(name: string, n: number): string {
  const { stem, ext } = splitExtension(name);
  return `${stem}.${n}${ext}`;
}

/**
 * A look in the directory: synchronous, like the realpath beside it. The usual answer is "no such
 * file", which the asynchronous lstat paid for with a trip through the thread pool (queued behind
 * other files' fsyncs) and an Error with its stack: for a batch of small files, the largest cost of
 * choosing a name.
 */
const exists = (p: string): boolean => {
  try {
    return fs.lstatSync(p, { throwIfNoEntry: false }) !== undefined;
  } catch (err) {
    throw new TransferError('E_DEST', `cannot write ${p}: ${(err as Error).message}`, false);
  }
};

/** Real paths of directories lately named in, and when each was looked up (TUNING.realDirReuseMs). */
const realDirs = new Map<string, { real: string; at: number }>();

function realDirOf(dir: string): string {
  const now = performance.now();
  const known = realDirs.get(dir);
  if (known && now - known.at < TUNING.realDirReuseMs) return known.real;
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch (err) {
    throw new TransferError('E_DEST', `cannot write in ${dir}: ${(err as Error).message}`, false);
  }
  if (realDirs.size >= 256) realDirs.clear();
  realDirs.set(dir, { real, at: now });
  return real;
}

/**
 * The first of `dir/name`, `dir/name.1.ext`, … that does not exist (a dangling symlink counts),
 * has no partial file, and is not in `taken`. The result always lies directly inside the real `dir`.
 */
export async function pickFreePath(dir: string, name: string, taken: Pick<ReadonlySet<string>, 'has'>): Promise<string> {
  const realDir = realDirOf(dir);
  const absDir = path.resolve(dir);
  for (let n = 0; n < 100_000; n++) {
    const candidate = n === 0 ? name : numberedName(name, n);
    if (path.dirname(path.join(realDir, candidate)) !== realDir || candidate === '.' || candidate === '..' || candidate.includes('\\')) {
      throw new TransferError('E_UNSAFE_NAME', `refusing the file name '${candidate}': it leaves ${dir}`, false);
    }
    const chosen = path.join(absDir, candidate);
    if (taken.has(chosen) || taken.has(path.join(realDir, candidate))) continue;
    if (exists(chosen)) continue;
    if (exists(partPathFor(chosen))) continue;
    return chosen;
  }
  throw new TransferError('E_DEST', `no free file name for ${name} in ${dir}`, false);
}
