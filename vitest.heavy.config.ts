import { defineConfig } from 'vitest/config';

// The heavy cases alone (`npm run test:heavy`): the same settings as vitest.config.ts, other files.
export default defineConfig({
  test: {
    include: ['test/heavy/**/*.test.ts'],
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 1_800_000,
    hookTimeout: 600_000,
  },
});
