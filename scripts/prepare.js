'use strict';
// `npm install` in a checkout (and `npm pack`): compile the TypeScript into
// dist/, which `npm start`, the `switchboard` command and `require('switchboard')`
// load. An install from the packed tarball does not run this: dist/ is in it.
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const root = path.join(__dirname, '..');

let tsc;
try {
  tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
} catch {
  // An install without devDependencies (--omit=dev) keeps a dist/ it has.
  if (fs.existsSync(path.join(root, 'dist', 'cli.js'))) process.exit(0);
  console.error('switchboard: dist/ is missing and TypeScript is not installed; run `npm install` without --omit=dev');
  process.exit(1);
}
execFileSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
