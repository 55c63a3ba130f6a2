'use strict';
// `npm pack` / `npm publish`: the tarball always carries what runs without a
// compiler: dist/ (compiled by the prepare script, which npm runs right after
// this one), and for this platform
// prebuilds/<platform>-<arch>/switchboard.node (prebuildify, N-API: one
// binary for every Node version) and prebuilds/<platform>-<arch>/modules/
// (the sample modules `switchboard init` points its config at).
const { execSync } = require('child_process');
const path = require('path');
const { buildSampleModules, root } = require('./build');

execSync(`npx prebuildify --napi --strip -t ${process.version.slice(1)}`, { cwd: root, stdio: 'inherit' });
const platform = `${process.platform}-${process.arch}`;
buildSampleModules(path.join(root, 'prebuilds', platform, 'modules'));
// prebuildify rebuilt build/ with node-gyp (its addon is the same code);
// put the sample modules back where a checkout's mesibo.conf looks.
buildSampleModules(path.join(root, 'build', 'modules'));
console.log(`switchboard: prebuilt the addon and the sample modules for ${platform}`);
