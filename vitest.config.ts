import { defineConfig } from 'vitest/config';

// GPU tests run on lavapipe, which already uses every core: run test files one at a time.
// test/heavy/ (minutes each: a 300000-row embedding, a cold shader cache, a 10 MB tokenizer corpus)
// runs separately with `npm run test:heavy` (vitest.heavy.config.ts).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/heavy/**', '**/node_modules/**'],
    fileParallelism: false,
    pool: 'forks',
    // Generous: on a fresh machine lavapipe compiles every pipeline with LLVM on first use (seconds each).
    testTimeout: 600_000,
    hookTimeout: 600_000,
  },
});
