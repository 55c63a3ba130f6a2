#!/usr/bin/env node
'use strict';
// `node server.js [--config FILE]`: loads the module chain from mesibo.conf
// (or --config / MESIBO_CONF) and, until the WebSocket transport lands, opens
// a console on stdin for trying modules: each line is
//     FROM TO TEXT
// and is pushed through the chain as FROM's message to TO; the verdict, the
// delivery frame and whatever modules send back are printed. Ctrl-D or
// SIGINT/SIGTERM run every module's on_cleanup and exit 0.
const path = require('node:path');
const readline = require('node:readline');
const { Core } = require('./dist/index.js');

function configPath(argv) {
  const i = argv.indexOf('--config');
  if (i >= 0 && argv[i + 1]) return argv[i + 1];
  return process.env.MESIBO_CONF || path.join(process.cwd(), 'mesibo.conf');
}

const file = configPath(process.argv.slice(2));
let core;
try {
  core = Core.open({ configFile: file });
} catch (e) {
  console.error(`switchboard: cannot start: ${e.message}${e.code ? ` [${e.code}]` : ''}`);
  process.exit(1);
}
const names = core.modules.map((m) => m.name).join(', ') || '(none)';
console.log(`switchboard: chain loaded from ${file}: ${names}`);
core.on('message', (m) => console.log(`<- ${m.from} -> ${m.to} (from module ${m.module}): ${m.payload.toString()}`));

let id = 1;
const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on('line', (line) => {
  const m = /^\s*(\S+)\s+(\S+)\s+(.*)$/.exec(line);
  if (!m) {
    if (line.trim()) console.log('usage: FROM TO TEXT');
    return;
  }
  try {
    const r = core.submit(m[1], JSON.stringify({ op: 'msg', id: id++, to: m[2], data: m[3] }));
    console.log(r.verdict === 'pass' ? `-> deliver ${r.frame.toString()}` : '-> consumed by a module');
  } catch (e) {
    console.log(`-> error ${e.code}: ${e.message}`);
  }
});

function stop() {
  core.close();
  process.exit(0);
}
rl.on('close', () => setTimeout(stop, 50));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
