import { defineConfig } from 'vitest/config';

// The heavy cases (`npm run test:heavy`): the same settings as vitest.config.ts; test/heavy/, plus the
// files whose cold-cache cases `npm test` skips (SEMFREEZE_HEAVY=1 runs them).
export default defineConfig({
  test: {
    include: ['test/heavy/**/*.test.ts', 'test/attention.test.ts', 'test/web-page.test.ts', 'test/lora-cli.test.ts'],
    env: { SEMFREEZE_HEAVY: '1' },
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 1_800_000,
    hookTimeout: 600_000,
  },
});
