// The parts of undici the transfer engine uses (dispatchers, the connector, `request`), loaded without
// the rest of the package (fetch, WebSocket, caches, mocks), which a worker never calls. Measured:
// importing the whole package costs 20 MiB of RSS and ~110 ms of CPU; these parts 11 MiB and ~70 ms.
// The types are the package's own.

import { createRequire } from 'node:module';
import type * as Undici from 'undici';

const load = createRequire(import.meta.url);

// What the package's index does: the request API as methods of every dispatcher.
const DispatcherClass = load('undici/lib/dispatcher/dispatcher.js') as { prototype: object };
Object.assign(DispatcherClass.prototype, load('undici/lib/api/index.js'));

export const Agent = load('undici/lib/dispatcher/agent.js') as typeof Undici.Agent;
export const Pool = load('undici/lib/dispatcher/pool.js') as typeof Undici.Pool;
export const Client = load('undici/lib/dispatcher/client.js') as typeof Undici.Client;
export const ProxyAgent = load('undici/lib/dispatcher/proxy-agent.js') as typeof Undici.ProxyAgent;
export const buildConnector = load('undici/lib/core/connect.js') as typeof Undici.buildConnector;
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
