// `bgdl add URL… [-i FILE|-]`: validate everything first (bad input changes nothing), then store the
// whole batch in one transaction and make sure a worker runs.

import fs from 'node:fs';
import path from 'node:path';
import { parseChecksums } from '../../shared/checksums.js';
import { loadConfig, parseSplit, positiveCount, positiveSize } from '../../shared/config.js';
import { parseRate } from '../../shared/bandwidth.js';
import { UsageError } from '../../shared/errors.js';
import { readCookieFile } from '../../shared/cookies.js';
import { nonRegularKind } from '../../shared/files.js';
import type { Header, NewTask, Priority, ProxySettings, Task } from '../../shared/model.js';
import { netrcPath, netrcProblem, readNetrc } from '../../shared/netrc.js';
import { proxySettingsFrom } from '../../shared/proxy.js';
import { parseHeader, parseHttpUrl, parseMethod, parsePriority, parseSha256, parseSize, parseWhen } from '../../shared/parse.js';
import { ensureWorker, openStore, sessionName, touchSession, type Ctx } from '../context.js';

export interface AddOptions {
  session?: string;
  output?: string;
  dir?: string;
  inputFile?: string;
  header?: string[];
  method?: string;
  beginAt?: string;
  discretionary?: boolean;
  expectSend?: string;
  expectReceive?: string;
  sha256?: string;
  priority?: string;
  suspended?: boolean;
  insecure?: boolean;
  caFile?: string;
  allowDowngrade?: boolean;
  skipExisting?: boolean;
  ifChanged?: boolean;
  checksums?: string;
  maxAttempts?: string;
  limitRate?: string;
  proxy?: string;
  noproxy?: string;
  netrcFile?: string;
  cookies?: string;
  maxSize?: string;
  split?: string;
}

const MAX_LINE = 64 * 1024;

/** One task a line: `URL` or `URL<whitespace>OUTPUT`; blank lines and `#` comments skipped. */
export function parseInputList(data: Buffer, source: string): { url: string; output: string | null; line: number }[] {
  const out: { url: string; output: string | null; line: number }[] = [];
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let start = 0;
  let lineNo = 0;
  while (start < data.length) {
    let end = data.indexOf(10, start);
    if (end === -1) end = data.length;
    lineNo++;
    const raw = data.subarray(start, end);
    start = end + 1;
    const where = `${source} line ${lineNo}`;
    if (raw.length > MAX_LINE) throw new UsageError(`${where}: longer than 64 KiB; nothing was added`);
    if (raw.includes(0)) throw new UsageError(`${where}: contains a NUL byte; nothing was added`);
    let text: string;
    try {
      text = decoder.decode(raw);
    } catch {
      throw new UsageError(`${where}: not valid UTF-8; nothing was added`);
    }
    text = text.trim();
    if (text === '' || text.startsWith('#')) continue;
    const m = /^(\S+)(?:\s+(.+))?$/.exec(text)!;
    let url: string;
    try {
      url = parseHttpUrl(m[1]!);
    } catch (err) {
      throw new UsageError(`${where}: ${(err as Error).message}; nothing was added`);
    }
    out.push({ url, output: m[2]?.trim() ?? null, line: lineNo });
  }
  return out;
}

async function readInput(file: string, what = 'input file'): Promise<Buffer> {
  if (file === '-') {
    // stdin may be a non-blocking pipe, so read it as a stream rather than with readFileSync(0).
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

const MKDIR_REASONS: Record<string, string> = {
  ENOTDIR: 'a parent is not a directory', EACCES: 'permission denied', EPERM: 'operation not permitted',
  EROFS: 'read-only file system', ENOENT: 'the parent refuses new entries', ENAMETOOLONG: 'the name is too long', ELOOP: 'too many symbolic links',
};
const mkdirError = (dir: string, err: unknown): UsageError => {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  return new UsageError(`cannot create directory ${dir}: ${MKDIR_REASONS[code] ?? code}; choose another directory`);
};

/**
 * Create `dir` and its missing parents, one level at a time. (mkdir's own recursive mode spins for
 * ever where a parent exists but refuses children, as in /proc/1; here that is an error at once.)
 */
export function makeDir(dir: string): void {
  const missing: string[] = [];
  for (let p = path.resolve(dir); ; p = path.dirname(p)) {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw mkdirError(dir, err);
      missing.push(p);
      if (path.dirname(p) === p) break;
      continue;
    }
    if (!st.isDirectory()) throw new UsageError(`cannot create directory ${dir}: ${p} is not a directory`);
    break;
  }
  for (const p of missing.reverse()) {
    try {
      fs.mkdirSync(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && fs.statSync(p).isDirectory()) continue;
      throw mkdirError(dir, err);
    }
  }
}

/**
 * A destination the user named (-o, or an OUTPUT in an -i line) that bgdl can own: not `-` (bgdl
 * writes files, not pipes), not a partial file's name, and, when something already exists there, a
 * regular file (replacing a device, FIFO, socket or directory would be wrong, and as root harmful).
 */
function checkFixedOutput(given: string, resolved: string, where: string): void {
  if (given === '-') {
    throw new UsageError(`${where}'-' is not supported: bgdl writes files, not pipes; name a file and read it when the task completes (bgdl add --wait -o FILE URL && cat FILE)`);
  }
  if (given.endsWith('/')) throw new UsageError(`${where}'${given}' names a directory: use -d DIR for a directory`);
  if (/\.bgdl-part$/i.test(resolved)) throw new UsageError(`${where}${resolved} would be a partial file's name (.bgdl-part is bgdl's own suffix): choose another name`);
  let st: fs.Stats;
  try {
    st = fs.statSync(resolved);
  } catch {
    return; // missing (or unreadable: the worker reports that): nothing to protect
  }
  const kind = nonRegularKind(st);
  if (kind === 'a directory') throw new UsageError(`${where}${resolved} is a directory: use -d ${resolved} to save there under the server's name, or name a file`);
  if (kind) throw new UsageError(`${where}${resolved} is ${kind}, not a regular file: bgdl only replaces regular files; choose another output`);
}

/** Everything about the request that applies to every URL of the command. */
export interface Common {
  session: string;
  method: string;
  headers: Header[];
  beginAt: number | null;
  discretionary: boolean | null;
  expectSend: number | null;
  expectReceive: number | null;
  priority: Priority;
  insecure: boolean;
  caFile: string | null;
  allowDowngrade: boolean;
  fromHook: boolean;
  suspended: boolean;
  limitRate: number | null;
  proxy: ProxySettings | null;
  netrcFile: string | null;
  cookiesFile: string | null;
}

/** The proxy settings of this command (flags over its environment), recorded with its tasks. */
function proxySettings(ctx: Ctx, o: AddOptions): ProxySettings | null {
  try {
    return proxySettingsFrom(ctx.env, { proxy: o.proxy, noproxy: o.noproxy });
  } catch (err) {
    throw new UsageError(`${(err as Error).message}; nothing was added`);
  }
}

/**
 * The netrc file the transfers will read (its path only is stored): `--netrc-file` must exist and be
 * private; `NETRC` or `~/.netrc` is used when it exists, and skipped with a warning when others can read it.
 */
function netrcFileFor(ctx: Ctx, o: AddOptions): string | null {
  const { file, explicit } = netrcPath(ctx.env, o.netrcFile, ctx.cwd);
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!explicit && code === 'ENOENT') return null;
    throw new UsageError(`cannot use --netrc-file ${o.netrcFile ?? file}: ${code === 'ENOENT' ? 'no such file' : code}`);
  }
  const problem = netrcProblem(st);
  if (problem) {
    if (explicit) throw new UsageError(`cannot use --netrc-file ${o.netrcFile}: ${problem}`);
    process.stderr.write(`bgdl: warning: netrc file ${file} not used: ${problem}\n`);
    return null;
  }
  try {
    readNetrc(file);
  } catch (err) {
    if (explicit) throw new UsageError(`cannot use --netrc-file ${o.netrcFile}: ${(err as Error).message}`);
    process.stderr.write(`bgdl: warning: ${(err as Error).message}\n`);
    return null;
  }
  return file;
}

/** `--cookies FILE`: a readable Netscape cookie file (its path only is stored; it is read at each attempt). */
function cookiesFileFor(ctx: Ctx, o: AddOptions): string | null {
  if (o.cookies === undefined) return null;
  const file = path.resolve(ctx.cwd, o.cookies);
  if (!fs.existsSync(file) || !fs.statSync(file).isFile()) throw new UsageError(`cannot use --cookies ${o.cookies}: no such file`);
  let parsed: ReturnType<typeof readCookieFile>;
  try {
    parsed = readCookieFile(file);
  } catch (err) {
    throw new UsageError(`cannot use --cookies ${o.cookies}: ${(err as Error).message}`);
  }
  if (parsed.cookies.length === 0 && parsed.badLines.length > 0) {
    throw new UsageError(
      `--cookies ${o.cookies} line ${parsed.badLines[0]}: not a Netscape cookie line (domain, TRUE/FALSE, path, TRUE/FALSE, expiry, name, value, separated by tabs)`,
    );
  }
  return file;
}

export function parseCommon(ctx: Ctx, o: AddOptions, defaultMethod: string): Common {
  let caFile: string | null = null;
  if (o.caFile) {
    caFile = path.resolve(ctx.cwd, o.caFile);
    try {
      if (!fs.readFileSync(caFile, 'utf8').includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
    } catch (err) {
      throw new UsageError(`cannot use --ca-file ${o.caFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  return {
    session: sessionName(ctx, o.session),
    method: parseMethod(o.method ?? defaultMethod),
    headers: (o.header ?? []).map(parseHeader),
    beginAt: o.beginAt !== undefined ? parseWhen(o.beginAt, Date.now()) : null,
    // Tasks added from inside a hook are discretionary unless --no-discretionary says otherwise.
    discretionary: o.discretionary ?? (ctx.fromHook ? true : null),
    expectSend: o.expectSend !== undefined ? parseSize(o.expectSend, '--expect-send') : null,
    expectReceive: o.expectReceive !== undefined ? parseSize(o.expectReceive, '--expect-receive') : null,
    priority: parsePriority(o.priority ?? 'normal'),
    insecure: !!o.insecure,
    caFile,
    allowDowngrade: !!o.allowDowngrade,
    fromHook: ctx.fromHook,
    suspended: !!o.suspended,
    limitRate: o.limitRate !== undefined ? parseRate(o.limitRate, '--limit-rate') : null,
    proxy: proxySettings(ctx, o),
    netrcFile: netrcFileFor(ctx, o),
    cookiesFile: cookiesFileFor(ctx, o),
  };
}

export async function planAdd(ctx: Ctx, urls: string[], o: AddOptions): Promise<NewTask[]> {
  const common = parseCommon(ctx, o, 'GET');
  if (o.output && o.dir) throw new UsageError('-o and -d cannot be used together: -o names the file, -d the directory for derived names');
  const sha = o.sha256 !== undefined ? parseSha256(o.sha256) : null;
  const maxSize = o.maxSize !== undefined ? positiveSize(o.maxSize, '--max-size') : null;
  const split = o.split !== undefined ? parseSplit(o.split, '--split') : null;
  const items: { url: string; output: string | null; line?: number }[] = urls.map((u) => ({ url: parseHttpUrl(u), output: null }));
  if (o.inputFile !== undefined) items.push(...parseInputList(await readInput(o.inputFile), o.inputFile === '-' ? 'stdin' : o.inputFile));
  if (items.length === 0) throw new UsageError('no URL given: bgdl add URL… or bgdl add -i FILE');
  if (o.output && items.length > 1) throw new UsageError('-o names one file but several URLs were given: use -d DIR for several');
  if (sha && items.length > 1) throw new UsageError('--sha256 applies to one URL but several were given');
  const batch = await parseBatchOptions(ctx, o);
  const baseDir = path.resolve(ctx.cwd, o.dir ?? loadConfig(ctx.env).downloadDir ?? ctx.cwd);
  const source = o.inputFile === '-' ? 'stdin' : o.inputFile;
  /** Fixed destinations of this batch: two of its tasks cannot share one (the store checks the live ones). */
  const seen = new Map<string, number | undefined>();
  return items.map((it) => {
    const given = o.output ?? it.output;
    const fixed = o.output ? path.resolve(ctx.cwd, o.output) : it.output ? path.resolve(baseDir, it.output) : null;
    if (fixed) {
      checkFixedOutput(given!, fixed, it.line !== undefined ? `${source} line ${it.line}: output ` : '-o ');
      if (seen.has(fixed)) {
        const lines = [seen.get(fixed), it.line].filter((n) => n !== undefined).join(' and ');
        throw new UsageError(`output ${fixed} is given twice${lines ? ` (lines ${lines} of ${source})` : ''}: two tasks cannot share a file; nothing was added`);
      }
      seen.set(fixed, it.line);
    }
    // `common` spread last: V8 copies `{ ...common, more }` a hundred times slower (1 s for 100,000
    // URLs); the keys do not overlap, so the order changes nothing else.
    return {
      kind: 'download' as const,
      url: it.url,
      output: fixed,
      outputFixed: fixed != null,
      dir: fixed ? path.dirname(fixed) : baseDir,
      // A known destination takes its --checksums line now (status shows it); a derived one when named.
      sha256Expected: sha ?? (fixed && batch.checksums && Object.hasOwn(batch.checksums, path.basename(fixed)) ? batch.checksums[path.basename(fixed)]! : null),
      skipExisting: batch.skipExisting,
      ifChanged: batch.ifChanged,
      maxAttempts: batch.maxAttempts,
      // Only a derived name needs the whole map (a known one has its sum above): one big file, many tasks.
      checksums: fixed ? null : batch.checksums,
      maxSize,
      split,
      ...common,
    };
  });
}

/** --skip-existing, --if-changed, --checksums FILE and --max-attempts N: the cron-batch options. */
async function parseBatchOptions(ctx: Ctx, o: AddOptions): Promise<Pick<NewTask, 'skipExisting' | 'ifChanged' | 'checksums' | 'maxAttempts'>> {
  if (o.skipExisting && o.ifChanged) {
    throw new UsageError('--skip-existing and --if-changed cannot be used together: skip what exists, or fetch what changed');
  }
  let checksums: Record<string, string> | null = null;
  if (o.checksums !== undefined) {
    const source = o.checksums === '-' ? 'stdin' : o.checksums;
    if (o.checksums === '-' && o.inputFile === '-') throw new UsageError('--checksums - and -i - cannot both read stdin');
    checksums = parseChecksums((await readInput(o.checksums, 'checksums file')).toString('utf8'), source);
  }
  return {
    skipExisting: !!o.skipExisting,
    ifChanged: !!o.ifChanged,
    checksums,
    maxAttempts: o.maxAttempts !== undefined ? positiveCount(o.maxAttempts, '--max-attempts') : null,
  };
}

export async function add(ctx: Ctx, urls: string[], o: AddOptions): Promise<Task[]> {
  const planned = await planAdd(ctx, urls, o);
  for (const dir of new Set(planned.map((t) => t.dir))) makeDir(dir);
  return enqueueAndStart(ctx, planned);
}

export async function enqueueAndStart(ctx: Ctx, planned: NewTask[]): Promise<Task[]> {
  const store = await openStore(ctx);
  const cfg = loadConfig(ctx.env);
  const tasks = await store.enqueue(planned, { base: cfg.rateLimitBase, max: cfg.rateLimitMax });
  for (const s of new Set(planned.map((t) => t.session))) await touchSession(ctx, store, s);
  await ensureWorker(ctx, store);
  return tasks;
}
