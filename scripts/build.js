'use strict';
// The two builds an installation may need, with what npm itself carries:
// the addon through node-gyp (bundled with npm, so a source build pulls no
// build tool into node_modules) from binding.gyp, and the sample modules
// compiled exactly as a module author would (cc -shared -fPIC, the public
// header, no link flags). Developers and CI also have cmake-js and CMake
// (CMakeLists.txt) for the AddressSanitizer and native-test builds.
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');

/** node-gyp's entry script: npm's own (npm_config_node_gyp), else the one next to the npm running us. */
function nodeGyp() {
  const candidates = [process.env.npm_config_node_gyp];
  if (process.env.npm_execpath) candidates.push(path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push(path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const found = candidates.find((c) => c && fs.existsSync(c));
  if (!found) throw new Error('switchboard: cannot find node-gyp (npm bundles it); install it (npm install -g node-gyp) or use a prebuilt package');
  return found;
}

function buildAddon() {
  const args = [nodeGyp(), 'rebuild', '--release', '-j', String(Math.max(1, require('os').availableParallelism?.() ?? 2))];
  // Node's own headers sit next to the binary in most installs; using them
  // saves a download that an air-gapped machine cannot make.
  const nodeDir = path.resolve(process.execPath, '..', '..');
  if (!process.env.npm_config_nodedir && fs.existsSync(path.join(nodeDir, 'include', 'node', 'common.gypi'))) args.push(`--nodedir=${nodeDir}`);
  execFileSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
}

/** Compiles every modules/NAME/ into OUTDIR/mesibo_mod_NAME.so (the names mesibo.conf's module_dir expects). */
function buildSampleModules(outDir) {
  fs.mkdirSync(outDir, { recursive: true });
  const warn = ['-Wall', '-Wextra', ...(process.env.SWITCHBOARD_WERROR === '1' ? ['-Werror'] : [])];
  const modulesDir = path.join(root, 'modules');
  for (const name of fs.readdirSync(modulesDir).sort()) {
    const dir = path.join(modulesDir, name);
    if (!fs.statSync(dir).isDirectory()) continue;
    const srcs = fs.readdirSync(dir).filter((f) => /\.(c|cc|cpp)$/.test(f)).map((f) => path.join(dir, f));
    if (srcs.length === 0) continue;
    const cxx = srcs.some((f) => !f.endsWith('.c'));
    const compiler = cxx ? process.env.CXX || 'c++' : process.env.CC || 'cc';
    const out = path.join(outDir, `mesibo_mod_${name}.so`);
    execFileSync(compiler, ['-shared', '-fPIC', '-O2', ...warn, '-I', path.join(root, 'include'), '-o', out, ...srcs], { stdio: 'inherit' });
  }
}

module.exports = { buildAddon, buildSampleModules, root };
