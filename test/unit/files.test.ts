// The one file-safety module (src/shared/files.ts) on a real filesystem: exclusive creation with mode
// 0600, never through a link, ownership by dev:ino, link without clobbering, directory fsync.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createExclusive, isRecordedFile, linkWithoutClobber, openNoFollow, partIdOf, removePartFile, stillNamed, syncDirectory, unlinkIfSame,
} from '../../src/shared/files.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-files-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});
const at = (name: string) => path.join(dir, name);
const idOf = (file: string) => partIdOf(fs.lstatSync(file));

describe('createExclusive', () => {
  it('creates a new file with mode 0600', async () => {
    const fh = await createExclusive(at('p'));
    await fh.close();
    expect(fs.statSync(at('p')).mode & 0o777).toBe(0o600);
  });

  it('refuses an existing file and leaves it as it was', async () => {
    fs.writeFileSync(at('p'), 'mine');
    await expect(createExclusive(at('p'))).rejects.toMatchObject({ code: 'EEXIST' });
    expect(fs.readFileSync(at('p'), 'utf8')).toBe('mine');
  });

  it('never creates through a symlink, even a dangling one', async () => {
    fs.symlinkSync(at('target'), at('p'));
    await expect(createExclusive(at('p'))).rejects.toMatchObject({ code: 'EEXIST' });
    expect(fs.existsSync(at('target'))).toBe(false);
  });
});

describe('Descriptor', () => {
  it('reads, writes, syncs and truncates; close waits for what is in flight, and nothing runs once closed (EBADF)', async () => {
    const fd = await createExclusive(at('p'));
    const big = Buffer.alloc(4 * 1024 * 1024, 7);
    const writing = fd.write(big, 0, big.length, 0);
    const closing = fd.close(); // asked while the write is in flight
    const { bytesWritten } = await writing;
    await closing;
    expect(bytesWritten).toBe(big.length);
    expect(fs.statSync(at('p')).size).toBe(big.length);
    await expect(fd.write(big, 0, 1, 0)).rejects.toMatchObject({ code: 'EBADF' });
    await expect(fd.sync()).rejects.toMatchObject({ code: 'EBADF' });
    await expect(fd.stat()).rejects.toMatchObject({ code: 'EBADF' });
    await fd.close(); // a second close does nothing

    const again = await openNoFollow(at('p'));
    await again.truncate(10);
    const buf = Buffer.alloc(16);
    expect((await again.read(buf, 0, 16, 0)).bytesRead).toBe(10);
    await again.datasync();
    expect((await again.stat()).size).toBe(10);
    await again.close();
  });
});

describe('openNoFollow', () => {
  it('refuses a symlink (ELOOP) and opens a regular file', async () => {
    fs.writeFileSync(at('target'), 'precious');
    fs.symlinkSync(at('target'), at('link'));
    await expect(openNoFollow(at('link'))).rejects.toMatchObject({ code: 'ELOOP' });
    const fh = await openNoFollow(at('target'), fs.constants.O_RDONLY);
    await fh.close();
  });
});

describe('ownership by dev:ino', () => {
  it('isRecordedFile: the recorded inode, not the name; a symlink never; a name-only record needs one link', () => {
    fs.writeFileSync(at('p'), 'x');
    const id = idOf(at('p'));
    expect(isRecordedFile(fs.lstatSync(at('p')), { path: at('p'), id })).toBe(true);
    expect(isRecordedFile(fs.lstatSync(at('p')), { path: at('p'), id: '1:1' })).toBe(false);
    expect(isRecordedFile(fs.lstatSync(at('p')), { path: at('p'), id: null })).toBe(true);
    fs.linkSync(at('p'), at('q'));
    expect(isRecordedFile(fs.lstatSync(at('p')), { path: at('p'), id: null })).toBe(false);
    fs.symlinkSync(at('p'), at('s'));
    expect(isRecordedFile(fs.lstatSync(at('s')), { path: at('s'), id: idOf(at('s')) })).toBe(false);
  });

  it('removePartFile and unlinkIfSame remove only the very file recorded', async () => {
    fs.writeFileSync(at('p'), 'old');
    const id = idOf(at('p'));
    fs.renameSync(at('p'), at('kept')); // still alive: its inode cannot be reused
    fs.writeFileSync(at('p'), 'another'); // same name, another file
    expect(removePartFile({ path: at('p'), id })).toBe(false);
    await unlinkIfSame(at('p'), id);
    expect(await stillNamed(at('p'), id)).toBe(false);
    expect(fs.readFileSync(at('p'), 'utf8')).toBe('another');
    const now = idOf(at('p'));
    expect(await stillNamed(at('p'), now)).toBe(true);
    expect(removePartFile({ path: at('p'), id: now })).toBe(true);
    expect(fs.existsSync(at('p'))).toBe(false);
  });
});

describe('linkWithoutClobber', () => {
  it('gives the file its name and drops the old one when the name is free', async () => {
    fs.writeFileSync(at('p'), 'done');
    await linkWithoutClobber(at('p'), at('out'));
    expect(fs.readFileSync(at('out'), 'utf8')).toBe('done');
    expect(fs.existsSync(at('p'))).toBe(false);
  });

  it('never replaces an existing file (EEXIST), and keeps the source', async () => {
    fs.writeFileSync(at('p'), 'done');
    fs.writeFileSync(at('out'), 'theirs');
    expect(() => linkWithoutClobber(at('p'), at('out'))).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(fs.readFileSync(at('out'), 'utf8')).toBe('theirs');
    expect(fs.readFileSync(at('p'), 'utf8')).toBe('done');
  });
});

describe('syncDirectory', () => {
  it('settles every caller, sharing fsyncs between concurrent ones, and tolerates a missing directory', async () => {
    await Promise.all(Array.from({ length: 20 }, () => syncDirectory(dir)));
    await syncDirectory(at('missing'));
  });
});

describe('recorded identities', () => {
  it('the inode decides, not the device: a network filesystem shows each host its own device number', async () => {
    const { sameFile, sameFileId } = await import('../../src/shared/files.js');
    expect(sameFile({ ino: 42 }, '2049:42')).toBe(true);
    expect(sameFile({ ino: 42 }, '64:42')).toBe(true);
    expect(sameFile({ ino: 43 }, '2049:42')).toBe(false);
    expect(sameFileId('1:7', '9:7')).toBe(true);
    expect(sameFileId('1:7', '1:8')).toBe(false);
  });
});
