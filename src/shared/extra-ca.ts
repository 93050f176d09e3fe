// NODE_EXTRA_CA_CERTS, carried past Node.js's start instead of loaded by it.
//
// Node.js reads and parses the file NODE_EXTRA_CA_CERTS names while it boots, before any of our code
// runs: with the system bundle named there (a common set-up) that is ~33 ms of every process start.
// A command opens no TLS connection, and most workers never do. So `bgdl` (bin/bgdl.js, a shell line
// before the JavaScript) starts Node.js with the variable moved aside, and so does the CLI when it
// starts the worker (workerEnvironment); the process puts it back at once for its children
// (restoreExtraCaCerts), and the TLS connections it opens are given the certificates themselves
// (extraCaCerts, read at the first TLS connection): what Node.js would have trusted, trusted the same.
// The exception is a PostgreSQL store reached over TLS: node-postgres trusts Node's default store
// only, so such a process starts again with Node.js loading the file (mustLoadAtStart).

import fs from 'node:fs';

/** Where the CLI leaves the file's name for the worker (not a setting: the worker removes it at start). */
const CARRIED = 'BGDL_CARRIED_EXTRA_CA_CERTS';

/** Node.js options that change which store NODE_EXTRA_CA_CERTS adds to: then Node.js loads it itself. */
const CA_STORE_OPTIONS = /--use-openssl-ca|--use-system-ca/;

/**
 * The environment of a worker the CLI starts: NODE_EXTRA_CA_CERTS moved to CARRIED, unless the store
 * is shared (node-postgres connects over TLS with Node's default store) or Node.js is told to use
 * another certificate store (then its default store is not the bundled one extended).
 */
export function workerEnvironment(env: NodeJS.ProcessEnv, sharedStore: boolean): NodeJS.ProcessEnv {
  const file = env.NODE_EXTRA_CA_CERTS;
  if (!file || sharedStore || CA_STORE_OPTIONS.test(env.NODE_OPTIONS ?? '') || env.NODE_USE_SYSTEM_CA === '1') return { ...env };
  const { NODE_EXTRA_CA_CERTS: _moved, ...rest } = env;
  return { ...rest, [CARRIED]: file };
}

/** The file this worker's start left for it to load (null: Node.js loaded NODE_EXTRA_CA_CERTS itself, if set). */
let carried: string | null = null;
let extra: string | null | undefined;

/**
 * First thing: NODE_EXTRA_CA_CERTS back in `env` (children inherit it), remembering that Node.js did
 * not load it. True when it was carried.
 */
export function restoreExtraCaCerts(env: NodeJS.ProcessEnv): boolean {
  const file = env[CARRIED];
  if (file === undefined) return false;
  delete env[CARRIED];
  env.NODE_EXTRA_CA_CERTS = file;
  carried = file;
  return true;
}

/**
 * The PEM text of NODE_EXTRA_CA_CERTS that a TLS connection must be given explicitly, or null. With
 * an explicit CA list (`withCaFile`: --ca-file) Node.js never adds them itself, so always; otherwise
 * only when this process started without Node.js loading them (carried). A file that cannot be read
 * adds nothing, as Node.js ignores it (with a warning on stderr that a worker does not have).
 */
export function extraCaCerts(withCaFile: boolean): string | null {
  if (!withCaFile && !carried) return null;
  if (extra === undefined) {
    const file = carried ?? process.env.NODE_EXTRA_CA_CERTS;
    try {
      extra = file ? fs.readFileSync(file, 'utf8') : null;
    } catch {
      extra = null;
    }
  }
  return extra;
}

/** node-postgres's settings that make it connect over TLS (libpq's names: sslmode, sslrootcert, …). */
const PG_TLS_PARAM = /^ssl/i;

/**
 * Must this process, started without Node.js loading NODE_EXTRA_CA_CERTS (restoreExtraCaCerts said
 * so), start again with it loaded? Only when its store is PostgreSQL that may be reached over TLS: an
 * `ssl…` setting in the URL, or PGSSLMODE other than `disable` (node-postgres reads it).
 */
export function mustLoadAtStart(storeUrl: string | null, env: NodeJS.ProcessEnv): boolean {
  if (!storeUrl) return false;
  if (env.PGSSLMODE && env.PGSSLMODE !== 'disable') return true;
  return [...new URL(storeUrl).searchParams.keys()].some((k) => PG_TLS_PARAM.test(k));
}
