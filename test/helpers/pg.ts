// The PostgreSQL the tests use: BGDL_TEST_PG (CI's .ci/run starts a throwaway cluster and exports it;
// otherwise test/helpers/pg-setup.ts starts one when PostgreSQL is installed). Under CI a missing one
// fails the tests that need it; elsewhere they are not defined, with a notice saying so.

import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, it } from 'vitest';

export const TEST_PG = process.env.BGDL_TEST_PG || null;

/** `define` the PostgreSQL tests, or (no PostgreSQL) fail them under CI / leave them out with a notice elsewhere. */
export function withPostgres(title: string, define: (url: string) => void): void {
  if (TEST_PG) return define(TEST_PG);
  if (process.env.CI) {
    describe(title, () => {
      it('runs against PostgreSQL (BGDL_TEST_PG)', () => {
        throw new Error('BGDL_TEST_PG is not set: under CI the PostgreSQL tests must run (.ci/run starts a cluster and exports it)');
      });
    });
    return;
  }
  console.warn(`notice: no PostgreSQL (install it, or set BGDL_TEST_PG): "${title}" is not run`);
}

/** A URL of `base` with a fresh schema of its own, and a function that drops it. */
export function freshSchema(base: string): { url: string; schema: string; drop: () => Promise<void> } {
  const schema = `bgdl_t_${randomBytes(6).toString('hex')}`;
  const u = new URL(base);
  u.searchParams.set('schema', schema);
  return {
    url: u.toString(),
    schema,
    drop: async () => {
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      try {
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await c.end();
      }
    },
  };
}

/** Run one SQL statement against `base` in `schema`. */
export async function pgQuery(base: string, schema: string, sql: string, args: unknown[] = []): Promise<any[]> {
  const c = new pg.Client({ connectionString: base, options: `-c search_path=${schema}` });
  await c.connect();
  try {
    return (await c.query(sql, args)).rows;
  } finally {
    await c.end();
  }
}
