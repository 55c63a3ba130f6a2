// A bounded soak (issue 12): for SOAK_MS, attackers of every kind run beside
// a healthy pair of users against one server in a child process, over
// loopback. The pair's messages must keep flowing with bounded latency, and
// the server's resident memory must stay under a bound. It stops by itself.
//
// Attackers:
// - unauthenticated: keeps ~600 sockets open that never log in (the server
//   times them out after login_timeout and evicts the oldest over
//   max_unauthenticated);
// - presence flood: one user asks for presence of 100 KB addresses and of
//   random names, as fast as the server answers;
// - offline flood: one user sends 1 KB messages to a user who never comes
//   online, until max_inbox_messages refuses them with 0x82;
// - non-reading client: a user that stops reading while another sends it
//   60 KB messages; the server cuts it off and it reconnects, again and
//   again, until its inbox (max_inbox_bytes) is full of what it never
//   confirmed.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import WebSocket from 'ws';
import { afterAll, describe, expect, it } from 'vitest';
import { SwitchboardClient } from '../lib/client';
import { tempDir, until } from './helpers';
import { freePort, writeChildServer } from './child-server';
import { apiCall, connectPeer } from './server-helpers';

const APP = 'soak-token';
const SOAK_MS = 15_000;
/** Resident memory the server must stay under while attacked (it starts near 70 MB). */
const RSS_BOUND_MB = 300;
/** The healthy pair: each message must arrive within this, and 99 % of them well within it. */
const MAX_LATENCY_MS = 2_500;
const P99_LATENCY_MS = 750;

const children: ChildProcess[] = [];
const sockets: WebSocket[] = [];
const clients: SwitchboardClient[] = [];

afterAll(() => {
  for (const ws of sockets) ws.terminate();
  for (const c of clients) c.close();
  for (const c of children) c.kill('SIGKILL');
});

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

const log = { text: '' };

async function startChild(): Promise<{ port: number; child: ChildProcess }> {
  const dir = tempDir('sb-soak-');
  const port = await freePort();
  const [script, conf] = writeChildServer(
    dir,
    port,
    APP,
    [
      'login_timeout = 2',
      'max_unauthenticated = 300',
      'max_unauthenticated_per_ip = 0',
      'max_connections_per_ip = 0',
      'max_presence = 64',
      'max_inbox_messages = 2000',
      'max_inbox_bytes = 16777216',
      '',
    ].join('\n'),
  );
  const child = spawn(process.execPath, [script, conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  child.stderr!.on('data', (d) => (log.text += d.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d) => /READY/.test(d.toString()) && resolve());
    child.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  return { port, child };
}

function open(port: number, query = ''): WebSocket {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/${query}`);
  ws.on('error', () => {});
  sockets.push(ws);
  return ws;
}

describe('soak: attackers beside a healthy pair', () => {
  it(`for ${SOAK_MS / 1000} s the pair's messages flow within ${MAX_LATENCY_MS} ms and the server stays under ${RSS_BOUND_MB} MB`, async () => {
    const { port, child } = await startChild();
    const api = (b: Record<string, unknown>) => apiCall(port, APP, b);
    const token = async (a: string) => (await api({ op: 'useradd', address: a })).token as string;
    const [alice, bob, mallory, flooder, sloth, feeder] = await Promise.all(['alice', 'bob', 'mallory', 'flooder', 'sloth', 'feeder'].map(token));
    await token('victim');
    const rssStart = rssMb(child.pid!);
    let stop = false;
    const end = Date.now() + SOAK_MS;

    // --- unauthenticated sockets ---------------------------------------------
    let unauthOpened = 0;
    let unauthClosedByServer = 0;
    const keepOpen = () => {
      if (stop) return;
      unauthOpened++;
      const ws = open(port);
      ws.on('close', (code) => {
        if (code === 4008) unauthClosedByServer++;
        setTimeout(keepOpen, 5);
      });
    };
    for (let i = 0; i < 600; i++) setTimeout(keepOpen, i);

    // --- presence flood ------------------------------------------------------
    const m = open(port, `?token=${mallory}`);
    let presenceAnswers = 0;
    let pid = 1;
    const huge = 'p'.repeat(100_000);
    const askPresence = () => {
      if (stop || m.readyState !== WebSocket.OPEN) return;
      // Keep about 200 requests in flight; a 100 KB address one time in ten.
      while (pid - presenceAnswers < 200) {
        const to = pid % 10 === 0 ? huge + pid : `ghost-${pid}`;
        m.send(JSON.stringify({ op: 'presence', id: pid++, to, sub: true }));
      }
    };
    m.on('message', () => {
      presenceAnswers++;
      askPresence();
    });
    m.on('open', askPresence);

    // --- offline flood -------------------------------------------------------
    const f = open(port, `?token=${flooder}`);
    const floodStatus = new Map<number, number>();
    let fid = 1;
    let floodAnswers = 0;
    const payload = 'f'.repeat(1024);
    const flood = () => {
      if (stop || f.readyState !== WebSocket.OPEN) return;
      while (fid - floodAnswers < 200) f.send(JSON.stringify({ op: 'msg', id: fid++, to: 'victim', data: payload }));
    };
    f.on('message', (d) => {
      const frame = JSON.parse(d.toString());
      if (frame.op === 'status' || frame.op === 'error') {
        floodAnswers++;
        const k = frame.op === 'status' ? frame.status : -1;
        floodStatus.set(k, (floodStatus.get(k) ?? 0) + 1);
      }
      flood();
    });
    f.on('open', flood);

    // --- a client that stops reading, and one that feeds it ------------------
    // A paused socket does not see the server close it: it gives up after a
    // second and comes back; the server's log says how often it cut it off.
    const slothConnect = () => {
      if (stop) return;
      const ws = open(port, `?token=${sloth}`);
      ws.on('open', () => (ws as unknown as { _socket: { pause(): void } })._socket.pause());
      setTimeout(() => {
        ws.terminate();
        slothConnect();
      }, 1000);
    };
    slothConnect();
    let feederInboxFull = 0;
    const feed = await connectPeer(port, feeder, 'feeder', clients);
    const big = 's'.repeat(60_000);
    const feedTimer = setInterval(() => {
      for (let i = 0; i < 10; i++) feed.c.send('sloth', big).sent.catch((e: { code?: string }) => e.code === 'E_INBOX_FULL' && feederInboxFull++);
    }, 50);

    // --- the healthy pair ------------------------------------------------------
    const a = await connectPeer(port, alice, 'laptop', clients);
    const b = await connectPeer(port, bob, 'phone', clients);
    const sentAt = new Map<string, number>();
    const latencies: number[] = [];
    b.c.on('message', (msg) => {
      const t = sentAt.get(msg.text ?? '');
      if (t !== undefined) latencies.push(Date.now() - t);
    });
    let n = 0;
    let maxRss = rssStart;
    while (Date.now() < end) {
      const text = `healthy ${n++}`;
      sentAt.set(text, Date.now());
      a.c.send('bob', text);
      maxRss = Math.max(maxRss, rssMb(child.pid!));
      await new Promise((r) => setTimeout(r, 20));
    }
    // The last messages get their time to arrive.
    await until(() => latencies.length === n, MAX_LATENCY_MS + 1000).catch(() => {});
    stop = true;
    clearInterval(feedTimer);
    const health = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { limits: Record<string, number> };
    maxRss = Math.max(maxRss, rssMb(child.pid!));

    const slothCutOff = log.text.split('closing a connection of sloth that stopped reading').length - 1;
    const sorted = [...latencies].sort((x, y) => x - y);
    const p = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    const figures = {
      seconds: SOAK_MS / 1000,
      healthySent: n,
      healthyReceived: latencies.length,
      latencyMs: { p50: p(0.5), p99: p(0.99), max: sorted[sorted.length - 1] },
      rssMb: { start: Math.round(rssStart), max: Math.round(maxRss) },
      unauthOpened,
      unauthClosedByServer,
      presenceAnswers,
      floodStatuses: Object.fromEntries(floodStatus),
      slothCutOff,
      feederInboxFull,
      server: health.limits,
    };
    // The figures for the report (docs/config.md, "Limits").
    console.log(`soak figures: ${JSON.stringify(figures)}`);

    expect(latencies.length).toBe(n);
    expect(figures.latencyMs.max).toBeLessThan(MAX_LATENCY_MS);
    expect(figures.latencyMs.p99).toBeLessThan(P99_LATENCY_MS);
    expect(maxRss).toBeLessThan(RSS_BOUND_MB);
    // Every attacker met its limit.
    expect(health.limits.loginTimeouts + health.limits.unauthenticatedEvicted).toBeGreaterThan(0);
    expect(health.limits.presenceRefused).toBeGreaterThan(0);
    expect(floodStatus.get(0x82) ?? 0).toBeGreaterThan(0);
    expect(health.limits.inboxFull).toBeGreaterThan(0);
    // The non-reading client is cut off by the backpressure limit, and what
    // it does not confirm fills its inbox, after which its senders hear 0x82.
    expect(slothCutOff + feederInboxFull).toBeGreaterThan(0);
  }, SOAK_MS + 20_000);
});
