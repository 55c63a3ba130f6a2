// What the server's JavaScript allocates per message on the plain path (no
// middleware, no script modules): a real server in a child process, real
// WebSocket clients in this one, and V8's sampling heap profiler in the
// server (through its own inspector, counting objects already collected
// too), attributing every sampled allocation to the function that made it.
//
// The delivery engine decides in C++ and hands back a batch read in place,
// so the server's own code may allocate nothing per message but one view
// per write (Delivery.writeBytes, copied into the turn's write buffer), and
// per loop turn the Immediate that sends that buffer. What the process allocates outside
// the server's code (uWebSockets.js lends each handler an ArrayBuffer) is
// reported beside it, as a total.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { tempDir } from './helpers';
import { apiCall } from './server-helpers';

const root = path.resolve(__dirname, '..');
const APP = 'allocation-token';

// The server, and a sampling heap profiler on its own thread's inspector:
// "start" and "stop" on stdin; "stop" prints the bytes sampled per
// function (name, file, line), for the functions of dist/ and in total.
const SCRIPT = `'use strict';
const inspector = require('node:inspector');
const readline = require('node:readline');
const { Server } = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
const session = new inspector.Session();
session.connect();
Server.start({ configText: process.argv[2], log: () => {} }).then((server) => {
  process.stdout.write('READY ' + server.port + '\\n');
  let turns = 0;
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (line === 'start') {
      turns = server.metrics.writeTurns;
      session.post('HeapProfiler.startSampling', { samplingInterval: 64, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true }, (e) => {
        process.stdout.write(e ? 'ERROR ' + e.message + '\\n' : 'STARTED\\n');
      });
    } else if (line === 'stop') {
      session.post('HeapProfiler.stopSampling', (e, r) => {
        if (e) return process.stdout.write('ERROR ' + e.message + '\\n');
        const sites = {};
        let total = 0;
        const walk = (n) => {
          const f = n.callFrame;
          total += n.selfSize;
          if (n.selfSize && f.url.includes('/dist/')) {
            const k = (f.functionName || '(anonymous)') + ' ' + path.basename(f.url) + ':' + (f.lineNumber + 1);
            sites[k] = (sites[k] || 0) + n.selfSize;
          }
          n.children.forEach(walk);
        };
        const path = require('node:path');
        walk(r.profile.head);
        process.stdout.write('PROFILE ' + JSON.stringify({ sites, total, turns: server.metrics.writeTurns - turns }) + '\\n');
      });
    }
  });
}, (e) => { process.stderr.write(String(e) + '\\n'); process.exit(1); });
`;

let child: ChildProcess | null = null;
const sockets: WebSocket[] = [];

afterEach(() => {
  for (const w of sockets.splice(0)) w.terminate();
  child?.kill('SIGKILL');
  child = null;
});

interface Profile {
  sites: Record<string, number>;
  total: number;
  /** Loop turns that wrote (the server's writeTurns) while sampling. */
  turns: number;
}

async function startServer(config: string): Promise<{ port: number; ask: (cmd: string) => Promise<string> }> {
  const dir = tempDir();
  const script = path.join(dir, 'server.js');
  fs.writeFileSync(script, SCRIPT);
  const c = spawn(process.execPath, [script, `listen = 127.0.0.1:0\ndata_dir = ${dir}\napp_token = ${APP}\nlog_level = 0\nrate_limit = 1000000\n${config}`], { stdio: ['pipe', 'pipe', 'inherit'] });
  child = c;
  const lines = readline.createInterface({ input: c.stdout! });
  const waiting: ((l: string) => void)[] = [];
  lines.on('line', (l) => waiting.shift()?.(l));
  const next = () => new Promise<string>((r) => waiting.push(r));
  const ready = await next();
  const port = Number(/^READY (\d+)/.exec(ready)?.[1]);
  return {
    port,
    ask: (cmd) => {
      const answer = next();
      c.stdin!.write(cmd + '\n');
      return answer;
    },
  };
}

async function connect(port: number, address: string): Promise<WebSocket> {
  const token = (await apiCall(port, APP, { op: 'useradd', address })).token as string;
  const ws = new WebSocket(`ws://127.0.0.1:${port}/?token=${token}`);
  sockets.push(ws);
  await new Promise<void>((resolve, reject) => {
    ws.once('message', () => resolve()); // hello
    ws.once('error', reject);
  });
  return ws;
}

/**
 * alice sends `n` messages to bob, `window` at a time; bob confirms each
 * with status 2, as the SDK does; a message is done once alice has its
 * "sent".
 */
async function traffic(alice: WebSocket, bob: WebSocket, first: number, n: number, window = 16): Promise<void> {
  bob.removeAllListeners('message');
  bob.on('message', (d) => {
    const f = JSON.parse(d.toString());
    if (f.op === 'msg') bob.send(JSON.stringify({ op: 'status', id: f.id, to: f.from, status: 2 }));
  });
  let next = first;
  let done = 0;
  await new Promise<void>((resolve) => {
    alice.removeAllListeners('message');
    alice.on('message', (d) => {
      const f = JSON.parse(d.toString());
      if (f.op !== 'status' || f.status !== 1) return;
      if (++done === n) return resolve();
      if (next < first + n) alice.send(JSON.stringify({ op: 'msg', id: next++, to: 'bob', data: 'hello' }));
    });
    for (let i = 0; i < window; i++) alice.send(JSON.stringify({ op: 'msg', id: next++, to: 'bob', data: 'hello' }));
  });
}

interface PerMessage {
  ours: Record<string, number>;
  total: number;
  /** Write turns per message. */
  turns: number;
}

async function perMessage(config: string): Promise<PerMessage> {
  const s = await startServer(config);
  const alice = await connect(s.port, 'alice');
  const bob = await connect(s.port, 'bob');
  await traffic(alice, bob, 1, 3000); // warm: the JIT, the engine's pools
  expect(await s.ask('start')).toBe('STARTED');
  const N = 4000;
  await traffic(alice, bob, 10_000, N);
  const line = await s.ask('stop');
  expect(line.startsWith('PROFILE ')).toBe(true);
  const p = JSON.parse(line.slice(8)) as Profile;
  const ours: Record<string, number> = {};
  for (const [k, v] of Object.entries(p.sites)) ours[k] = Math.round(v / N);
  return { ours, total: Math.round(p.total / N), turns: p.turns / N };
}

function report(what: PerMessage): string {
  return `bytes per message by function of dist/: ${JSON.stringify(what.ours)}; write turns per message: ${what.turns.toFixed(2)}; everything the process allocated: ${what.total} bytes per message`;
}

describe('JavaScript allocation per message on the plain path', () => {
  for (const [name, config] of [
    ['durable off', 'durable = off\n'],
    ['durable on, live copies', 'durable = on\n'],
  ] as const) {
    it(`${name}: nothing but one view per write`, async () => {
      const r = await perMessage(config);
      // Two writes per message, the copy to bob and the "sent" to alice, of
      // a Uint8Array view each (96 bytes as V8 lays it out and the
      // profiler samples it). The view may be inlined into its caller, so
      // the sites are summed. Per loop turn that writes, the server also
      // makes the Immediate that sends the turn's writes (Delivery.queue,
      // about 120 bytes as sampled): this ping-pong of two clients has a
      // turn per one or two messages (under load, a turn carries hundreds),
      // so the server's count of such turns is allowed for. Before the
      // engine, the TypeScript router made several kilobytes per message.
      const ours = Object.values(r.ours).reduce((a, v) => a + v, 0);
      expect(ours, report(r)).toBeLessThanOrEqual(2 * 104 + 128 * r.turns);
      console.log(`${name}: ${report(r)}`);
    }, 60_000);
  }
});
