// `bgdl upload FILE URL`: an upload task streams the file (read at transfer time) with -X PUT or POST.

import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '../../shared/errors.js';
import type { Task } from '../../shared/model.js';
import { parseHttpUrl } from '../../shared/parse.js';
import type { Ctx } from '../context.js';
import { enqueueAndStart, parseCommon, type AddOptions } from './add.js';

export async function upload(ctx: Ctx, file: string, url: string, o: AddOptions): Promise<Task[]> {
  if (file === '-') throw new UsageError('uploads are from a file only, not from stdin: save the data to a file first');
  const common = parseCommon(ctx, o, 'PUT');
  if (common.method !== 'PUT' && common.method !== 'POST') throw new UsageError(`upload method must be PUT or POST, not ${common.method}`);
  const target = parseHttpUrl(url);
  const abs = path.resolve(ctx.cwd, file);
  let st: fs.Stats;
  try {
    st = fs.statSync(abs);
  } catch (err) {
    throw new UsageError(`cannot upload ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  if (!st.isFile()) throw new UsageError(`cannot upload ${file}: not a regular file`);
  try {
    fs.accessSync(abs, fs.constants.R_OK);
  } catch {
    throw new UsageError(`cannot upload ${file}: not readable`);
  }
  return enqueueAndStart(ctx, [
    {
      ...common,
      kind: 'upload',
      url: target,
      output: null,
      outputFixed: false,
      dir: path.dirname(abs),
      uploadFile: abs,
      uploadSize: st.size,
      expectSend: common.expectSend ?? st.size,
      sha256Expected: null,
    },
  ]);
}
