import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: process.env.BGDL_TEST_JSON ? ['default', ['json', { outputFile: process.env.BGDL_TEST_JSON }]] : ['default'],
  },
});
