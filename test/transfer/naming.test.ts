import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nameFromResponse, numberedName, parseContentDisposition, pickFreePath, safeBaseName } from '../../src/transfer/naming.js';

const bytes = (s: string) => Buffer.byteLength(s);

describe('safeBaseName reduces hostile server names to a safe base name', () => {
  const cases: Array<[string, string | null]> = [
    ['../../etc/passwd', 'passwd'],
    ['/etc/passwd', 'passwd'],
    ['..\\..\\x', 'x'],
    ['C:\\Windows\\system32\\evil.dll', 'evil.dll'],
    ['.bashrc', 'bashrc'],
    ['...hidden', 'hidden'],
    [' . hidden', 'hidden'],
    ['a\0b', 'ab'],
    ['a\x01b\x1fc\x7fd\x85e', 'abcde'],
    ['line\nbreak\r.txt', 'linebreak.txt'],
    ['tab\there', 'tabhere'],
    ['report\u202Efdp.exe', 'reportfdp.exe'],
    ['CON.txt', '_CON.txt'],
    ['con', '_con'],
    ['nul.tar.gz', '_nul.tar.gz'],
    ['Lpt9', '_Lpt9'],
    ['COM1.log', '_COM1.log'],
    ['COM10.txt', 'COM10.txt'],
    ['CONSOLE.txt', 'CONSOLE.txt'],
    ['name. . ', 'name'],
    ['.', null],
    ['..', null],
    ['...', null],
    ['', null],
    ['   ', null],
    ['dir/', null],
    ['a/..', null],
    ['\0\x01', null],
    ['emoji 😀.png', 'emoji 😀.png'],
    ['normal-file_1.0.tar.gz', 'normal-file_1.0.tar.gz'],
  ];
  it.each(cases)('%j → %j', (raw, expected) => {
    expect(safeBaseName(raw)).toBe(expected);
  });

  it('bounds a 300-character name to 200 bytes and keeps the extension', () => {
    const name = safeBaseName(`${'x'.repeat(300)}.iso`)!;
    expect(bytes(name)).toBe(200);
    expect(name.endsWith('.iso')).toBe(true);
  });

  it('cuts multi-byte names on a character boundary', () => {
    const name = safeBaseName(`${'é'.repeat(150)}😀.txt`)!;
    expect(bytes(name)).toBeLessThanOrEqual(200);
    expect(name.endsWith('.txt')).toBe(true);
    expect(name).not.toContain('\uFFFD');
    expect(Buffer.from(name, 'utf8').toString('utf8')).toBe(name);
    expect(/^é+\.txt$/.test(name)).toBe(true);
  });

  it('treats a huge "extension" as part of the name', () => {
    const name = safeBaseName(`a.${'b'.repeat(400)}`)!;
    expect(bytes(name)).toBeLessThanOrEqual(200);
    expect(name.startsWith('a.bbb')).toBe(true);
  });
});

describe('parseContentDisposition', () => {
  const cases: Array<[string | null, string | null]> = [
    [null, null],
    ['attachment', null],
    ['attachment; filename="a.txt"', 'a.txt'],
    ['attachment; filename=plain.bin', 'plain.bin'],
    ['attachment; FILENAME="Upper.txt"', 'Upper.txt'],
    ['inline; filename="quo\\"ted.txt"', 'quo"ted.txt'],
    ['attachment; filename="semi;colon.txt"', 'semi;colon.txt'],
    [`attachment; filename="fallback.txt"; filename*=UTF-8''%E2%82%AC%20rates.txt`, '€ rates.txt'],
    [`attachment; filename*=UTF-8''%E2%82%AC.txt; filename="fallback.txt"`, '€.txt'],
    [`attachment; filename*=utf-8'en'na%C3%AFve.txt`, 'naïve.txt'],
    [`attachment; filename*=iso-8859-1''caf%E9.txt`, 'café.txt'],
    [`attachment; filename*=UTF-8''%2E%2E%2Fx`, '../x'],
    [`attachment; filename="ok.txt"; filename*=UTF-8''%ZZ`, 'ok.txt'],
    [`attachment; filename="ok.txt"; filename*=UTF-8''%FF%FE`, 'ok.txt'],
    // Raw UTF-8 in a quoted filename reaches us as latin1 characters.
    [`attachment; filename="${Buffer.from('résumé.pdf').toString('latin1')}"`, 'résumé.pdf'],
  ];
  it.each(cases)('%j → %j', (header, expected) => {
    expect(parseContentDisposition(header)).toBe(expected);
  });
});

describe('nameFromResponse', () => {
  const cases: Array<[string | null, string, string]> = [
    [null, 'http://h.test/dir/file.iso?x=1#frag', 'file.iso'],
    [null, 'http://h.test/', 'index.html'],
    [null, 'http://h.test', 'index.html'],
    [null, 'http://h.test/dir/', 'index.html'],
    [null, 'http://h.test/a%20b.txt', 'a b.txt'],
    [null, 'http://h.test/..%2F..%2Fetc%2Fpasswd', 'passwd'],
    [null, 'http://h.test/.htaccess', 'htaccess'],
    [null, 'http://h.test/%00%01', 'index.html'],
    [null, 'http://h.test/bad%E0%A4%A', 'bad%E0%A4%A'],
    ['../../evil.sh', 'http://h.test/good.txt', 'evil.sh'],
    ['..', 'http://h.test/good.txt', 'good.txt'],
    ['', 'http://h.test/good.txt', 'good.txt'],
    [parseContentDisposition(`attachment; filename*=UTF-8''%2E%2E%2Fx`), 'http://h.test/y', 'x'],
    ['CON', 'http://h.test/y', '_CON'],
  ];
  it.each(cases)('(%j, %j) → %j', (disposition, url, expected) => {
    expect(nameFromResponse(disposition, url)).toBe(expected);
  });
});

describe('numberedName', () => {
  const cases: Array<[string, number, string]> = [
    ['file.txt', 1, 'file.1.txt'],
    ['file.txt', 12, 'file.12.txt'],
    ['archive.tar.gz', 2, 'archive.2.tar.gz'],
    ['x.TAR.XZ', 1, 'x.1.TAR.XZ'],
    ['y.tar.zst', 1, 'y.1.tar.zst'],
    ['y.tar.bz2', 1, 'y.1.tar.bz2'],
    ['my.archive.tar.gz', 1, 'my.archive.1.tar.gz'],
    ['a.b.c', 3, 'a.b.3.c'],
    ['README', 1, 'README.1'],
    ['index.html', 1, 'index.1.html'],
  ];
  it.each(cases)('%j #%d → %j', (name, n, expected) => {
    expect(numberedName(name, n)).toBe(expected);
  });
});

describe('pickFreePath', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-naming-')));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('takes the name itself when it is free', async () => {
    expect(await pickFreePath(dir, 'f.txt', new Set())).toBe(path.join(dir, 'f.txt'));
  });
  it('skips existing files, partial files, dangling symlinks and taken paths', async () => {
    fs.writeFileSync(path.join(dir, 'f.txt'), 'x');
    fs.writeFileSync(path.join(dir, 'f.1.txt.bgdl-part'), 'x');
    fs.symlinkSync(path.join(dir, 'nowhere'), path.join(dir, 'f.2.txt'));
    const taken = new Set([path.join(dir, 'f.3.txt')]);
    expect(await pickFreePath(dir, 'f.txt', taken)).toBe(path.join(dir, 'f.4.txt'));
  });
  it('stays inside a symlinked directory', async () => {
    const real = path.join(dir, 'real');
    fs.mkdirSync(real);
    const link = path.join(dir, 'link');
    fs.symlinkSync(real, link);
    fs.writeFileSync(path.join(real, 'a.bin'), 'x');
    const chosen = await pickFreePath(link, 'a.bin', new Set());
    expect(chosen).toBe(path.join(link, 'a.1.bin'));
    expect(path.dirname(fs.realpathSync(path.dirname(chosen)))).toBe(path.dirname(real));
  });
  it('refuses a name that would leave the directory', async () => {
    await expect(pickFreePath(dir, '../escape', new Set())).rejects.toMatchObject({ code: 'E_UNSAFE_NAME' });
    await expect(pickFreePath(dir, '..', new Set())).rejects.toMatchObject({ code: 'E_UNSAFE_NAME' });
  });
  it('fails clearly for a missing directory', async () => {
    await expect(pickFreePath(path.join(dir, 'missing'), 'a', new Set())).rejects.toMatchObject({ code: 'E_DEST', transient: false });
  });
});
