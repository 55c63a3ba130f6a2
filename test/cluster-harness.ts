// A cluster for the tests: a real PostgreSQL and a real nats-server on
// loopback in temporary folders, and N Switchboard nodes in child processes
// with `store = postgresql://...`, `cluster = nats://...` and `node = nI`.
// Everything is stopped by PID in close().
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { SwitchboardClient, type IncomingMessage, type PresenceEvent, type StatusEvent } from '../lib/client';
import { freePort, ServerProcess } from './child-server';
import { tempDir } from './helpers';
import { startNats, type NatsServer } from './nats';
import { startPostgres, type PgServer } from './pg';

export const APP = 'cluster-test-app-token';

export interface TestCluster {
  pg: PgServer;
  /** The database the nodes share. */
  db: string;
  nats: NatsServer;
  nodes: ServerProcess[];
  /** ws://127.0.0.1:PORT/ of each node. */
  urls: string[];
  /** POST /api on node `i`; throws on a failure answer. */
  api(i: number, body: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** A user made through node `i`'s API; returns its token. */
  user(i: number, address: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * `extraConf` is added to every node's config. A cluster given another's
 * `pg` gets a database of its own there (and its own nats-server), and
 * leaves that PostgreSQL running when it closes: a second cluster with
 * other settings costs a second or so.
 */
export async function startCluster(n: number, extraConf = '', shared?: PgServer): Promise<TestCluster> {
  const pg = shared ?? (await startPostgres({ fsync: false }));
  let nats: NatsServer | null = null;
  const nodes: ServerProcess[] = [];
  let db = '';
  try {
    nats = await startNats();
    db = await pg.createDatabase();
    const tmp = tempDir('sb-cluster-');
    for (let i = 0; i < n; i++) {
      const dir = path.join(tmp, `n${i}`);
      fs.mkdirSync(dir);
      const conf = `store = ${pg.url(db)}\ncluster = ${nats.url}\nnode = n${i}\n${extraConf}`;
      nodes.push(new ServerProcess(dir, await freePort(), APP, conf));
    }
    // One at a time: the first creates the schema (the others wait on its lock anyway).
    for (const node of nodes) await node.start();
  } catch (e) {
    for (const node of nodes) if (node.running) await node.kill('SIGKILL');
    await nats?.close();
    if (!shared) await pg.close();
    throw e;
  }
  const natsServer = nats;
  const api = async (i: number, body: Record<string, unknown>) => {
    const res = await fetch(`http://127.0.0.1:${nodes[i].port}/api`, { method: 'POST', headers: { Authorization: `Bearer ${APP}` }, body: JSON.stringify(body) });
    const json = (await res.json()) as Record<string, unknown>;
    if (!json.ok) throw new Error(`node ${i} api ${JSON.stringify(body)}: ${JSON.stringify(json)}`);
    return json;
  };
  return {
    pg,
    db,
    nats: natsServer,
    nodes,
    urls: nodes.map((s) => `ws://127.0.0.1:${s.port}/`),
    api,
    user: async (i, address) => (await api(i, { op: 'useradd', address })).token as string,
    async close() {
      for (const node of nodes) if (node.running) await node.kill('SIGTERM');
      await natsServer.close();
      if (!shared) await pg.close();
    },
  };
}

export interface Peer {
  c: SwitchboardClient;
  got: IncomingMessage[];
  statuses: StatusEvent[];
  presence: PresenceEvent[];
  texts(): string[];
}

/** An SDK client on `url` (or a list: failover) that records what it receives; `clients` collects it for cleanup. */
export async function peer(url: string | string[], token: string, clients: SwitchboardClient[], device = 'd'): Promise<Peer> {
  const c = new SwitchboardClient({ url, token, device, WebSocket: WebSocket as never, reconnect: { minDelayMs: 20, maxDelayMs: 300 } });
  clients.push(c);
  const got: IncomingMessage[] = [];
  const statuses: StatusEvent[] = [];
  const presence: PresenceEvent[] = [];
  c.on('message', (m) => got.push(m));
  c.on('status', (st) => statuses.push(st));
  c.on('presence', (p) => presence.push(p));
  c.on('error', () => undefined);
  await c.connect();
  return { c, got, statuses, presence, texts: () => got.map((m) => m.text ?? '') };
}
