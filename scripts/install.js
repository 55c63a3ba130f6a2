'use strict';
// `npm install` hook: use a prebuilt binary when one matches this platform,
// otherwise compile the addon from source with cmake-js. Installing from the
// packed tarball on a machine without a compiler therefore works as long as
// prebuilds/ carries a binary for it (N-API: one binary per platform/arch).
const { execSync } = require('child_process');
const path = require('path');
const root = path.join(__dirname, '..');

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
  const werror = process.env.SWITCHBOARD_WERROR === '1' ? ' --CDSWITCHBOARD_WERROR=ON' : '';
  execSync(`npx cmake-js compile --CDCMAKE_BUILD_TYPE=Release${werror}`, { cwd: root, stdio: 'inherit' });
}
