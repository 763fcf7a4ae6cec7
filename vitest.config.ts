import { defineConfig } from 'vitest/config';

// GPU tests run on lavapipe, which already uses every core: run test files one at a time.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
