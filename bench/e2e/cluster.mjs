// bench/e2e's cluster rows (`--servers cluster`): the PostgreSQL and
// nats-server the nodes share, started as the tests start them (test/pg.ts,
// test/nats.ts: loopback, temporary folders, stopped by PID), pinned to the
// servers' core, and what the runner reads from them around each run: the
// CPU of their processes and PostgreSQL's WAL position, and the nodes' own
// commit counters from /metrics.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTs } from '../load-ts.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(import.meta.url);

/** The PIDs of `pid` and all its descendants (PostgreSQL's postmaster and the backends it forks). */
export function processTree(pid) {
  const children = new Map();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  const out = [];
  const walk = (p) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

/** The nats-server listening on `port` (test/nats.ts starts it with `-p PORT` and does not say its PID). */
function natsPid(port) {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (argv[0].endsWith('nats-server') && argv[argv.indexOf('-p') + 1] === String(port)) return Number(d);
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`no nats-server process found for port ${port}`);
}

/** Pins every thread of each process to `core` (children forked later inherit it). */
function pinTo(pids, core) {
  for (const pid of pids) execFileSync('taskset', ['-a', '-p', '-c', core, String(pid)], { stdio: 'ignore' });
}

/** LSN text "X/Y" as a byte position. */
const lsnBytes = (t) => {
  const [hi, lo] = t.split('/');
  return Number((BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`));
};

/**
 * Starts PostgreSQL 15 (fsync on, its default) and, with `nats`, a nats-server; with `core`, pins both (all their
 * processes and threads) to it. Returns what the runner needs of them; close() stops them by PID.
 */
export async function startBackends({ nats: wantNats, core }) {
  const { startPostgres } = loadTs(path.join(root, 'test/pg.ts'));
  const { startNats } = loadTs(path.join(root, 'test/nats.ts'));
  const { Client } = require('pg');
  const pg = await startPostgres();
  let nats = null;
  let admin = null;
  try {
    // One connection kept for the WAL readings: a new one per reading would fork a backend each time.
    admin = new Client({ connectionString: pg.url('postgres') });
    await admin.connect();
    const backend = (await admin.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    const st = fs.readFileSync(`/proc/${backend}/stat`, 'utf8');
    const postmaster = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
    nats = wantNats ? await startNats() : null;
    const natsPids = nats ? [natsPid(nats.port)] : [];
    if (core !== undefined) pinTo([...processTree(postmaster), ...natsPids], core);
    return {
      pg,
      nats,
      pgPids: () => processTree(postmaster),
      natsPids: () => natsPids,
      /** PostgreSQL's current WAL insert position in bytes: what every write, commits included, adds to. */
      async walBytes() {
        return lsnBytes((await admin.query('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0].l);
      },
      async close() {
        await admin.end().catch(() => undefined);
        await nats?.close();
        await pg.close();
      },
    };
  } catch (e) {
    await admin?.end().catch(() => undefined);
    await nats?.close();
    await pg.close();
    throw e;
  }
}

/** A node's store counters from its /metrics: group commits and copies written so far. */
export async function storeCounters(port) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const read = (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { commits: read('switchboard_store_commit_seconds_count'), copies: read('switchboard_store_copies_written_total') };
}
