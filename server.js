#!/usr/bin/env node
'use strict';
// `node server.js [--config FILE]` (what `npm start` runs) is the
// `switchboard` command: lib/cli.ts has the flags, `init`, the signals and
// the exit codes (`--help` lists them).
let cli;
try {
  cli = require('./dist/cli.js');
} catch (e) {
  if (e.code !== 'MODULE_NOT_FOUND' || !String(e.message).includes('dist/cli.js')) throw e;
  // A checkout whose install skipped scripts (--ignore-scripts) has no dist/.
  console.error('switchboard: cannot start: dist/ is missing; run `npm run build:ts` (npm install does it) [E_NOT_BUILT]');
  process.exit(1);
}
cli.main(process.argv.slice(2)).then((code) => process.exit(code));
