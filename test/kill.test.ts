// The durability guarantee under SIGKILL (shared/design.md, "What it must
// guarantee"): a message acknowledged as sent is not lost when the server
// process is killed; it reaches each recipient at least once, in per-sender
// order, unless it expires.
//
// The server runs in a child process on a fixed port and data_dir. Senders
// stream messages with a window of in-flight ones while recipients come and
// go; the server is SIGKILLed at a random moment, restarted on the same
// data_dir and port, and everyone reconnects (senders resend, with the same
// ids, whatever had no "sent" yet). At the end every recipient drains its
// inbox and the test checks every (sender, recipient, id) that got "sent".
//
// Replay a failure with the seed it prints:
//   SWITCHBOARD_KILL_SEED=1234 npx vitest run test/kill.test.ts
// The seed fixes every choice the test makes (kill times, recipients' comings
// and goings, who gets which message, which ones expire); how far the load
// gets before each kill still depends on the machine.
// SWITCHBOARD_KILL_ROUNDS sets the number of kills (default 5).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { freePort, ServerProcess } from './child-server';

const APP_TOKEN = 'kill-test-app-token';

const SEED = process.env.SWITCHBOARD_KILL_SEED ? Number(process.env.SWITCHBOARD_KILL_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const KILLS = Number(process.env.SWITCHBOARD_KILL_ROUNDS ?? 5);
const SENDERS = 4;
const RECIPIENTS = 2;
/** Messages a sender has on the wire without a "sent" status yet. */
const WINDOW = 32;
/** One message in EXPIRING_ONE_IN carries `expiry: EXPIRY_S`. */
const EXPIRING_ONE_IN = 40;
const EXPIRY_S = 1;
/** How late (ms) after its expiry a copy may still arrive: the time from the server reading its store to the client. */
const EXPIRY_SLACK_MS = 750;
/** Kill this long after the load starts (ms). */
const KILL_MIN_MS = 100;
const KILL_MAX_MS = 800;

// ---------------------------------------------------------------------------
// Seeded randomness (mulberry32).

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
const rng = rngFrom(SEED);
const randInt = (lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1));

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function api(port: number, body: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(`http://127.0.0.1:${port}/api`, { method: 'POST', headers: { Authorization: `Bearer ${APP_TOKEN}` }, body: JSON.stringify(body) });
  const json = (await res.json()) as Record<string, unknown>;
  if (!json.ok) throw new Error(`api ${JSON.stringify(body)}: ${JSON.stringify(json)}`);
  return json;
}

// ---------------------------------------------------------------------------
// Clients.

interface Frame {
  op: string;
  id?: number;
  from?: string;
  to?: string;
  status?: number;
  data?: string;
  b64?: string;
  expiry?: number;
  code?: string;
  message?: string;
}

/** Opens a session; resolves after the server's hello, rejects if the socket closes first. */
function connect(port: number, token: string, onFrame: (f: Frame, ws: WebSocket) => void, onClose: (ws: WebSocket) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/?token=${encodeURIComponent(token)}`);
    let hello = false;
    const timer = setTimeout(() => ws.terminate(), 5000);
    ws.on('error', () => {}); // a killed server resets connections; 'close' follows
    ws.on('message', (raw) => {
      const f = JSON.parse(String(raw)) as Frame;
      if (!hello) {
        if (f.op === 'hello') {
          hello = true;
          clearTimeout(timer);
          resolve(ws);
          return;
        }
      }
      onFrame(f, ws);
    });
    ws.on('close', () => {
      clearTimeout(timer);
      if (hello) onClose(ws);
      else reject(new Error('closed before hello'));
    });
  });
}

function closeAndWait(ws: WebSocket | null): Promise<void> {
  if (!ws || ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      ws.terminate();
      resolve();
    }, 2000);
    ws.once('close', () => {
      clearTimeout(t);
      resolve();
    });
    ws.close();
  });
}

interface Attempt {
  round: number;
  at: number;
  /** When this attempt's "sent" came back (0: never). */
  statusAt: number;
}

interface Msg {
  sender: string;
  to: string;
  id: number;
  expiry: number;
  data: string;
  attempts: Attempt[];
  /** Got a "sent" status: it must not be lost. */
  acked: boolean;
  statusAt: number;
}

interface SenderConn {
  ws: WebSocket;
  open: boolean;
  /** What had no "sent" when this connection opened, in id order: resent first. */
  queue: Msg[];
  qi: number;
  inflight: Map<number, Attempt>;
}

const problems: string[] = [];
function problem(text: string): void {
  if (problems.length < 200) problems.push(text);
}

/** When each round's server died (ms), to bound when an unanswered attempt can have been routed. */
const roundEnd: number[] = [];
let round = 0;

class Sender {
  nextId = 1;
  generating = true;
  readonly msgs = new Map<number, Msg>();
  readonly unsent = new Map<number, Msg>(); // insertion order = id order
  conn: SenderConn | null = null;
  framesSent = 0;
  receipts = 0; // status 2 frames relayed to us although no message asked for receipts

  constructor(
    readonly name: string,
    readonly token: string,
    readonly recipients: string[],
  ) {}

  async connect(port: number): Promise<void> {
    const conn: SenderConn = { ws: null as unknown as WebSocket, open: false, queue: [...this.unsent.values()], qi: 0, inflight: new Map() };
    conn.ws = await connect(
      port,
      this.token,
      (f) => this.onFrame(conn, f),
      () => {
        conn.open = false;
      },
    );
    conn.open = true;
    this.conn = conn;
  }

  private newMsg(): Msg {
    const id = this.nextId++;
    const to = this.recipients[randInt(0, this.recipients.length - 1)];
    const expiry = randInt(1, EXPIRING_ONE_IN) === 1 ? EXPIRY_S : 0;
    const m: Msg = { sender: this.name, to, id, expiry, data: `${this.name}:${id}:${to}`, attempts: [], acked: false, statusAt: 0 };
    this.msgs.set(id, m);
    this.unsent.set(id, m);
    return m;
  }

  /** Fills the window: first what this connection has to resend, in order, then new messages. */
  pump(): void {
    const c = this.conn;
    if (!c) return;
    while (c.open && c.inflight.size < WINDOW) {
      let m: Msg | undefined;
      while (c.qi < c.queue.length) {
        const q = c.queue[c.qi++];
        if (!q.acked) {
          m = q;
          break;
        }
      }
      if (!m) {
        if (!this.generating) return;
        m = this.newMsg();
      }
      const a: Attempt = { round, at: Date.now(), statusAt: 0 };
      m.attempts.push(a);
      c.inflight.set(m.id, a);
      const frame: Record<string, unknown> = { op: 'msg', id: m.id, to: m.to, data: m.data };
      if (m.expiry) frame.expiry = m.expiry;
      c.ws.send(JSON.stringify(frame));
      this.framesSent++;
    }
  }

  private onFrame(c: SenderConn, f: Frame): void {
    if (f.op === 'status') {
      if (f.status === 1) {
        const a = c.inflight.get(f.id!);
        const m = this.msgs.get(f.id!);
        if (!a || !m) {
          problem(`${this.name} got "sent" for id ${f.id} (from ${f.from}), which is not in flight on this connection`);
          return;
        }
        if (f.from !== m.to) problem(`${this.name} got "sent" for id ${f.id} from ${f.from}, but sent it to ${m.to}`);
        c.inflight.delete(f.id!);
        a.statusAt = Date.now();
        if (!m.acked) {
          m.acked = true;
          m.statusAt = a.statusAt;
          this.unsent.delete(m.id);
        }
        this.pump();
      } else if (f.status === 2 || f.status === 3) {
        this.receipts++;
      } else {
        problem(`${this.name} got status ${f.status} for id ${f.id} (to ${f.from})`);
      }
    } else if (f.op === 'error') {
      problem(`${this.name} got an error frame: ${JSON.stringify(f)}`);
    } else if (f.op !== 'presence') {
      problem(`${this.name} got an unexpected frame: ${JSON.stringify(f)}`);
    }
  }

  async close(): Promise<void> {
    const c = this.conn;
    this.conn = null;
    if (c) await closeAndWait(c.ws);
  }
}

interface Delivery {
  from: string;
  id: number;
  at: number;
}

class Recipient {
  ws: WebSocket | null = null;
  /** Every delivery, in arrival order. */
  readonly deliveries: Delivery[] = [];
  /** First arrival of each (sender, id). */
  readonly first = new Map<string, Delivery>();
  connections = 0;
  private timers: NodeJS.Timeout[] = [];
  private connecting: Promise<void> | null = null;
  /** Deliveries on the current connection. */
  got = 0;
  lastAt = 0;

  constructor(
    readonly name: string,
    readonly token: string,
    readonly senders: Map<string, Sender>,
  ) {}

  connect(port: number): Promise<void> {
    if (this.ws || this.connecting) return this.connecting ?? Promise.resolve();
    this.got = 0;
    this.connecting = connect(
      port,
      this.token,
      (f, ws) => this.onFrame(f, ws),
      (ws) => {
        if (this.ws === ws) this.ws = null;
      },
    ).then(
      (ws) => {
        if (ws.readyState === WebSocket.OPEN) this.ws = ws;
        this.connections++;
        this.connecting = null;
      },
      () => {
        this.connecting = null; // the server died under us: stay offline
      },
    );
    return this.connecting;
  }

  /** Runs `fn` after `ms`, unless the round ends first. */
  later(ms: number, fn: () => void): void {
    this.timers.push(setTimeout(fn, ms));
  }

  private onFrame(f: Frame, ws: WebSocket): void {
    if (f.op !== 'msg') {
      if (f.op === 'error') problem(`${this.name} got an error frame: ${JSON.stringify(f)}`);
      return;
    }
    const now = Date.now();
    const from = f.from!;
    const id = f.id!;
    const d: Delivery = { from, id, at: now };
    this.deliveries.push(d);
    this.got++;
    this.lastAt = now;
    const m = this.senders.get(from)?.msgs.get(id);
    if (!m) problem(`${this.name} got a message nobody sent: from ${from} id ${id}`);
    else {
      if (m.to !== this.name || f.to !== this.name) problem(`${this.name} got ${from}'s message ${id}, which is for ${m.to} (frame to: ${f.to})`);
      if (f.data !== m.data) problem(`${this.name} got ${from}'s message ${id} with data ${JSON.stringify(f.data ?? f.b64)}, sent as ${JSON.stringify(m.data)}`);
      if ((f.expiry ?? 0) !== m.expiry) problem(`${this.name} got ${from}'s message ${id} with expiry ${f.expiry}, sent with ${m.expiry}`);
    }
    const key = `${from}|${id}`;
    if (!this.first.has(key)) this.first.set(key, d);
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ op: 'status', id, to: from, status: 2 }));
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    if (this.connecting) await this.connecting;
    const ws = this.ws;
    this.ws = null;
    await closeAndWait(ws);
  }
}

// ---------------------------------------------------------------------------

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-kill-'));
let server: ServerProcess | null = null;
let keepTmp = false;

afterAll(async () => {
  if (server?.running) await server.kill('SIGKILL');
  if (!keepTmp) fs.rmSync(tmp, { recursive: true, force: true });
});

// Both ways a durable server says "sent": the default, where a copy for an
// online recipient goes out at once and "sent" waits for its delivered
// status or, after durable_grace, for the store (live copies); and
// durable_grace = 0, where every copy is committed before anyone sees it.
// A recipient may stay offline for several rounds while four senders
// stream to it, more than the default inbox (max_inbox_messages) holds; the
// inbox limit has its own tests (test/hardening.test.ts), so here it is out
// of the way and every refusal would be a lost message.
const ROOMY_INBOX = 'max_inbox_messages = 1000000\n';
const VARIANTS = [
  { name: 'live copies (default durable_grace)', conf: ROOMY_INBOX },
  { name: 'every copy stored first (durable_grace = 0)', conf: `${ROOMY_INBOX}durable_grace = 0\n` },
];

describe('durability under SIGKILL', () => {
  for (const variant of VARIANTS) it(`keeps every message acknowledged as sent, in per-sender order, across ${KILLS} kills: ${variant.name} (seed ${SEED})`, { timeout: 90_000 }, async () => {
    const t0 = Date.now();
    problems.length = 0;
    roundEnd.length = 0;
    round = 0;
    const dir = fs.mkdtempSync(path.join(tmp, 'run-'));
    console.log(`kill test (${variant.name}): seed ${SEED} (replay with SWITCHBOARD_KILL_SEED=${SEED}); data in ${dir}`);
    const port = await freePort();
    server = new ServerProcess(dir, port, APP_TOKEN, variant.conf);
    await server.start();

    const rNames = Array.from({ length: RECIPIENTS }, (_, i) => `r${i}`);
    const sNames = Array.from({ length: SENDERS }, (_, i) => `s${i}`);
    const senders = new Map<string, Sender>();
    for (const s of sNames) senders.set(s, new Sender(s, (await api(port, { op: 'useradd', address: s })).token as string, rNames));
    const recipients = rNames.map(async (r) => new Recipient(r, (await api(port, { op: 'useradd', address: r })).token as string, senders));
    const rcpts = await Promise.all(recipients);

    // Each recipient goes through every mode over the rounds, at random moments.
    const MODES = ['online', 'offline', 'late', 'flap'] as const;
    const rounds: string[] = [];
    for (round = 0; round < KILLS; round++) {
      if (round > 0) await server.start();
      await Promise.all([...senders.values()].map((s) => s.connect(port)));
      const killAfter = randInt(KILL_MIN_MS, KILL_MAX_MS);
      const modes = rcpts.map((r, i) => MODES[(round + 2 * i) % MODES.length]);
      rcpts.forEach((r, i) => {
        const mode = modes[i];
        if (mode === 'online') void r.connect(port);
        else if (mode === 'late') r.later(randInt(0, killAfter), () => void r.connect(port));
        else if (mode === 'flap') {
          void r.connect(port);
          const off = randInt(0, killAfter);
          r.later(off, () => {
            const ws = r.ws;
            r.ws = null;
            ws?.close();
          });
          r.later(off + randInt(0, 150), () => void r.connect(port));
        }
      });
      const before = [...senders.values()].reduce((n, s) => n + s.framesSent, 0);
      const loadStart = Date.now();
      for (const s of senders.values()) s.pump();
      await sleep(killAfter - (Date.now() - loadStart));
      const killedAt = Date.now();
      const exit = await server.kill('SIGKILL');
      roundEnd[round] = Date.now();
      expect(exit.signal).toBe('SIGKILL');
      await Promise.all([...[...senders.values()].map((s) => s.close()), ...rcpts.map((r) => r.close())]);
      const frames = [...senders.values()].reduce((n, s) => n + s.framesSent, 0) - before;
      rounds.push(`round ${round}: killed ${killedAt - loadStart} ms into the load, ${frames} msg frames sent, recipients ${modes.join('/')}`);
    }

    // Final round: no kill. Senders resend what still has no "sent" and stop generating.
    await server.start();
    for (const s of senders.values()) s.generating = false;
    await Promise.all([...senders.values()].map((s) => s.connect(port)));
    for (const s of senders.values()) s.pump();
    const deadline = Date.now() + 15_000;
    while ([...senders.values()].some((s) => s.unsent.size > 0) && Date.now() < deadline) await sleep(20);
    for (const s of senders.values()) expect(s.unsent.size, `${s.name} still has no "sent" for ${[...s.unsent.keys()].slice(0, 20).join(',')}`).toBe(0);
    await Promise.all([...senders.values()].map((s) => s.close()));

    // Every message that may expire must have run out before the recipients drain.
    const expiring = [...senders.values()].flatMap((s) => [...s.msgs.values()].filter((m) => m.expiry));
    // The latest an attempt can have been routed: when its "sent" came, or when its server died.
    const expiresBy = (m: Msg) => Math.max(...m.attempts.map((a) => a.statusAt || roundEnd[a.round] || Date.now())) + m.expiry * 1000;
    const lastExpiry = Math.max(0, ...expiring.map(expiresBy));
    if (lastExpiry + EXPIRY_SLACK_MS > Date.now()) await sleep(lastExpiry + EXPIRY_SLACK_MS - Date.now() + 10);

    // Drain: connect, take everything (acking it) until quiet, reconnect, until a connection brings nothing.
    const drainStart = Date.now();
    const drainConnections: number[][] = [];
    for (const r of rcpts) {
      const counts: number[] = [];
      for (let i = 0; i < 5; i++) {
        await r.connect(port);
        expect(r.ws, `${r.name} could not connect to drain`).not.toBeNull();
        const opened = Date.now();
        r.lastAt = opened;
        while (Date.now() - r.lastAt < 300 && Date.now() - opened < 5_000) await sleep(20);
        counts.push(r.got);
        await r.close();
        if (counts[counts.length - 1] === 0) break;
      }
      drainConnections.push(counts);
    }
    const graceful = await server.kill('SIGTERM');
    expect(graceful, 'SIGTERM ends the server with exit code 0').toEqual({ code: 0, signal: null });

    // --- checks -------------------------------------------------------------
    let acked = 0;
    let ackedBeforeKill = 0;
    let unique = 0;
    let resent = 0;
    let deliveredUnsaid = 0;
    let expiredMissing = 0;
    let expiredInTime = 0;
    const missing = new Map<string, number[]>();
    for (const s of senders.values()) {
      for (const m of s.msgs.values()) {
        if (m.attempts.length === 0) continue;
        unique++;
        const r = rcpts.find((x) => x.name === m.to)!;
        const d = r.first.get(`${s.name}|${m.id}`);
        if (m.acked) acked++;
        if (m.attempts.some((a) => a.statusAt && a.round < KILLS)) ackedBeforeKill++;
        if (m.attempts.length > 1) resent++;
        // Delivered by a server that was killed before it said "sent" (published before the commit).
        if (d && m.attempts.some((a) => !a.statusAt && a.round < KILLS && a.at <= d.at && d.at <= roundEnd[a.round])) deliveredUnsaid++;
        if (m.expiry) {
          const by = expiresBy(m);
          if (d && d.at > by + EXPIRY_SLACK_MS) problem(`EXPIRY: ${s.name}'s message ${m.id} to ${m.to} (expiry ${m.expiry} s) arrived ${d.at - by} ms after it expired`);
          else if (d) expiredInTime++;
          else if (m.acked) expiredMissing++;
          continue;
        }
        if (m.acked && !d) {
          const k = `${s.name}->${m.to}`;
          if (!missing.has(k)) missing.set(k, []);
          missing.get(k)!.push(m.id);
        }
      }
    }
    for (const [k, ids] of missing) problem(`LOST: ${ids.length} messages ${k} acknowledged as sent were never delivered: ids ${ids.slice(0, 40).join(',')}${ids.length > 40 ? ',...' : ''}`);

    // Per sender and recipient, first deliveries come in increasing id order.
    for (const r of rcpts) {
      const last = new Map<string, number>();
      const inversions = new Map<string, string[]>();
      for (const d of r.deliveries) {
        if (r.first.get(`${d.from}|${d.id}`) !== d) continue; // a duplicate
        const prev = last.get(d.from) ?? 0;
        if (d.id < prev) {
          const k = `${d.from}->${r.name}`;
          if (!inversions.has(k)) inversions.set(k, []);
          inversions.get(k)!.push(`${d.id} after ${prev}`);
        }
        last.set(d.from, Math.max(prev, d.id));
      }
      for (const [k, list] of inversions) problem(`ORDER: ${list.length} first deliveries ${k} out of order: ${list.slice(0, 20).join('; ')}${list.length > 20 ? '; ...' : ''}`);
    }

    const deliveries = rcpts.reduce((n, r) => n + r.deliveries.length, 0);
    const firsts = rcpts.reduce((n, r) => n + r.first.size, 0);
    const frames = [...senders.values()].reduce((n, s) => n + s.framesSent, 0);
    const receipts = [...senders.values()].reduce((n, s) => n + s.receipts, 0);
    const report = [
      `kill test (${variant.name}), seed ${SEED}: ${KILLS} kills, ${((Date.now() - t0) / 1000).toFixed(1)} s; server starts ${server.startMs.join('/')} ms`,
      ...rounds,
      `messages: ${unique} sent (${frames} frames; ${resent} resent after a kill), ${acked} acknowledged as sent (${ackedBeforeKill} before a kill), ${expiring.length} with expiry ${EXPIRY_S} s`,
      `delivered: ${firsts} distinct (${deliveredUnsaid} by a server killed before it said "sent"), ${deliveries} deliveries, ${deliveries - firsts} duplicates`,
      `expiring: ${expiredInTime} delivered in time, ${expiredMissing} acknowledged and expired undelivered`,
      `drain: ${drainConnections.map((c, i) => `${rcpts[i].name} ${c.join('+')}`).join(', ')} messages per connection, ${Date.now() - drainStart} ms; receipts relayed to senders: ${receipts}`,
    ];
    console.log(report.join('\n'));
    if (problems.length) keepTmp = true;
    expect(acked).toBeGreaterThan(0);
    expect(problems, `${problems.length} problems (seed ${SEED}, replay with SWITCHBOARD_KILL_SEED=${SEED}); server log tail:\n${server.log.slice(-10).join('\n')}`).toEqual([]);
  });
});
