#!/usr/bin/env node
// Benchmarks for the quality bars in DESIGN.md, over loopback only:
//   1. one 1 GiB file: bgdl vs `curl -o` (same server, same run)
//   2. 2,000 files of 16 KiB: bgdl `add -i` vs `aria2c -j16 -i`
//   3. `bgdl add -i` of 10,000 URLs, and `bgdl status` with 10,000 tasks in the store
//   4. worker memory with 10,000 queued tasks and 16 running transfers
// Usage: npm run bench [-- --only=big,many,status,memory] [--size=1GiB]
// curl and aria2c are optional (apt-get install -y curl aria2); a missing one is reported and skipped.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/bgdl.js', import.meta.url));
const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=')));
const only = args.only ? new Set(args.only.split(',')) : null;
const BIG = args.size ? parseSize(args.size) : 1024 ** 3;

function parseSize(s) {
  const m = /^(\d+)(K|M|G|KiB|MiB|GiB)?$/i.exec(s);
  const u = { k: 1e3, m: 1e6, g: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 }[(m[2] ?? '').toLowerCase()] ?? 1;
  return Number(m[1]) * u;
}

const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bgdl-bench-'));
const results = [];

function report(name, value, bar, ok) {
  results.push({ name, value, bar, ok });
  console.log(`${ok === undefined ? '·' : ok ? 'PASS' : 'FAIL'}  ${name}: ${value}${bar ? `  (bar: ${bar})` : ''}`);
}

/** A static server: files under `root`, served with sendfile-like streaming and keep-alive. */
function startServer(root, { delayMs = 0 } = {}) {
  const server = http.createServer((req, res) => {
    const file = path.join(root, decodeURIComponent(new URL(req.url, 'http://x').pathname));
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) {
        res.writeHead(404).end();
        return;
      }
      const send = () => {
        res.writeHead(200, { 'Content-Length': st.size, ETag: `"${st.size}-${st.mtimeMs}"`, 'Accept-Ranges': 'bytes' });
        fs.createReadStream(file, { highWaterMark: 1 << 20 }).pipe(res);
      };
      delayMs ? setTimeout(send, delayMs) : send();
    });
  });
  server.keepAliveTimeout = 30_000;
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, base: `http://127.0.0.1:${server.address().port}` })));
}

function envFor(name, extra = {}) {
  const dir = path.join(work, name);
  fs.mkdirSync(path.join(dir, 'out'), { recursive: true });
  return { dir, out: path.join(dir, 'out'), env: { ...process.env, BGDL_HOME: path.join(dir, 'home'), XDG_CONFIG_HOME: path.join(dir, 'config'), CI: '1', ...extra } };
}

function bgdl(e, argv, input) {
  const r = spawnSync(process.execPath, [BIN, ...argv], { env: e.env, cwd: e.out, input, encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`bgdl ${argv.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

function timed(fn) {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function stopWorker(e) {
  try {
    const pid = Number(execFileSync('sh', ['-c', `grep -l "BGDL_HOME=${e.env.BGDL_HOME}" /proc/[0-9]*/environ 2>/dev/null | head -1 | cut -d/ -f3`]).toString().trim());
    if (pid) process.kill(pid, 'SIGTERM');
  } catch {
    /* none */
  }
}

async function benchBig() {
  const root = path.join(work, 'big-src');
  fs.mkdirSync(root);
  const file = path.join(root, 'big.bin');
  const block = crypto.randomBytes(1 << 20);
  const fd = fs.openSync(file, 'w');
  for (let i = 0; i < BIG / block.length; i++) fs.writeSync(fd, block);
  fs.closeSync(fd);
  const { server, base } = await startServer(root);
  try {
    const rounds = 3;
    let curlBest = Infinity;
    let bgdlBest = Infinity;
    for (let i = 0; i < rounds; i++) {
      if (have('curl')) {
        const out = path.join(work, 'curl-big.bin');
        curlBest = Math.min(curlBest, timed(() => execFileSync('curl', ['-s', '-o', out, `${base}/big.bin`])));
        fs.rmSync(out);
      }
      const e = envFor(`big-${i}`);
      bgdlBest = Math.min(bgdlBest, timed(() => bgdl(e, ['add', '--wait', '-o', 'big.bin', `${base}/big.bin`])));
      if (fs.statSync(path.join(e.out, 'big.bin')).size !== BIG) throw new Error('bgdl big file has the wrong size');
      await stopWorker(e);
      fs.rmSync(e.dir, { recursive: true, force: true });
    }
    if (curlBest === Infinity) report('1 GiB: curl', 'curl not installed, skipped');
    else {
      report(`${BIG} bytes: curl -o (best of ${rounds})`, `${curlBest.toFixed(2)} s`);
      report(`${BIG} bytes: bgdl add --wait (best of ${rounds})`, `${bgdlBest.toFixed(2)} s = ${(bgdlBest / curlBest).toFixed(2)}x curl`, '<= 1.1x curl', bgdlBest <= 1.1 * curlBest);
    }
  } finally {
    server.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

async function benchMany() {
  const root = path.join(work, 'many-src');
  fs.mkdirSync(root);
  const n = 2000;
  for (let i = 0; i < n; i++) fs.writeFileSync(path.join(root, `f${i}.bin`), crypto.randomBytes(16 * 1024));
  const { server, base } = await startServer(root);
  const list = Array.from({ length: n }, (_, i) => `${base}/f${i}.bin`).join('\n') + '\n';
  try {
    let aria = null;
    if (have('aria2c')) {
      const out = path.join(work, 'aria-out');
      fs.mkdirSync(out);
      fs.writeFileSync(path.join(work, 'list.txt'), list);
      aria = timed(() => execFileSync('aria2c', ['-q', '-j16', '-d', out, '-i', path.join(work, 'list.txt'), '--file-allocation=none', '--auto-file-renaming=false']));
      report('2,000 x 16 KiB: aria2c -j16 -i', `${aria.toFixed(2)} s`);
    } else report('2,000 x 16 KiB: aria2c', 'aria2c not installed, skipped');
    const e = envFor('many');
    bgdl(e, ['config', 'set', 'maxConcurrent', '16']);
    bgdl(e, ['config', 'set', 'perHost', '16']);
    const t = timed(() => bgdl(e, ['add', '-i', '-', '--wait'], list));
    const count = fs.readdirSync(e.out).filter((f) => f.endsWith('.bin')).length;
    if (count !== n) throw new Error(`bgdl wrote ${count} of ${n} files`);
    report('2,000 x 16 KiB: bgdl add -i --wait (maxConcurrent=perHost=16)', `${t.toFixed(2)} s`, aria ? '<= aria2c' : undefined, aria ? t <= aria : undefined);
    await stopWorker(e);
  } finally {
    server.close();
  }
}

async function benchStatus() {
  const e = envFor('status');
  const list = Array.from({ length: 10_000 }, (_, i) => `http://127.0.0.1:9/f${i}.bin`).join('\n');
  const add = timed(() => bgdl(e, ['add', '-i', '-', '--suspended'], list));
  report('add -i of 10,000 URLs', `${(add * 1000).toFixed(0)} ms`, '< 3000 ms', add < 3);
  bgdl(e, ['status']);
  let best = Infinity;
  for (let i = 0; i < 5; i++) best = Math.min(best, timed(() => bgdl(e, ['status'])));
  report('status with 10,000 tasks (best of 5)', `${(best * 1000).toFixed(0)} ms`, '< 300 ms', best < 0.3);
}

async function benchMemory() {
  const root = path.join(work, 'mem-src');
  fs.mkdirSync(root, { recursive: true });
  fs.writeFileSync(path.join(root, 'slow.bin'), crypto.randomBytes(64 * 1024));
  const { server, base } = await startServer(root, { delayMs: 60_000 });
  const e = envFor('memory');
  try {
    bgdl(e, ['config', 'set', 'maxConcurrent', '16']);
    bgdl(e, ['config', 'set', 'perHost', '16']);
    const list = Array.from({ length: 10_000 }, (_, i) => `${base}/slow.bin?i=${i}`).join('\n');
    bgdl(e, ['add', '-i', '-'], list);
    let peak = 0;
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const tasks = JSON.parse(bgdl(e, ['status', '--json'])).filter((t) => t.state === 'running').length;
      const pid = Number(execFileSync('sh', ['-c', `grep -l "BGDL_HOME=${e.env.BGDL_HOME}" /proc/[0-9]*/environ 2>/dev/null | head -1 | cut -d/ -f3`]).toString().trim());
      if (pid) {
        const rss = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
        peak = Math.max(peak, rss);
      }
      if (tasks >= 16 && peak > 0 && Date.now() > deadline - 10_000) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    report('worker RSS with 10,000 queued and 16 running', `${(peak / 1024 / 1024).toFixed(1)} MiB`, '< 150 MiB', peak > 0 && peak < 150 * 1024 * 1024);
  } finally {
    await stopWorker(e);
    server.closeAllConnections?.();
    server.close();
  }
}

const benches = { status: benchStatus, many: benchMany, big: benchBig, memory: benchMemory };
try {
  for (const [name, fn] of Object.entries(benches)) if (!only || only.has(name)) await fn();
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
const failed = results.filter((r) => r.ok === false);
console.log(failed.length ? `${failed.length} bar(s) missed` : 'all measured bars met');
process.exitCode = failed.length ? 1 : 0;
