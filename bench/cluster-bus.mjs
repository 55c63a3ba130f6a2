// bench/cluster-bus: what the cluster bus carries between two nodes through a
// local nats-server (test/nats.ts starts it), without the server around it.
//
// Node "a" publishes ITEMS copies of SIZE bytes for 16 users that node "b"
// has, 1,000 per loop turn (the bus batches a turn's copies per user into one
// NATS message); the clock stops when b has received the last one, in order.
// For comparison, the same copies as one NATS message each through the nats
// client alone. Both buses, the raw clients and nats-server share this
// machine's cores; the figure is a micro figure, not the cluster's.
//
//   npm run build:ts && node bench/cluster-bus.mjs [items] [size]
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTs } from './load-ts.mjs';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { ClusterBus } = require(path.join(root, 'dist/cluster/bus.js'));
const { connect } = require('nats');

const ITEMS = Number(process.argv[2] ?? 200_000);
const SIZE = Number(process.argv[3] ?? 100);
const USERS = 16;
const PER_TURN = 1000;


const turn = () => new Promise((r) => setImmediate(r));

function report(name, t0, cpu0) {
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const cpuShare = (cpu.user + cpu.system) / 1e6 / s;
  console.log(`${name}: ${Math.round(ITEMS / s).toLocaleString('en-US')} copies/s (${ITEMS.toLocaleString('en-US')} of ${SIZE} bytes in ${s.toFixed(2)} s; this process ${(cpuShare * 100).toFixed(0)} % of a core)`);
}

const { startNats } = loadTs(path.join(root, 'test/nats.ts'));
const nats = await startNats();
try {
  const payload = Buffer.alloc(SIZE, 120);
  const users = Array.from({ length: USERS }, (_, i) => `user${i}`);

  // ---- the bus, batched -------------------------------------------------------
  {
    let got = 0;
    let outOfOrder = 0;
    const last = new Map();
    let done;
    const finished = new Promise((r) => (done = r));
    const b = await ClusterBus.connect({
      servers: nats.url,
      node: 'bench-b',
      onUser(user, item) {
        const n = new DataView(item.buffer, item.byteOffset, item.byteLength).getUint32(0);
        if ((last.get(user) ?? -1) >= n) outOfOrder++;
        last.set(user, n);
        if (++got === ITEMS) done();
      },
    });
    const a = await ClusterBus.connect({ servers: nats.url, node: 'bench-a', onUser() {} });
    for (const u of users) b.subscribeUser(u);
    await b.flush();
    const t0 = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < ITEMS; i++) {
      const item = Buffer.from(payload);
      item.writeUInt32BE(i, 0);
      a.publishUser(users[i % USERS], item);
      if (i % PER_TURN === PER_TURN - 1) await turn();
    }
    await finished;
    report('bus, batched per user and turn', t0, cpu0);
    if (outOfOrder) console.log(`  ${outOfOrder} out of order`);
    await a.close();
    await b.close();
  }

  // ---- the nats client alone, one message per copy ----------------------------
  {
    let got = 0;
    let done;
    const finished = new Promise((r) => (done = r));
    const sub = await connect({ servers: nats.url });
    const pub = await connect({ servers: nats.url });
    for (const u of users) sub.subscribe(`raw.${u}`, { callback: () => ++got === ITEMS && done() });
    await sub.flush();
    const t0 = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < ITEMS; i++) {
      const item = Buffer.from(payload);
      item.writeUInt32BE(i, 0);
      pub.publish(`raw.${users[i % USERS]}`, item);
      if (i % PER_TURN === PER_TURN - 1) await turn();
    }
    await finished;
    report('nats client, one message per copy', t0, cpu0);
    await pub.close();
    await sub.close();
  }
} finally {
  await nats.close();
}
