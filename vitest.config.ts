import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // A throwaway PostgreSQL for the shared-store tests when BGDL_TEST_PG is not given (test/helpers/pg-setup.ts).
    globalSetup: ['test/helpers/pg-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: process.env.BGDL_TEST_JSON ? ['default', ['json', { outputFile: process.env.BGDL_TEST_JSON }]] : ['default'],
  },
});
