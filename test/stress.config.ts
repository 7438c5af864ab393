// `npm run test:stress`: the load and graceful-shutdown suite (minutes, not seconds), one file at a time so
// nothing else competes for the two cores while memory and throughput are measured.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/stress/**/*.test.ts'],
    testTimeout: 600_000,
    hookTimeout: 300_000,
    pool: 'forks',
    fileParallelism: false,
    reporters: ['default'],
  },
});
