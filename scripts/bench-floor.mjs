// The least CPU and memory any Node.js program on this machine spends on the large-file bench's work:
// receive SIZE bytes over loopback HTTP, SHA-256 them, write them to a file and fdatasync it. No
// undici, no store, no modules: a raw socket, a hand-skipped header, one synchronous write per read
// (as curl does). Two ways to read: 'data' events (a fresh 64 KiB buffer per read, as every Node
// stream and undici do) and net's `onread` (one buffer reused for every read); and, reading with
// `onread`, a third way to write: 'direct', O_DIRECT writes of 3 x 1 MiB page-aligned buffers (a
// WebAssembly memory) through the thread pool, several in flight, the reader paused while none is
// free (what the worker does for a large file, src/transfer/sink.ts). Each runs in its own process
// and reports its wall time, CPU (user+sys, every thread) and peak RSS (VmHWM), beside `curl -o` +
// `openssl dgst -sha256` of the same bytes (the worker's CPU bar is 1.1x that) and `curl -o` +
// `sync` (its wall-time bar).
// Usage: node scripts/bench-floor.mjs [SIZE_MiB=512] [ROUNDS=3]
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

const SIZE = Number(process.argv[2] ?? 512) * 2 ** 20;
const ROUNDS = Number(process.argv[3] ?? 3);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-floor-'));
const src = path.join(work, 'src.bin');
const block = crypto.randomBytes(1 << 20);
const fd = fs.openSync(src, 'w');
for (let i = 0; i < SIZE / block.length; i++) fs.writeSync(fd, block);
fs.closeSync(fd);

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Length': SIZE });
  fs.createReadStream(src, { highWaterMark: 1 << 20 }).pipe(res);
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const port = server.address().port;

const CLIENT = `
const net = require('node:net'), fs = require('node:fs'), crypto = require('node:crypto');
const [port, size, mode, out] = [Number(process.argv[1]), Number(process.argv[2]), process.argv[3], process.argv[4]];
const hash = crypto.createHash('sha256');
const fd = fs.openSync(out, 'w');
let inBody = false, pos = 0;
const BUF = 1 << 20, direct = mode === 'direct' ? { fd: fs.openSync('/proc/self/fd/' + fd, fs.constants.O_WRONLY | fs.constants.O_DIRECT), free: [], inFlight: 0 } : null;
if (direct) { const m = new WebAssembly.Memory({ initial: (3 * BUF) / 65536 }); for (let i = 0; i < 3; i++) direct.free.push(Buffer.from(m.buffer, i * BUF, BUF)); }
let cur = null, used = 0, wpos = 0, rest = null, paused = false;
function put(last) {
  const buf = cur, n = used, at = wpos, aligned = last ? n - (n % 4096) : n;
  cur = null; used = 0; wpos += n; direct.inFlight++;
  const done = () => { direct.inFlight--; direct.free.push(buf); if (rest) fill(); if (paused && !rest) { paused = false; s.resume(); } if (pos >= size && !cur && !rest && direct.inFlight === 0) end(); };
  if (aligned === 0) { fs.writeSync(fd, buf, 0, n, at); return done(); }
  fs.write(direct.fd, buf, 0, aligned, at, (err) => { if (err) throw err; if (aligned < n) fs.writeSync(fd, buf, aligned, n - aligned, at + aligned); done(); });
}
function fill() {
  const b = rest; let o = 0; rest = null;
  while (o < b.length) {
    if (!cur) { cur = direct.free.pop(); if (!cur) { rest = b.subarray(o); if (!paused) { paused = true; s.pause(); } return; } }
    const n = b.copy(cur, used, o); used += n; o += n;
    if (used === BUF) put(false);
  }
  if (pos >= size && cur) put(true);
}
function take(b) {
  if (!inBody) { b = b.subarray(b.indexOf('\\r\\n\\r\\n') + 4); inBody = true; }
  hash.update(b);
  if (direct) { pos += b.length; rest = b; return fill(); }
  fs.writeSync(fd, b, 0, b.length, pos);
  pos += b.length;
  if (pos < size) return;
  end();
}
function end() {
  fs.fdatasyncSync(fd);
  hash.digest('hex');
  const c = process.cpuUsage();
  const hwm = Number(/VmHWM:\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
  process.stdout.write(JSON.stringify({ cpu: (c.user + c.system) / 1e6, rss: hwm }));
  process.exit(0);
}
const opts = { port, host: '127.0.0.1' };
if (mode !== 'data') opts.onread = { buffer: Buffer.allocUnsafe(1 << 20), callback: (n, buf) => void take(buf.subarray(0, n)) };
const s = net.connect(opts, () => s.write('GET / HTTP/1.1\\r\\nHost: floor\\r\\n\\r\\n'));
if (mode === 'data') s.on('data', take);
`;

function node(mode) {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', CLIENT, String(port), String(SIZE), mode, path.join(work, `${mode}.bin`)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('exit', (code) => (code === 0 ? resolve({ ...JSON.parse(out), wall: (performance.now() - t0) / 1000 }) : reject(new Error(`${mode} exited ${code}`))));
  });
}

/** Children's CPU of a shell script, from the shell's own `times` (children's user and system). */
function shellCpu(script) {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', `${script}; times`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`sh exited ${code}`));
      const secs = (s) => { const m = /(\d+)m([\d.]+)s/.exec(s); return Number(m[1]) * 60 + Number(m[2]); };
      const [user, sys] = out.trim().split('\n').at(-1).split(/\s+/);
      resolve(secs(user) + secs(sys));
    });
  });
}

const MODES = ['data', 'onread', 'direct'];
const r = { curl: [], curlSync: [], data: [], onread: [], direct: [] };
try {
  for (let i = 0; i < ROUNDS; i++) {
    spawnSync('sync');
    const out = path.join(work, 'curl.bin');
    r.curl.push({ cpu: await shellCpu(`curl -s -o ${out} http://127.0.0.1:${port}/ && openssl dgst -sha256 ${out} >/dev/null`), rss: 0 });
    fs.rmSync(out);
    spawnSync('sync');
    const t0 = performance.now();
    await shellCpu(`curl -s -o ${out} http://127.0.0.1:${port}/ && sync ${out}`);
    r.curlSync.push((performance.now() - t0) / 1000);
    fs.rmSync(out);
    for (const mode of MODES) {
      spawnSync('sync');
      r[mode].push(await node(mode));
    }
  }
  const base = Math.min(...r.curl.map((x) => x.cpu));
  const mib = (b) => (b / 2 ** 20).toFixed(0);
  console.log(`${SIZE / 2 ** 20} MiB, best of ${ROUNDS}:`);
  console.log(`  curl -o + openssl dgst -sha256: CPU ${base.toFixed(2)} s (${r.curl.map((x) => x.cpu.toFixed(2)).join(', ')})`);
  console.log(`  curl -o + sync: ${r.curlSync.map((x) => x.toFixed(2)).join(', ')} s`);
  const names = { data: "'data' events", onread: 'onread, one buffer', direct: 'onread, O_DIRECT writes' };
  for (const mode of MODES) {
    const cpu = Math.min(...r[mode].map((x) => x.cpu));
    console.log(`  node, ${names[mode]}: ${r[mode].map((x) => x.wall.toFixed(2)).join(', ')} s; CPU ${cpu.toFixed(2)} s (${r[mode].map((x) => x.cpu.toFixed(2)).join(', ')}) = ${(cpu / base).toFixed(2)}x; peak RSS ${r[mode].map((x) => mib(x.rss)).join(', ')} MiB`);
  }
} finally {
  server.close();
  fs.rmSync(work, { recursive: true, force: true });
}
