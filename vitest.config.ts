import { defineConfig } from 'vitest/config';

// GPU tests run on lavapipe, which already uses every core: run test files one at a time.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    pool: 'forks',
    // Generous: on a fresh machine lavapipe compiles every pipeline with LLVM on first use (seconds each).
    testTimeout: 600_000,
    hookTimeout: 600_000,
  },
});
