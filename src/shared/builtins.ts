// Node.js built-in modules that most runs of bgdl never use, loaded at their first use rather than
// at start-up: each one loaded touches its source pages in the `node` binary (node:http with node:tls
// ~2 MiB of a worker's resident memory, node:child_process ~1.3 MiB; docs/ARCHITECTURE.md, "The body
// path"). A static `import` loads the module whether the code path runs or not.

import type ChildProcess from 'node:child_process';
import { createRequire } from 'node:module';
import type Tls from 'node:tls';
import type V8 from 'node:v8';
import type Vm from 'node:vm';

const load = createRequire(import.meta.url);

export const childProcess = (): typeof ChildProcess => load('node:child_process');
export const tlsModule = (): typeof Tls => load('node:tls');
export const v8Module = (): typeof V8 => load('node:v8');
export const vmModule = (): typeof Vm => load('node:vm');
