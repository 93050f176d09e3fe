// The parts of undici the transfer engine uses (dispatchers, the connector, `request`), loaded without
// the rest of the package (fetch, WebSocket, caches, mocks), which a worker never calls, and only when
// first needed: a worker that only downloads over direct http:// (h1.ts) never loads undici at all.
// Measured: importing the whole package costs 20 MiB of RSS and ~110 ms of CPU; these parts 11 MiB
// and ~70 ms. The types are the package's own.

import { createRequire } from 'node:module';
import type * as Undici from 'undici';
import { leanRuntime } from './runtime.js';

const load = createRequire(import.meta.url);

interface Parts {
  Agent: typeof Undici.Agent;
  Pool: typeof Undici.Pool;
  Client: typeof Undici.Client;
  ProxyAgent: typeof Undici.ProxyAgent;
  buildConnector: typeof Undici.buildConnector;
}

let parts: Parts | null = null;

/** The undici classes, loaded at the first call. */
export function undici(): Parts {
  if (parts) return parts;
  leanRuntime();
  // What the package's index does: the request API as methods of every dispatcher.
  const DispatcherClass = load('undici/lib/dispatcher/dispatcher.js') as { prototype: object };
  Object.assign(DispatcherClass.prototype, load('undici/lib/api/index.js'));
  parts = {
    Agent: load('undici/lib/dispatcher/agent.js'),
    Pool: load('undici/lib/dispatcher/pool.js'),
    Client: load('undici/lib/dispatcher/client.js'),
    ProxyAgent: load('undici/lib/dispatcher/proxy-agent.js'),
    buildConnector: load('undici/lib/core/connect.js'),
  };
  return parts;
}

export type { Dispatcher } from 'undici';

/** `undici.request(url, options)` for a given dispatcher, as the package's own wrapper does it. */
export function request(url: URL, opts: Omit<Undici.Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & { dispatcher: Undici.Dispatcher; method?: Undici.Dispatcher.HttpMethod }): Promise<Undici.Dispatcher.ResponseData> {
  const { dispatcher, ...rest } = opts;
  return dispatcher.request({
    ...rest,
    origin: url.origin,
    path: url.search ? `${url.pathname}${url.search}` : url.pathname,
    method: opts.method || (opts.body ? 'PUT' : 'GET'),
  });
}
