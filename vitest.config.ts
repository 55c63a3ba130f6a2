import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Removes each file's temp folders and child processes after it (test/helpers.ts tempDir, reap).
    setupFiles: ['test/setup.ts'],
    // Each test file gets its own process: modules are dlopen'd into it and
    // the AddressSanitizer run preloads libasan into node.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
