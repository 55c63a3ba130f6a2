// The durability guarantee of a cluster (issue 15, docs/cluster.md "What
// waits where during an outage"): a message acknowledged as sent reaches
// each recipient at least once, in per-sender order, when one node is
// SIGKILLed under load, when NATS restarts, and when PostgreSQL stops; and
// nothing that could not be kept is acknowledged.
//
// Three real nodes on a real PostgreSQL and nats-server
// (test/cluster-harness.ts), driven by SDK clients that know all three URLs
// and move to the next when a connection ends. Senders stream with a window
// of messages without "sent" (the SDK resends those, with the same ids, on
// its next connection); recipients come and go. At the end every recipient
// is online, and the test checks every (sender, recipient, message) that
// got "sent": delivered at least once, and per sender and recipient the
// first arrivals in send order (duplicates allowed, as in kill.test.ts).
//
// Replay a failure with the seed it prints:
//   SWITCHBOARD_CLUSTER_KILL_SEED=1234 npx vitest run test/cluster-kill.test.ts
// The seed fixes every choice the test makes (which node dies when and for
// how long, the recipients' comings and goings, who gets which message, when
// NATS and PostgreSQL stop); how far the load gets meanwhile still depends on
// the machine. SWITCHBOARD_CLUSTER_KILL_ROUNDS sets the number of kills
// (default 6).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { SwitchboardClient, type IncomingMessage } from '../lib/client';
import { startCluster, type TestCluster } from './cluster-harness';
import { until } from './helpers';

const SEED = process.env.SWITCHBOARD_CLUSTER_KILL_SEED ? Number(process.env.SWITCHBOARD_CLUSTER_KILL_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const KILLS = Number(process.env.SWITCHBOARD_CLUSTER_KILL_ROUNDS ?? 6);
/** Messages a sender has without a "sent" status yet. */
const WINDOW = 16;
const NODES = 3;
/** The close code of a session whose messages the store could not keep (lib/server/protocol.ts CLOSE_STORE_FAILED). */
const CLOSE_STORE_FAILED = 1011;
// Recipients stay offline for whole rounds while senders stream to them; the
// inbox limit has its own tests, and here every refusal would be a lost message.
const ROOMY_INBOX = 'max_inbox_messages = 1000000\n';

// ---------------------------------------------------------------------------
// Seeded randomness (mulberry32), one stream per use so that the choices of
// one part do not depend on how far another got.

function rngFrom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
type Rng = () => number;
const randInt = (rng: Rng, lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** The URLs starting at node `first`: where a client connects first, then the others in turn. */
const from = (urls: string[], first: number) => urls.map((_, i) => urls[(first + i) % urls.length]);

// ---------------------------------------------------------------------------
// The load.

interface Sent {
  seq: number;
  to: string;
  /** The SDK's id: statuses name it. */
  id: number;
  at: number;
  /** Got "sent" (or a receipt that implies it): it must not be lost. */
  acked: boolean;
  ackedAt: number;
}

interface Arrival {
  from: string;
  seq: number;
  at: number;
}

class Load {
  readonly problems: string[] = [];
  readonly senders: Sender[] = [];
  readonly recipients: Recipient[] = [];
  /** Set once the test ends its clients: failures then are the test's own doing. */
  ending = false;

  constructor(readonly name: string) {}

  problem(text: string): void {
    if (this.problems.length < 200) this.problems.push(text);
  }

  recipient(name: string): Recipient {
    return this.recipients.find((r) => r.name === name)!;
  }

  pump(): void {
    for (const s of this.senders) s.pump();
  }

  stopGenerating(): void {
    for (const s of this.senders) s.generating = false;
  }

  /** Waits until every sender has "sent" for everything it sent. */
  async allAcked(ms: number): Promise<void> {
    await until(() => this.senders.every((s) => s.outstanding === 0), ms).catch(() => undefined);
    for (const s of this.senders) {
      const open = s.msgs.filter((m) => !m.acked);
      if (open.length) this.problem(`${s.name} has no "sent" for ${open.length} messages after the load (seq ${open.slice(0, 20).map((m) => m.seq).join(',')}; client ${s.client.state})`);
    }
  }

  /** Waits until every acknowledged message has arrived, then for a quiet moment (late duplicates and inversions show). */
  async delivered(ms: number): Promise<void> {
    await until(() => this.missing().length === 0, ms).catch(() => undefined);
    await sleep(300);
  }

  missing(): Sent[] {
    const out: Sent[] = [];
    for (const s of this.senders) for (const m of s.msgs) if (m.acked && !this.recipient(m.to).first.has(`${s.name}|${m.seq}`)) out.push(m);
    return out;
  }

  /** The checks of kill.test.ts: every acknowledged message delivered, first arrivals in per-sender order. */
  check(): string[] {
    const lost = new Map<string, number[]>();
    for (const s of this.senders) {
      for (const m of s.msgs) {
        if (!m.acked || this.recipient(m.to).first.has(`${s.name}|${m.seq}`)) continue;
        const k = `${s.name}->${m.to}`;
        if (!lost.has(k)) lost.set(k, []);
        lost.get(k)!.push(m.seq);
      }
    }
    for (const [k, seqs] of lost) this.problem(`LOST: ${seqs.length} messages ${k} acknowledged as sent were never delivered: seq ${seqs.slice(0, 40).join(',')}${seqs.length > 40 ? ',...' : ''}`);
    for (const r of this.recipients) {
      const last = new Map<string, number>();
      const inversions = new Map<string, string[]>();
      for (const a of r.arrivals) {
        if (r.first.get(`${a.from}|${a.seq}`) !== a) continue; // a duplicate
        const prev = last.get(a.from) ?? 0;
        if (a.seq < prev) {
          const k = `${a.from}->${r.name}`;
          if (!inversions.has(k)) inversions.set(k, []);
          inversions.get(k)!.push(`${a.seq} after ${prev}`);
        }
        last.set(a.from, Math.max(prev, a.seq));
      }
      for (const [k, list] of inversions) this.problem(`ORDER: ${list.length} first arrivals ${k} out of order: ${list.slice(0, 20).join('; ')}${list.length > 20 ? '; ...' : ''}`);
    }
    return this.problems;
  }

  summary(): string {
    const sent = this.senders.reduce((n, s) => n + s.msgs.length, 0);
    const acked = this.senders.reduce((n, s) => n + s.msgs.filter((m) => m.acked).length, 0);
    const arrivals = this.recipients.reduce((n, r) => n + r.arrivals.length, 0);
    const firsts = this.recipients.reduce((n, r) => n + r.first.size, 0);
    const ends = this.senders.flatMap((s) => s.ends);
    const byCode = new Map<number, number>();
    for (const c of ends) byCode.set(c, (byCode.get(c) ?? 0) + 1);
    return [
      `${this.name}: ${sent} messages sent, ${acked} acknowledged as sent`,
      `delivered: ${firsts} distinct, ${arrivals} arrivals (${arrivals - firsts} duplicates across a recipient's sessions); recipients' sessions ${this.recipients.map((r) => `${r.name} ${r.sessions}`).join(', ')}`,
      `senders' connections ended ${ends.length} times (close codes ${[...byCode].map(([c, n]) => `${c}: ${n}`).join(', ') || 'none'})`,
    ].join('\n');
  }

  close(): void {
    this.ending = true;
    for (const s of this.senders) s.client.close();
    for (const r of this.recipients) r.disconnect();
  }
}

class Sender {
  readonly msgs: Sent[] = [];
  private readonly byId = new Map<number, Sent>();
  readonly client: SwitchboardClient;
  outstanding = 0;
  generating = true;
  /** The close codes of this sender's connections that ended. */
  readonly ends: number[] = [];
  private readonly rng: Rng;

  constructor(
    private readonly load: Load,
    readonly name: string,
    token: string,
    urls: string[],
    private readonly to: string[],
    seed: number,
  ) {
    this.rng = rngFrom(seed);
    this.client = new SwitchboardClient({ url: urls, token, WebSocket: WebSocket as never, reconnect: { minDelayMs: 20, maxDelayMs: 300 } });
    this.client.on('status', (st) => {
      const m = this.byId.get(st.id);
      if (!m) load.problem(`${name} got status ${st.status} for id ${st.id}, which it did not send`);
      else if (st.from !== m.to) load.problem(`${name} got status ${st.status} for its message ${m.seq} from ${st.from}, but sent it to ${m.to}`);
    });
    this.client.on('disconnected', (e) => this.ends.push(e.code));
    this.client.on('error', () => undefined);
  }

  /** Fills the window with new messages; the SDK holds them while it has no connection. */
  pump(): void {
    while (this.generating && this.outstanding < WINDOW) {
      const to = this.to[randInt(this.rng, 0, this.to.length - 1)];
      const seq = this.msgs.length + 1;
      const sending = this.client.send(to, `${this.name}:${seq}`);
      const m: Sent = { seq, to, id: sending.id, at: Date.now(), acked: false, ackedAt: 0 };
      this.msgs.push(m);
      this.byId.set(m.id, m);
      this.outstanding++;
      sending.sent.then(
        () => {
          m.acked = true;
          m.ackedAt = Date.now();
          this.outstanding--;
          this.pump();
        },
        (e: { code?: string; message?: string }) => {
          this.outstanding--;
          if (!this.load.ending) this.load.problem(`${this.name}'s message ${seq} to ${to} failed: ${e.code} ${e.message}`);
        },
      );
    }
  }
}

class Recipient {
  client: SwitchboardClient | null = null;
  /** Every arrival, in order, over all of this recipient's sessions. */
  readonly arrivals: Arrival[] = [];
  /** The first arrival of each (sender, seq). */
  readonly first = new Map<string, Arrival>();
  sessions = 0;
  private timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly load: Load,
    readonly name: string,
    private readonly token: string,
    private readonly urls: string[],
  ) {}

  get online(): boolean {
    return this.client !== null;
  }

  /** A new session (a new client, so a repeat across sessions counts as a duplicate); resolves once logged in. */
  async connect(): Promise<void> {
    if (this.client) return;
    const c = new SwitchboardClient({ url: this.urls, token: this.token, WebSocket: WebSocket as never, reconnect: { minDelayMs: 20, maxDelayMs: 300 } });
    this.client = c;
    this.sessions++;
    c.on('message', (m) => this.got(m));
    c.on('error', () => undefined);
    await c.connect().catch(() => undefined);
  }

  disconnect(): void {
    this.client?.close();
    this.client = null;
  }

  /** Runs `fn` after `ms`, unless the recipient's schedule is cleared first. */
  later(ms: number, fn: () => void): void {
    this.timers.push(setTimeout(fn, ms));
  }

  clearSchedule(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
  }

  private got(m: IncomingMessage): void {
    const [sender, seqText] = (m.text ?? '').split(':');
    const seq = Number(seqText);
    if (sender !== m.from || !Number.isInteger(seq) || m.to !== this.name) {
      this.load.problem(`${this.name} got ${JSON.stringify(m.text)} from ${m.from} to ${m.to}`);
      return;
    }
    const s = this.load.senders.find((x) => x.name === sender);
    const sent = s?.msgs[seq - 1];
    if (!sent) this.load.problem(`${this.name} got ${sender}'s message ${seq}, which was never sent`);
    else if (sent.to !== this.name) this.load.problem(`${this.name} got ${sender}'s message ${seq}, which is for ${sent.to}`);
    const a: Arrival = { from: sender, seq, at: Date.now() };
    this.arrivals.push(a);
    const key = `${sender}|${seq}`;
    if (!this.first.has(key)) this.first.set(key, a);
  }
}

/** Senders s0..s{n-1} and recipients r0..r{m-1}, spread over the nodes (each starts on node i % 3 and knows all three). */
async function spread(cluster: TestCluster, load: Load, prefix: string, nSenders: number, nRecipients: number, seed: number): Promise<void> {
  const rNames = Array.from({ length: nRecipients }, (_, i) => `${prefix}r${i}`);
  for (let i = 0; i < nRecipients; i++) load.recipients.push(new Recipient(load, rNames[i], await cluster.user(i % NODES, rNames[i]), from(cluster.urls, i % NODES)));
  for (let i = 0; i < nSenders; i++) {
    const name = `${prefix}s${i}`;
    const s = new Sender(load, name, await cluster.user(i % NODES, name), from(cluster.urls, i % NODES), rNames, seed + i);
    load.senders.push(s);
    await s.client.connect();
  }
}

async function health(cluster: TestCluster, i: number): Promise<{ status: number; body: { ok: boolean; code?: string; cluster?: { connected: boolean; nodes: string[] } } }> {
  const res = await fetch(`http://127.0.0.1:${cluster.nodes[i].port}/health`);
  return { status: res.status, body: (await res.json()) as never };
}

/** Every node sees the other two on NATS again. */
async function settled(cluster: TestCluster): Promise<void> {
  await until(async () => {
    for (let i = 0; i < NODES; i++) {
      const h = await health(cluster, i).catch(() => null);
      if (!h?.body.cluster?.connected || h.body.cluster.nodes.length !== NODES - 1) return false;
    }
    return true;
  }, 20_000);
}

// ---------------------------------------------------------------------------

let cluster: TestCluster;
let load: Load | null = null;

beforeAll(async () => {
  cluster = await startCluster(NODES, ROOMY_INBOX);
}, 120_000);

afterEach(() => {
  load?.close();
  load = null;
});

afterAll(async () => {
  await cluster?.close();
});

const logTail = () => cluster.nodes.map((n, i) => `--- n${i}:\n${n.log.slice(-8).join('\n')}`).join('\n');

describe(`a cluster under failures (seed ${SEED}, replay with SWITCHBOARD_CLUSTER_KILL_SEED=${SEED})`, () => {
  it(`keeps every message acknowledged as sent, in per-sender order, across ${KILLS} kills of a node under load`, { timeout: 90_000 }, async () => {
    const rng = rngFrom(SEED);
    const t0 = Date.now();
    const l = (load = new Load('kill'));
    await spread(cluster, l, 'k', 6, 3, SEED + 100);
    const MODES = ['online', 'offline', 'late', 'flap'] as const;
    const rounds: string[] = [];
    l.pump();
    for (let round = 0; round < KILLS; round++) {
      const victim = randInt(rng, 0, NODES - 1);
      const killAfter = randInt(rng, 200, 1200);
      const downFor = randInt(rng, 0, 1000);
      const modes = l.recipients.map((_, i) => MODES[(round + 2 * i) % MODES.length]);
      l.recipients.forEach((r, i) => {
        const mode = modes[i];
        if (mode === 'online') void r.connect();
        else if (mode === 'offline') r.disconnect();
        else if (mode === 'late') {
          r.disconnect();
          r.later(randInt(rng, 0, killAfter + downFor), () => void r.connect());
        } else {
          void r.connect();
          const off = randInt(rng, 0, killAfter + downFor);
          r.later(off, () => r.disconnect());
          r.later(off + randInt(rng, 0, 300), () => void r.connect());
        }
      });
      const before = l.senders.reduce((n, s) => n + s.msgs.length, 0);
      await sleep(killAfter);
      const exit = await cluster.nodes[victim].kill('SIGKILL');
      expect(exit.signal).toBe('SIGKILL');
      await sleep(downFor);
      await cluster.nodes[victim].start();
      for (const r of l.recipients) r.clearSchedule();
      const sent = l.senders.reduce((n, s) => n + s.msgs.length, 0) - before;
      rounds.push(`round ${round}: n${victim} killed ${killAfter} ms into the round, down ${downFor} ms (restart ${cluster.nodes[victim].startMs.at(-1)} ms), ${sent} messages sent, recipients ${modes.join('/')}`);
    }
    // No more kills: the senders finish, every recipient comes online.
    await settled(cluster);
    l.stopGenerating();
    for (const r of l.recipients) await r.connect();
    await l.allAcked(20_000);
    await l.delivered(20_000);
    const problems = l.check();
    console.log([`cluster kill test, seed ${SEED}: ${KILLS} kills, ${((Date.now() - t0) / 1000).toFixed(1)} s`, ...rounds, l.summary()].join('\n'));
    expect(l.senders.reduce((n, s) => n + s.msgs.filter((m) => m.acked).length, 0)).toBeGreaterThan(0);
    expect(problems, `${problems.length} problems (seed ${SEED}); nodes' log tails:\n${logTail()}`).toEqual([]);
  });

  it('keeps every message acknowledged as sent, in per-sender order, across a NATS restart during traffic', { timeout: 60_000 }, async () => {
    const rng = rngFrom(SEED + 1);
    const l = (load = new Load('nats restart'));
    await spread(cluster, l, 'n', 3, 3, SEED + 200);
    // r0 and r1 stay online; r2 leaves before NATS stops and comes back
    // after, so some copies wait in the store and some in the nodes' buses.
    await l.recipients[0].connect();
    await l.recipients[1].connect();
    await l.recipients[2].connect();
    l.pump();
    await sleep(randInt(rng, 200, 800));
    l.recipients[2].disconnect();
    await sleep(randInt(rng, 0, 300));
    const ackedBefore = l.senders.reduce((n, s) => n + s.msgs.filter((m) => m.acked).length, 0);
    await cluster.nats.stop();
    // Each node notices and says so in /health; it still answers 200 (docs/cluster.md).
    await until(async () => {
      for (let i = 0; i < NODES; i++) {
        const h = await health(cluster, i);
        if (h.status !== 200 || h.body.cluster?.connected !== false) return false;
      }
      return true;
    }, 10_000);
    await sleep(randInt(rng, 200, 1200));
    await cluster.nats.start();
    await settled(cluster);
    await sleep(randInt(rng, 200, 800));
    l.stopGenerating();
    await l.recipients[2].connect();
    await l.allAcked(20_000);
    await l.delivered(20_000);
    const problems = l.check();
    console.log(`${l.summary()}\n(${ackedBefore} acknowledged before NATS stopped)`);
    expect(l.senders.reduce((n, s) => n + s.msgs.filter((m) => m.acked).length, 0)).toBeGreaterThan(ackedBefore);
    expect(problems, `${problems.length} problems (seed ${SEED}); nodes' log tails:\n${logTail()}`).toEqual([]);
  });

  it('acknowledges nothing it cannot keep while PostgreSQL is stopped, says E_STORE_DOWN, and delivers everything acknowledged once it is back', { timeout: 60_000 }, async () => {
    const rng = rngFrom(SEED + 2);
    const l = (load = new Load('postgresql stopped'));
    await spread(cluster, l, 'p', 3, 3, SEED + 300);
    // r0 and r1 are online (their copies are live, confirmed by their
    // devices); r2 is offline everywhere, so a copy for it is kept only by
    // a commit.
    await l.recipients[0].connect();
    await l.recipients[1].connect();
    const offline = l.recipients[2];
    l.pump();
    await sleep(randInt(rng, 200, 800));
    await cluster.pg.stop();
    await until(async () => {
      for (let i = 0; i < NODES; i++) {
        const h = await health(cluster, i);
        if (h.status !== 503 || h.body.code !== 'E_STORE_DOWN') return false;
      }
      return true;
    }, 15_000);
    const allDown = Date.now();
    await sleep(randInt(rng, 300, 1500));
    const restarting = Date.now();
    await cluster.pg.start();
    await until(async () => {
      for (let i = 0; i < NODES; i++) if ((await health(cluster, i)).status !== 200) return false;
      return true;
    }, 15_000);
    l.stopGenerating();
    await l.allAcked(20_000);
    await offline.connect();
    await l.delivered(20_000);
    const problems = l.check();
    // A copy for a recipient offline everywhere is kept only by PostgreSQL:
    // while every node says the store is down, none of them is acknowledged.
    // (A commit that landed before PostgreSQL stopped may still have its
    // "sent" on the way as the last node notices: hence the margin.)
    const unkept = l.senders.flatMap((s) => s.msgs.filter((m) => m.to === offline.name && m.acked && m.ackedAt > allDown + 250 && m.ackedAt < restarting).map((m) => `${s.name}:${m.seq}`));
    const storeFailedCloses = l.senders.reduce((n, s) => n + s.ends.filter((c) => c === CLOSE_STORE_FAILED).length, 0);
    console.log(`${l.summary()}\n(store down for ${restarting - allDown} ms after every node said so)`);
    expect(unkept, 'acknowledged while PostgreSQL was down, for a recipient offline everywhere').toEqual([]);
    expect(storeFailedCloses, 'senders whose messages could not be kept are closed with 1011 (and resend)').toBeGreaterThan(0);
    expect(problems, `${problems.length} problems (seed ${SEED}); nodes' log tails:\n${logTail()}`).toEqual([]);
  });
});
