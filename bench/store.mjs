// bench/store: the store's work per durable message, without sockets.
//
// First, SQLite's cost per message: each loop turn enqueues a batch (64
// messages from 16 senders to 16 recipients), acknowledges the previous
// turn's batch (the delivered receipts) and commits once, as the server's
// group commit does. Prints µs per message.
//
// Then the engines side by side: the same loop for batches of 1, 8, 64 and
// 512 copies, on SQLite and on a real PostgreSQL 15 started as the tests
// start it (test/pg.ts; fsync on, PostgreSQL's default), one commit in
// flight at a time as in the server. Prints commits and copies per second.
// PostgreSQL runs on the same machine, so both engines share its cores.
//
// Last, the hot reads on PostgreSQL (token lookup at login, a group's
// members, a recipient's inbox count) with 10,000 users in 1,000 groups:
// reads per second one at a time and 8 at once (the read pool's size).
//
//   npm run build:ts && node bench/store.mjs [messages] [batch] [seconds per cell]
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTs } from './load-ts.mjs';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { SqliteStore } = require(path.join(root, 'dist/store/sqlite.js'));
const { PostgresStore } = require(path.join(root, 'dist/store/postgres.js'));

const N = Number(process.argv[2] ?? 200_000);
const B = Number(process.argv[3] ?? 64);
const SECONDS = Number(process.argv[4] ?? 3);
const payload = Buffer.alloc(32, 120);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-store-bench-'));

function copy(j, id) {
  return { recipient: `u${j % 16}`, sender: `s${j % 16}`, id, refid: 0, groupid: 0, flags: 1, type: 0, expiry: 0, expiresAt: 0, payload };
}

// ---- SQLite, µs per durable message ------------------------------------------
{
  const store = SqliteStore.open(path.join(dir, 'per-message.db'));
  let id = 1;
  const unacked = [];
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i += B) {
    for (let j = 0; j < B; j++) {
      const m = copy(j, id++);
      store.enqueue(m);
      unacked.push([m.recipient, m.sender, m.id]);
    }
    if (unacked.length >= 2 * B) for (const [r, s, n] of unacked.splice(0, B)) store.ack(r, s, n);
    store.flush();
  }
  for (const [r, s, n] of unacked.splice(0)) store.ack(r, s, n);
  store.flush();
  const us = Number(process.hrtime.bigint() - t0) / N / 1000;
  const left = store.countPending();
  store.close();
  console.log(`store: ${us.toFixed(1)} µs per durable message (enqueue, commit, ack), batches of ${B}, ${N.toLocaleString('en-US')} messages; ${left} left`);
}

// ---- the engines, commits and copies per second --------------------------------


/** Batches of `batch` copies for SECONDS: enqueue, ack the batch before, commit (awaited if it returns a Promise). */
async function run(store, batch) {
  let id = 1;
  let commits = 0;
  let previous = [];
  const end = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  while (performance.now() < end) {
    const current = [];
    for (let j = 0; j < batch; j++) {
      const m = copy(j, id++);
      store.enqueue(m);
      current.push(m);
    }
    for (const m of previous) store.ack(m.recipient, m.sender, m.id);
    previous = current;
    await store.commit();
    commits++;
  }
  const seconds = (performance.now() - t0) / 1000;
  return { commits: commits / seconds, copies: (commits * batch) / seconds };
}

/** Reads per second for SECONDS: `read(i)` awaited one at a time, then `parallel` at once. */
async function reads(read, parallel) {
  const rates = [];
  for (const width of [1, parallel]) {
    let n = 0;
    const t0 = performance.now();
    const end = t0 + SECONDS * 1000;
    await Promise.all(
      Array.from({ length: width }, async () => {
        while (performance.now() < end) await read(n++);
      }),
    );
    rates.push((n / (performance.now() - t0)) * 1000);
  }
  return rates;
}

async function hotReads(store) {
  for (let u = 0; u < 10_000; u++) await store.addUser(`user${u}`, `hash${u}`);
  for (let g = 1; g <= 1_000; g++) {
    await store.addGroup(g, `group${g}`);
    await store.editMembers(g, Array.from({ length: 10 }, (_, k) => `user${(g * 10 + k) % 10_000}`), []);
  }
  for (let u = 0; u < 10_000; u++) store.enqueue({ ...copy(0, u), recipient: `user${u}` });
  await store.commit();
  return [
    ['userByTokenHash (login)', await reads((i) => store.userByTokenHash(`hash${i % 10_000}`), 8)],
    ['members (group message)', await reads((i) => store.members((i % 1_000) + 1), 8)],
    ['queued (inbox count)', await reads((i) => store.queued(`user${i % 10_000}`), 8)],
  ];
}

const batches = [1, 8, 64, 512];
let readRows = [];
const rows = [];
for (const batch of batches) {
  const store = SqliteStore.open(path.join(dir, `engines-${batch}.db`));
  rows.push({ engine: 'sqlite', batch, ...(await run(store, batch)) });
  store.close();
}
const { postgresBinDir, startPostgres } = loadTs(path.join(root, 'test/pg.ts'));
let pgNote = '';
if (postgresBinDir()) {
  const pg = await startPostgres();
  try {
    for (const batch of batches) {
      const store = await PostgresStore.open(pg.url(await pg.createDatabase()));
      rows.push({ engine: 'postgresql', batch, ...(await run(store, batch)) });
      await store.close();
    }
    const store = await PostgresStore.open(pg.url(await pg.createDatabase()));
    readRows = await hotReads(store);
    await store.close();
  } finally {
    await pg.close();
  }
} else {
  pgNote = ' (PostgreSQL 15 is not installed: apt-get install postgresql)';
}
fs.rmSync(dir, { recursive: true, force: true });

const fmt = (n) => Math.round(n).toLocaleString('en-US');
console.log(`\nstore engines: ${SECONDS} s per cell, one commit in flight, each batch also acks the one before; ${os.cpus().length} vCPU (${os.cpus()[0]?.model ?? 'unknown CPU'})${pgNote}`);
console.log('engine       batch   commits/s    copies/s');
for (const r of rows) console.log(`${r.engine.padEnd(12)} ${String(r.batch).padStart(5)} ${fmt(r.commits).padStart(11)} ${fmt(r.copies).padStart(11)}`);
if (readRows.length) {
  console.log('\npostgresql hot reads        reads/s, 1 at a time   reads/s, 8 at once');
  for (const [name, [one, eight]] of readRows) console.log(`${name.padEnd(27)} ${fmt(one).padStart(22)} ${fmt(eight).padStart(20)}`);
}
