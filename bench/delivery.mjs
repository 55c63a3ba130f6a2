// bench/delivery: the delivery engine (docs/delivery.md) from JavaScript,
// with 1,000 connections: nanoseconds per message for the e2e bench's
// frames (the message in, the recipient's delivered status in, and a
// commit every 8 messages), through Core.submitRaw alone and through
// Delivery.submit (the core and the engine in one N-API call) + reading
// every write of the batch, as the wiring will (the sockets are a function
// that counts bytes). Then the
// engine without N-API (bench/router_native.cc). Medians of 3 repetitions.
//
//   npm run build:ts && node bench/delivery.mjs [messages]
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { Core } = require(path.join(root, 'dist/core.js'));
const { Delivery } = require(path.join(root, 'dist/delivery.js'));

const N = Number(process.argv[2] ?? 1_000_000);
const CONNS = 1000;
const REPS = 3;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function run(mode, route) {
  const core = Core.open({ configText: '' }, { onLog: () => {} });
  const d = new Delivery({ durable: mode.durable, graceMs: mode.graceMs, maxConnections: CONNS, maxInboxMessages: 1e9, maxInboxBytes: 1e15, rateLimit: 1e9, userRateLimit: 1e9 }, {}, core);
  const names = [], users = [], conns = [], msgs = [], statuses = [];
  for (let i = 0; i < CONNS; i++) {
    names.push(`user${i}`);
    users.push(d.userAdd(names[i]));
    conns.push(d.login(users[i], false));
    d.backlogDone(conns[i]);
  }
  for (let i = 0; i < CONNS; i++) {
    msgs.push(Buffer.from(JSON.stringify({ op: 'msg', id: i + 1, to: names[(i + 1) % CONNS], data: 'x'.repeat(40) })));
    statuses.push(Buffer.from(JSON.stringify({ op: 'status', id: i + 1, to: names[i], status: 2 })));
  }
  let bytes = 0;
  const send = (_conn, frame) => {
    bytes += frame.length;
  };
  const perform = () => {
    for (let w = 0; w < d.writeCount; w++) send(d.writeConn(w), d.writeBytes(w));
  };
  let now = 1000;
  let nextExpire = now;
  const one = (k) => {
    const i = k % CONNS;
    const to = (i + 1) % CONNS;
    if (!route) {
      const of = d.outFormat();
      core.submitRaw(names[i], msgs[i], of);
      core.submitRaw(names[to], statuses[i], of);
      return;
    }
    d.submit(users[i], conns[i], msgs[i], now);
    perform();
    d.submit(users[to], conns[to], statuses[i], now);
    perform();
    if (k % 8 === 7) {
      d.committed(d.commitBegin());
      perform();
      now++;
      // The live timer, as the server runs it: every quarter of the grace.
      if (mode.graceMs && now >= nextExpire) {
        d.expire(now);
        perform();
        nextExpire = now + Math.ceil(mode.graceMs / 4);
      }
    }
  };
  for (let k = 0; k < N / 10; k++) one(k);
  const t0 = process.hrtime.bigint();
  for (let k = 0; k < N; k++) one(k);
  const ns = Number(process.hrtime.bigint() - t0) / N;
  core.close();
  if (route && bytes === 0) throw new Error('the bench wrote nothing');
  return ns;
}

const modes = [
  { name: 'durable off', durable: false, graceMs: 0 },
  { name: 'durable on, grace 50', durable: true, graceMs: 50 },
  { name: 'durable on, grace 0', durable: true, graceMs: 0 },
];
console.log(`# bench/delivery  ${new Date().toISOString()}  node ${process.version}, ${CONNS} connections, ${N} messages x ${REPS}, median`);
console.log('| mode | submitRaw (2 frames) | Delivery.submit + writes | the engine\'s share |');
console.log('|---|---:|---:|---:|');
for (const m of modes) {
  const base = median(Array.from({ length: REPS }, () => run(m, false)));
  const full = median(Array.from({ length: REPS }, () => run(m, true)));
  console.log(`| ${m.name} | ${base.toFixed(0)} ns | ${full.toFixed(0)} ns | ${(full - base).toFixed(0)} ns |`);
}

try {
  const buildDir = path.join(root, 'build-bench');
  execFileSync('cmake', ['-S', root, '-B', buildDir, '-DSWITCHBOARD_BENCH=ON', '-DCMAKE_BUILD_TYPE=Release'], { stdio: 'pipe' });
  execFileSync('cmake', ['--build', buildDir, '--target', 'router_native', '-j2'], { stdio: 'pipe' });
  console.log('\n# without N-API (bench/router_native.cc)');
  console.log(execFileSync(path.join(buildDir, 'bench', 'router_native'), [String(N), String(CONNS)]).toString().trim());
} catch (e) {
  console.log(`\n# bench/router_native not built: ${e.message.split('\n')[0]}`);
}
