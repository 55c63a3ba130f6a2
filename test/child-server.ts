// The server in a child process, for tests that stop or kill it
// (kill.test.ts, restart.test.ts). The script prints "READY <port>" once it
// listens and exits 2 on E_LISTEN, so a caller can retry while a killed
// predecessor still holds the port.
import { spawn, type ChildProcess } from 'node:child_process';
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

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The server in a child process: started (retrying while a killed predecessor holds the port), killed, started again. */
export class ServerProcess {
  private readonly script: string;
  private readonly conf: string;
  private child: ChildProcess | null = null;
  private exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | null = null;
  /** The last lines the server logged, for failure messages. */
  readonly log: string[] = [];
  starts = 0;
  startMs: number[] = [];

  constructor(
    readonly dir: string,
    readonly port: number,
    appToken: string,
    extraConf: string,
  ) {
    [this.script, this.conf] = writeChildServer(dir, port, appToken, extraConf);
  }

  private note(line: string): void {
    this.log.push(line);
    if (this.log.length > 200) this.log.splice(0, this.log.length - 200);
  }

  /** Starts the server and resolves once it listens; retries while the port is still held by the previous one. */
  async start(): Promise<void> {
    const t0 = Date.now();
    for (let attempt = 0; ; attempt++) {
      const child = spawn(process.execPath, [this.script, this.conf], { stdio: ['ignore', 'pipe', 'pipe'] });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
      let out = '';
      let err = '';
      const ready = new Promise<boolean>((resolve) => {
        child.stdout!.on('data', (d) => {
          out += d;
          if (out.includes('READY')) resolve(true);
        });
        child.stderr!.on('data', (d) => {
          err += d;
          for (const l of String(d).split('\n')) if (l) this.note(l);
        });
        void exited.then(() => resolve(false));
      });
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 15_000)));
      const r = await Promise.race([ready, timeout]);
      clearTimeout(timer);
      if (r === true) {
        this.child = child;
        this.exited = exited;
        this.starts++;
        this.startMs.push(Date.now() - t0);
        return;
      }
      if (r === 'timeout') child.kill('SIGKILL');
      const e = await exited;
      if (e.code === 2 && attempt < 50) {
        await sleep(100); // E_LISTEN: the port is not free yet
        continue;
      }
      throw new Error(`the server did not start (exit ${e.code}, signal ${e.signal}):\n${err}\n${this.log.slice(-20).join('\n')}`);
    }
  }

  get running(): boolean {
    return this.child !== null;
  }

  /** Sends `signal` to the running server and returns at once (SIGSTOP and SIGCONT: a node that stalls). */
  signal(signal: NodeJS.Signals): void {
    this.child!.kill(signal);
  }

  /** Sends `signal` and waits for the process to end. */
  async kill(signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const child = this.child!;
    const exited = this.exited!;
    this.child = null;
    this.exited = null;
    child.kill(signal);
    return exited;
  }
}

