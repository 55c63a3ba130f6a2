#!/usr/bin/env node
'use strict';
// `node server.js [--config FILE]`: starts Switchboard from ./mesibo.conf (or
// --config FILE, or $MESIBO_CONF). A bad config, a busy port or an
// unwritable data folder stops start-up with one line on stderr and exit 1.
// SIGINT/SIGTERM stop accepting, close connections, flush the store, run
// every module's on_cleanup and exit 0.
const path = require('node:path');
const { Server } = require('./dist/index.js');

function configPath(argv) {
  const i = argv.indexOf('--config');
  if (i >= 0 && argv[i + 1]) return argv[i + 1];
  return process.env.MESIBO_CONF || path.join(process.cwd(), 'mesibo.conf');
}

Server.start({ configFile: configPath(process.argv.slice(2)) }).then(
  (server) => {
    let stopping = false;
    const stop = () => {
      if (stopping) return;
      stopping = true;
      server.stop().then(() => process.exit(0));
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  },
  (e) => {
    console.error(`switchboard: cannot start: ${e.message}${e.code ? ` [${e.code}]` : ''}`);
    process.exit(1);
  },
);
