// The server in a child process, for tests that stop or kill it
// (kill.test.ts, restart.test.ts). The script prints "READY <port>" once it
// listens and exits 2 on E_LISTEN, so a caller can retry while a killed
// predecessor still holds the port.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const root = path.resolve(__dirname, '..');

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const SERVER_SCRIPT = `'use strict';
const fs = require('node:fs');
const { Server } = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
const configText = fs.readFileSync(process.argv[2], 'utf8');
Server.start({ configText, log: (line) => process.stderr.write(line + '\\n') }).then(
  (server) => {
    let stopping = false;
    const stop = () => {
      if (stopping) return;
      stopping = true;
      server.stop().then(() => process.exit(0), (e) => { process.stderr.write('STOP FAILED ' + ((e && e.stack) || e) + '\\n'); process.exit(3); });
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    process.stdout.write('READY ' + server.port + '\\n');
  },
  (e) => {
    process.stderr.write('START FAILED [' + (e.code || '') + '] ' + e.message + '\\n');
    process.exit(e.code === 'E_LISTEN' ? 2 : 1);
  },
);
`;

/** Writes the child's script and config (plus `extraConf` lines) into `dir`; returns [script, config] paths for spawn. */
export function writeChildServer(dir: string, port: number, appToken: string, extraConf = ''): [string, string] {
  const script = path.join(dir, 'server.js');
  const conf = path.join(dir, 'switchboard.conf');
  fs.writeFileSync(script, SERVER_SCRIPT);
  fs.writeFileSync(conf, `listen = 127.0.0.1:${port}\ndata_dir = ${path.join(dir, 'data')}\napp_token = ${appToken}\nrate_limit = 1000000\n${extraConf}`);
  return [script, conf];
}
