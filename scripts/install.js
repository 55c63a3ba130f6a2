'use strict';
// `npm install` hook: use a prebuilt addon when one loads on this platform
// (the packed tarball ships prebuilds/<platform>-<arch>/ with the addon and
// the sample modules, so it installs without a compiler), otherwise compile
// the addon with node-gyp and the sample modules into build/modules.
// SWITCHBOARD_BUILD_FROM_SOURCE=1 always compiles; SWITCHBOARD_WERROR=1 makes
// warnings errors (CI sets both).
const path = require('path');
const { buildAddon, buildSampleModules, root } = require('./build');

function prebuiltLoads() {
  try {
    require('node-gyp-build')(root);
    return true;
  } catch {
    return false;
  }
}

if (process.env.SWITCHBOARD_BUILD_FROM_SOURCE !== '1' && prebuiltLoads()) {
  console.log('switchboard: using the prebuilt addon');
} else {
  buildAddon();
  buildSampleModules(path.join(root, 'build', 'modules'));
  console.log('switchboard: built the addon (build/Release) and the sample modules (build/modules)');
}
