// PostgreSQL's failures (no connection, a refused login, a missing database, a full disk) as a
// StoreError: one line naming the store (password hidden) and what to do, exit 4. Other errors (a
// NotFoundError, a bug in a statement) pass through unchanged.

import { StoreError } from '../../shared/errors.js';
import { guardMethods } from '../sqlite/failure.js';

const CONNECTION_ERRNOS = ['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE'];

/** Is `err` the connection to the server failing (worth a reconnect), rather than the server refusing? */
export function isConnectionLoss(err: unknown): boolean {
  const code = String((err as { code?: unknown })?.code ?? '');
  const message = String((err as Error)?.message ?? '');
  return (
    CONNECTION_ERRNOS.includes(code) ||
    code.startsWith('08') ||
    code === '57P01' || code === '57P02' || code === '57P03' ||
    /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(message)
  );
}

export function pgFailure(err: unknown, location: string): unknown {
  if (err instanceof StoreError) return err;
  const code = String((err as { code?: unknown })?.code ?? '');
  const reason = `${String((err as Error)?.message ?? err).replace(/\s+/g, ' ').trim()}${code ? `, ${code}` : ''}`;
  if (isConnectionLoss(err)) {
    return new StoreError(`the store ${location} cannot be reached (${reason}): check that PostgreSQL is running and reachable, then run the command again`, 'E_STORE_UNREACHABLE');
  }
  if (code.startsWith('28')) {
    return new StoreError(`the store ${location} refused the login (${reason}): check the user, and the password in the URL, PGPASSWORD or ~/.pgpass`, 'E_STORE_AUTH');
  }
  if (code === '3D000' || code === '42501' || code === '3F000') {
    return new StoreError(`the store ${location} cannot be used (${reason}): create the database or grant this user access to it`, 'E_STORE_IO');
  }
  if (code === '53100' || code === '53200' || code === '53300') {
    return new StoreError(`the store ${location} is out of resources (${reason}): free space or connections on the PostgreSQL server and run the command again`, 'E_STORE_FULL');
  }
  if (code.startsWith('XX') || code === '58030') {
    return new StoreError(`the store ${location} failed (${reason}): check the PostgreSQL server's log`, 'E_STORE_DAMAGED');
  }
  return err;
}

/** Every method of the PostgreSQL store reports its failures as StoreError (see pgFailure). */
export function guardPg<T extends object>(proto: T, locationOf: (self: T) => string): void {
  guardMethods(proto, locationOf, pgFailure);
}
