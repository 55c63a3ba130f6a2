// bench/store: the store's work per durable message, without sockets: each
// loop turn enqueues a batch (64 messages from 16 senders to 16 recipients),
// acknowledges the previous turn's batch (the delivered receipts) and commits
// once, as the server's group commit does. Prints µs per message.
//
//   npm run build:ts && node bench/store.mjs [messages] [batch]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { SqliteStore } = require(path.join(root, 'dist/store/sqlite.js'));

const N = Number(process.argv[2] ?? 200_000);
const B = Number(process.argv[3] ?? 64);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-store-bench-'));
const store = SqliteStore.open(path.join(dir, 'switchboard.db'));
const payload = Buffer.alloc(32, 120);
let id = 1;
const unacked = [];
const t0 = process.hrtime.bigint();
for (let i = 0; i < N; i += B) {
  for (let j = 0; j < B; j++) {
    const recipient = `u${j % 16}`;
    const sender = `s${j % 16}`;
    store.enqueue({ recipient, sender, id, refid: 0, groupid: 0, flags: 1, type: 0, expiry: 0, expiresAt: 0, payload });
    unacked.push([recipient, sender, id++]);
  }
  if (unacked.length >= 2 * B) for (const [r, s, n] of unacked.splice(0, B)) store.ack(r, s, n);
  store.flush();
}
for (const [r, s, n] of unacked.splice(0)) store.ack(r, s, n);
store.flush();
const us = Number(process.hrtime.bigint() - t0) / N / 1000;
const left = store.countPending();
store.close();
fs.rmSync(dir, { recursive: true, force: true });
console.log(`store: ${us.toFixed(1)} µs per durable message (enqueue, commit, ack), batches of ${B}, ${N.toLocaleString('en-US')} messages; ${left} left`);
