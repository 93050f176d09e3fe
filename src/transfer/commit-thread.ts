// Putting small files in place in one step. A small body that arrived quickly is held in memory and
// verified; then one message asks this thread to create the part file (exclusively, 0600, never
// through a symlink), write it, give it its final mode, fsync it, link or rename it into place and
// fsync the directory. That is one hop instead of a dozen thread-pool round trips, and the thread
// commits what queued up meanwhile as a batch: the first fsync of a batch carries the journal
// commit for all, and one directory fsync covers every file the batch placed there.

import { Worker } from 'node:worker_threads';

export interface CommitError {
  code?: string;
  message: string;
  syscall?: string;
  errno?: number;
  /** Which path the error concerns: the part file or the destination. */
  file: 'part' | 'target';
}

type Request =
  | { op: 'commit'; id: number; part: string; target: string; replace: boolean; mode: number; uid: number; data: Uint8Array[] }
  | { op: 'place'; id: number; part: string; target: string; replace: boolean };

/** `placed`: the file is at `target`. `exists`: the (derived) name is taken; the part file waits to be placed elsewhere. */
export type CommitReply = { id: number; placed: string } | { id: number; exists: true } | { id: number; error: CommitError };

/** The thread's code (run from its source text: only its own scope and `require`). */
function commitThreadMain(): void {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { parentPort } = require('node:worker_threads') as typeof import('node:worker_threads');
  const fs = require('node:fs') as typeof import('node:fs');
  const path = require('node:path') as typeof import('node:path');
  const C = fs.constants;
  const port = parentPort!;
  /** Filesystems without hard links: a rename after checking the name is free. */
  const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK']);
  let queue: Request[] = [];
  let scheduled = false;

  type Err = NodeJS.ErrnoException;
  const fail = (id: number, err: Err, file: 'part' | 'target') =>
    port.postMessage({ id, error: { code: err.code, message: err.message, syscall: err.syscall, errno: err.errno, file } });
  const unsafe = (p: string) => Object.assign(new Error(`refusing to use ${p}`), { code: 'E_UNSAFE_PART' });

  /** O_EXCL|O_NOFOLLOW, mode 0600; an old part file of ours is replaced, anything else refused. */
  const createExclusive = (part: string, uid: number): number => {
    for (let tries = 0; ; tries++) {
      try {
        return fs.openSync(part, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
      } catch (err) {
        if ((err as Err).code !== 'EEXIST' || tries > 0) throw err;
      }
      let st: import('node:fs').Stats;
      try {
        st = fs.lstatSync(part);
      } catch {
        continue;
      }
      if (!st.isFile() || (uid >= 0 && st.uid !== uid)) throw unsafe(part);
      fs.unlinkSync(part);
    }
  };

  /** Link (or rename) the part file to the target; 'exists' when a derived name turned out taken. */
  const place = (part: string, target: string, replace: boolean): 'placed' | 'exists' => {
    if (replace) {
      fs.renameSync(part, target);
      return 'placed';
    }
    try {
      fs.linkSync(part, target);
    } catch (err) {
      const code = (err as Err).code ?? '';
      if (code === 'EEXIST') return 'exists';
      if (!NO_LINKS.has(code)) throw err;
      try {
        fs.lstatSync(target);
        return 'exists';
      } catch {
        fs.renameSync(part, target);
        return 'placed';
      }
    }
    fs.unlinkSync(part);
    return 'placed';
  };

  const syncDir = (dir: string) => {
    try {
      const fd = fs.openSync(dir, C.O_RDONLY | C.O_DIRECTORY);
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      /* best effort: some filesystems cannot fsync a directory */
    }
  };

  const runBatch = () => {
    scheduled = false;
    const batch = queue;
    queue = [];
    // 1. Create and write every new file of the batch.
    const open: Array<{ r: Extract<Request, { op: 'commit' }>; fd: number }> = [];
    const toPlace: Array<{ id: number; part: string; target: string; replace: boolean }> = [];
    for (const r of batch) {
      if (r.op === 'place') {
        toPlace.push(r);
        continue;
      }
      let fd = -1;
      try {
        fd = createExclusive(r.part, r.uid);
      } catch (err) {
        fail(r.id, err as Err, 'part');
        continue;
      }
      try {
        let pos = 0;
        for (const chunk of r.data) {
          for (let off = 0; off < chunk.length; ) {
            const n = fs.writeSync(fd, chunk, off, chunk.length - off, pos);
            if (n === 0) throw Object.assign(new Error('no progress writing the partial file'), { code: 'EIO', syscall: 'write' });
            off += n;
            pos += n;
          }
        }
        fs.fchmodSync(fd, r.mode);
        open.push({ r, fd });
      } catch (err) {
        fs.closeSync(fd);
        fs.rmSync(r.part, { force: true });
        fail(r.id, err as Err, 'part');
      }
    }
    // 2. Make them durable: after the first fsync of the batch the others have little left to do.
    for (const { r, fd } of open) {
      try {
        fs.fsyncSync(fd);
        fs.closeSync(fd);
        toPlace.push(r);
      } catch (err) {
        fs.closeSync(fd);
        fs.rmSync(r.part, { force: true });
        fail(r.id, err as Err, 'part');
      }
    }
    // 3. Put them in place, then one fsync per directory covers every rename and link.
    const placed: Array<{ id: number; target: string }> = [];
    const dirs = new Set<string>();
    for (const r of toPlace) {
      try {
        if (place(r.part, r.target, r.replace) === 'exists') {
          port.postMessage({ id: r.id, exists: true });
          continue;
        }
      } catch (err) {
        fail(r.id, err as Err, 'target');
        continue;
      }
      placed.push(r);
      dirs.add(path.dirname(r.target));
    }
    for (const dir of dirs) syncDir(dir);
    for (const p of placed) port.postMessage({ id: p.id, placed: p.target });
  };

  port.on('message', (r: Request) => {
    queue.push(r);
    // Take in every request already waiting before starting the batch.
    if (!scheduled) {
      scheduled = true;
      setImmediate(runBatch);
    }
  });
}

/** The one commit thread, started on first use, kept alive only while requests are pending. */
class CommitThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, (r: CommitReply) => void>();
  private nextId = 1;

  constructor() {
    this.worker = new Worker(`(${commitThreadMain.toString()})()`, { eval: true });
    this.worker.unref();
    this.worker.on('message', (r: CommitReply) => {
      const resolve = this.pending.get(r.id);
      this.pending.delete(r.id);
      if (this.pending.size === 0) this.worker.unref();
      resolve?.(r);
    });
    const die = (err: Error) => {
      if (thread === this) thread = null;
      for (const [id, resolve] of this.pending) resolve({ id, error: { message: err.message, file: 'part' } });
      this.pending.clear();
    };
    this.worker.on('error', die);
    this.worker.on('exit', (code) => die(new Error(`the commit thread exited (${code})`)));
  }

  request(r: Omit<Extract<Request, { op: 'commit' }>, 'id'> | Omit<Extract<Request, { op: 'place' }>, 'id'>): Promise<CommitReply> {
    const id = this.nextId++;
    return new Promise<CommitReply>((resolve) => {
      this.pending.set(id, resolve);
      this.worker.ref();
      this.worker.postMessage({ ...r, id });
    });
  }
}

let thread: CommitThread | null = null;

export function commitThread(): CommitThread {
  thread ??= new CommitThread();
  return thread;
}
