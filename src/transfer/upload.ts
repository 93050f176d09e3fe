// One upload attempt: stream a file (read at transfer time, and only if it still has the size it had
// at `bgdl upload`) as a PUT or POST body, following redirects (307/308 send the file again, 301/302/303
// turn the request into a GET), and keep the start of the server's answer.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { Readable } from 'node:stream';
import { classifyError, classifyStatus } from './classify.js';
import { DEFAULT_MAX_REDIRECTS, firstHop, requestFollowingRedirects, withoutHeaders } from './http.js';
import { TransferError, type Throttle, type UploadCallbacks, type UploadRequest, type UploadResult } from './types.js';

/** How much of the response body is kept (as text) for the task and its event. */
const RESPONSE_KEEP_BYTES = 64 * 1024;
/** Beyond this, the rest of a response body is not worth reading: the connection is closed instead. */
const RESPONSE_DRAIN_LIMIT = 16 * 1024 * 1024;
const READ_CHUNK_BYTES = 1024 * 1024;

function sourceGone(file: string): TransferError {
  return new TransferError('E_UPLOAD_SOURCE', `upload source ${file} is gone`, false);
}

/** The file's size now, which must still be the size recorded when the task was added. */
async function checkSource(req: UploadRequest): Promise<number> {
  let size: number;
  try {
    const st = await fsp.stat(req.file);
    if (!st.isFile()) throw new TransferError('E_UPLOAD_SOURCE', `upload source ${req.file} is not a regular file`, false);
    size = st.size;
  } catch (err) {
    if (err instanceof TransferError) throw err;
    throw sourceGone(req.file);
  }
  if (size !== req.expectedSize) {
    throw new TransferError('E_UPLOAD_SOURCE', `upload source ${req.file} changed size since bgdl upload (${req.expectedSize} bytes then, ${size} now)`, false);
  }
  return size;
}

/** The file as a request body, counting bytes as they are handed to the connection, held to the bandwidth limit. */
async function* fileBody(file: string, size: number, counted: (n: number) => void, throttle?: Throttle): AsyncGenerator<Buffer> {
  const stream = fs.createReadStream(file, { start: 0, end: size - 1, highWaterMark: READ_CHUNK_BYTES });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      counted(chunk.length);
      yield chunk;
      const wait = throttle ? throttle(chunk.length) : 0;
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw sourceGone(file);
    throw new TransferError('E_UPLOAD_SOURCE', `cannot read upload source ${file}: ${(err as Error).message}`, false);
  }
}

async function readStart(body: AsyncIterable<Buffer>): Promise<string> {
  const kept: Buffer[] = [];
  let keptBytes = 0;
  let total = 0;
  for await (const chunk of body) {
    if (keptBytes < RESPONSE_KEEP_BYTES) {
      kept.push(chunk);
      keptBytes += chunk.length;
    }
    total += chunk.length;
    if (total > RESPONSE_DRAIN_LIMIT) break;
  }
  return Buffer.concat(kept).subarray(0, RESPONSE_KEEP_BYTES).toString('utf8');
}

export async function upload(req: UploadRequest, cb: UploadCallbacks): Promise<UploadResult> {
  const size = await checkSource(req);
  let sent = 0;
  const body = (): Readable | Buffer => {
    sent = 0;
    cb.onProgress(0);
    if (size === 0) return Buffer.alloc(0);
    const chunks = fileBody(req.file, size, (n) => {
      sent += n;
      cb.onProgress(sent);
    }, cb.throttle);
    return Readable.from(chunks, { objectMode: false });
  };
  const hop = firstHop(req.url, req.method, req.headers);
  hop.headers = withoutHeaders(hop.headers, ['content-length', 'transfer-encoding']);
  hop.headers.push(['Content-Length', String(size)]);
  if (!hop.headers.some(([n]) => n.toLowerCase() === 'content-type')) hop.headers.push(['Content-Type', 'application/octet-stream']);
  try {
    const final = await requestFollowingRedirects(hop, {
      insecure: req.insecure,
      caFile: req.caFile,
      proxy: req.proxy, netrcFile: req.netrcFile, cookiesFile: req.cookiesFile,
      signal: cb.signal,
      stallTimeoutMs: req.stallTimeoutMs,
      maxRedirects: req.maxRedirects ?? DEFAULT_MAX_REDIRECTS,
      rules: { allowDowngrade: req.allowDowngrade, anyRedirectDropsBody: true },
      body,
    });
    const { statusCode, headers, body: responseBody } = final.response;
    if (statusCode < 200 || statusCode > 299) {
      await responseBody.dump({ limit: RESPONSE_KEEP_BYTES }).catch(() => {});
      throw classifyStatus(statusCode, headers, Date.now(), final.hop.url.href);
    }
    return {
      finalUrl: final.hop.url.href,
      protocol: final.protocol,
      httpStatus: statusCode,
      bytesSent: sent,
      responseBody: await readStart(responseBody),
      methodChangedTo: final.hop.method !== hop.method ? final.hop.method : null,
    };
  } catch (err) {
    if (cb.signal.aborted) throw new TransferError('E_ABORTED', 'stopped', true);
    throw classifyError(err);
  }
}
