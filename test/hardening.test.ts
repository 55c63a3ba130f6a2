// Issue 12: the limits that keep one client from exhausting the server, and
// the protocol's promises that a client written from the docs relies on.
// Real server, real WebSocket clients over loopback, a real SQLite file.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { SwitchboardClient } from '../lib/client';
import { Server } from '../lib/index';
import { encodeFrame } from '../lib/wire';
import { fileDescriptorLimit, FD_RESERVE } from '../lib/server/limits';
import { Admit, Delivery } from '../lib/delivery';
import { Database } from '../lib/store/db';
import { root, tempDir, until } from './helpers';
import { apiCall, connectPeer, type Peer } from './server-helpers';

const APP = 'hardening-token';
const running: Server[] = [];
const clients: SwitchboardClient[] = [];
const sockets: WebSocket[] = [];

async function start(body = ''): Promise<Server> {
  const s = await Server.start({ configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\napp_token = ${APP}\n${body}`, log: () => {} });
  running.push(s);
  return s;
}

function api(s: Server, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  return apiCall(s.port, APP, body);
}

async function user(s: Server, address: string): Promise<string> {
  return (await api(s, { op: 'useradd', address })).token as string;
}

function connect(s: Server, token: string, device = ''): Promise<Peer> {
  return connectPeer(s.port, token, device, clients);
}

interface Raw {
  ws: WebSocket;
  frames: Record<string, unknown>[];
  binary: Buffer[];
  /** Close code and reason once the socket ends. */
  closed: Promise<{ code: number; reason: string }>;
  /** 'open', or the HTTP status that refused the upgrade. */
  opened: Promise<'open' | number>;
}

/** A bare WebSocket: it logs in and acknowledges only when the test says so. */
function rawSocket(s: Server, query = ''): Raw {
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/${query}`);
  sockets.push(ws);
  const frames: Record<string, unknown>[] = [];
  const binary: Buffer[] = [];
  ws.on('message', (d, isBinary) => (isBinary ? binary.push(d as Buffer) : frames.push(JSON.parse(d.toString()))));
  ws.on('error', () => {});
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
  const opened = new Promise<'open' | number>((r) => {
    ws.on('open', () => r('open'));
    ws.on('unexpected-response', (_req, res) => {
      r(res.statusCode ?? 0);
      res.resume();
    });
  });
  return { ws, frames, binary, closed, opened };
}

async function loggedIn(s: Server, token: string): Promise<Raw> {
  const r = rawSocket(s, `?token=${token}`);
  expect(await r.opened).toBe('open');
  await until(() => r.frames.some((f) => f.op === 'hello'));
  return r;
}

function health(s: Server): Promise<Record<string, unknown>> {
  return fetch(`http://127.0.0.1:${s.port}/health`).then((r) => r.json() as Promise<Record<string, unknown>>);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

afterEach(async () => {
  while (sockets.length) sockets.pop()!.terminate();
  while (clients.length) clients.pop()!.close();
  while (running.length) await running.pop()!.stop();
});

const LIMIT_SETTINGS = [
  'login_timeout', 'max_connections', 'max_unauthenticated', 'max_unauthenticated_per_ip', 'max_connections_per_ip',
  'max_connections_per_user', 'user_rate_limit', 'max_presence', 'presence', 'max_inbox_messages', 'max_inbox_bytes',
];

describe('limit settings', () => {
  it('are known to the config parser, documented in docs/config.md, and checked', async () => {
    // The parser's list (cpp/config.cc) is the one source; its error names every key.
    const e = await Server.start({ configText: 'listen = 127.0.0.1:0\nno_such_setting = 1\n', log: () => {} }).catch((x: Error) => x);
    const doc = fs.readFileSync(path.join(root, 'docs', 'config.md'), 'utf8');
    for (const k of LIMIT_SETTINGS) {
      expect((e as Error).message).toContain(k);
      expect(doc).toContain(`| \`${k}\` |`);
    }
    await expect(start('presence = friends\n')).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE' });
    await expect(start('login_timeout = 0\n')).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE' });
    await expect(start('max_inbox_messages = lots\n')).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE' });
  });
});

describe('sockets that do not log in', () => {
  it('are closed with E_LOGIN_TIMEOUT (4008) after login_timeout, and /health counts them meanwhile', async () => {
    const s = await start('login_timeout = 1\n');
    const idle = rawSocket(s);
    expect(await idle.opened).toBe('open');
    expect(await health(s)).toMatchObject({ unauthenticated: 1, connections: 0 });
    const t0 = Date.now();
    expect((await idle.closed).code).toBe(4008);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(idle.frames[0]).toMatchObject({ op: 'error', code: 'E_LOGIN_TIMEOUT' });
    expect(s.stats.loginTimeouts).toBe(1);
    expect(await health(s)).toMatchObject({ unauthenticated: 0 });
  });

  it('are capped per IP: the next upgrade gets HTTP 429, logged-in sockets are not affected', async () => {
    const s = await start('max_unauthenticated_per_ip = 3\n');
    const token = await user(s, 'alice');
    const idle = [rawSocket(s), rawSocket(s), rawSocket(s)];
    for (const r of idle) expect(await r.opened).toBe('open');
    expect(await rawSocket(s).opened).toBe(429);
    expect(s.stats.refusedPerIp).toBe(1);
    // A token in the URL logs in at the upgrade: never unauthenticated.
    await loggedIn(s, token);
  });

  it('over max_unauthenticated, the oldest makes room, so a real client can still log in', async () => {
    const s = await start('max_unauthenticated = 3\nmax_unauthenticated_per_ip = 0\n');
    const token = await user(s, 'alice');
    const idle = [rawSocket(s), rawSocket(s), rawSocket(s)];
    for (const r of idle) expect(await r.opened).toBe('open');
    const real = rawSocket(s);
    expect(await real.opened).toBe('open');
    expect((await idle[0].closed).code).toBe(4008);
    real.ws.send(JSON.stringify({ op: 'login', token }));
    await until(() => real.frames.some((f) => f.op === 'hello'));
    expect(s.stats.unauthenticatedEvicted).toBe(1);
    expect(s.stats.unauthenticated).toBe(2);
  });
});

describe('connection caps', () => {
  it('keep file descriptors in reserve: max_connections is never above the descriptor limit less the reserve', async () => {
    const fds = fileDescriptorLimit();
    const s = await start('max_connections = 10000000\n');
    if (fds !== null) expect(s.stats.connectionCap).toBe(Math.max(fds - FD_RESERVE, 16));
    const d = await start('');
    if (fds !== null) expect(d.stats.connectionCap).toBe(Math.max(fds - FD_RESERVE, 16));
  });

  it('at max_connections new upgrades get HTTP 503', async () => {
    const s = await start('max_connections = 2\n');
    const a = await loggedIn(s, await user(s, 'alice'));
    await loggedIn(s, await user(s, 'bob'));
    expect(await rawSocket(s, `?token=${await user(s, 'carol')}`).opened).toBe(503);
    expect(s.stats.refusedServerFull).toBe(1);
    a.ws.close();
    await until(() => s.stats.connections === 1);
    await loggedIn(s, await user(s, 'dave'));
  });

  it('max_connections_per_ip refuses the next upgrade from that IP with HTTP 429', async () => {
    const s = await start('max_connections_per_ip = 2\n');
    await loggedIn(s, await user(s, 'alice'));
    await loggedIn(s, await user(s, 'bob'));
    expect(await rawSocket(s, `?token=${await user(s, 'carol')}`).opened).toBe(429);
  });

  it('max_connections_per_user refuses a further login with E_TOO_MANY_CONNECTIONS (4029)', async () => {
    const s = await start('max_connections_per_user = 2\n');
    const token = await user(s, 'alice');
    await loggedIn(s, token);
    const second = await loggedIn(s, token);
    const third = rawSocket(s, `?token=${token}`);
    expect((await third.closed).code).toBe(4029);
    expect(third.frames[0]).toMatchObject({ code: 'E_TOO_MANY_CONNECTIONS' });
    expect(s.stats.refusedPerUser).toBe(1);
    second.ws.close();
    await until(() => s.stats.connections === 1);
    await loggedIn(s, token);
  });
});

describe('presence', () => {
  it('refuses a bad address (E_BAD_ADDRESS), an unknown user (E_PRESENCE_DENIED) and more than max_presence, naming the request id', async () => {
    const s = await start('max_presence = 2\n');
    const a = await loggedIn(s, await user(s, 'alice'));
    for (const u of ['bob', 'carol', 'dave']) await user(s, u);
    const ask = (id: number, to: unknown, sub = true) => a.ws.send(JSON.stringify({ op: 'presence', id, to, sub }));
    ask(1, '');
    ask(2, 'x'.repeat(100_000));
    ask(3, 'nobody');
    ask(4, 'bob');
    ask(5, 'carol');
    ask(6, 'dave');
    await until(() => a.frames.length === 7);
    expect(a.frames.slice(1).map((f) => f.code ?? `${f.from}:${f.online}`)).toEqual(['E_BAD_ADDRESS', 'E_BAD_ADDRESS', 'E_PRESENCE_DENIED', 'bob:false', 'carol:false', 'E_PRESENCE_LIMIT']);
    expect(a.frames.slice(1).filter((f) => f.op === 'error').map((f) => f.id)).toEqual([1, 2, 3, 6]);
    // Ending one makes room for another.
    ask(7, 'bob', false);
    ask(8, 'dave');
    await until(() => a.frames.length === 9);
    expect(a.frames[8]).toMatchObject({ op: 'presence', from: 'dave' });
    expect(s.stats.presenceSubscriptions).toBe(2);
  });

  it('presence = contacts: only users who share a group or have messaged each other', async () => {
    const s = await start('presence = contacts\n');
    const alice = await loggedIn(s, await user(s, 'alice'));
    const bobToken = await user(s, 'bob');
    await user(s, 'carol');
    await user(s, 'dave');
    alice.ws.send(JSON.stringify({ op: 'presence', id: 1, to: 'bob' }));
    await until(() => alice.frames.length === 2);
    expect(alice.frames[1]).toMatchObject({ code: 'E_PRESENCE_DENIED', id: 1 });
    // A message from bob to alice makes them contacts.
    const bob = await connect(s, bobToken);
    await bob.c.send('alice', 'hi').sent;
    alice.ws.send(JSON.stringify({ op: 'presence', id: 2, to: 'bob' }));
    await until(() => alice.frames.some((f) => f.op === 'presence' && f.from === 'bob'));
    // So does a shared group.
    await api(s, { op: 'groupadd', gid: 7, members: ['alice', 'carol'] });
    alice.ws.send(JSON.stringify({ op: 'presence', id: 3, to: 'carol' }));
    alice.ws.send(JSON.stringify({ op: 'presence', id: 4, to: 'dave' }));
    await until(() => alice.frames.some((f) => f.id === 4));
    expect(alice.frames.some((f) => f.op === 'presence' && f.from === 'carol')).toBe(true);
    expect(alice.frames.find((f) => f.id === 4)).toMatchObject({ code: 'E_PRESENCE_DENIED' });
    // Ending a subscription it could not make tells it nothing either: the
    // answer to "sub":false carries the user's state.
    const before = alice.frames.length;
    alice.ws.send(JSON.stringify({ op: 'presence', id: 5, to: 'dave', sub: false }));
    await until(() => alice.frames.length > before);
    expect(alice.frames.slice(before)).toEqual([expect.objectContaining({ op: 'error', code: 'E_PRESENCE_DENIED', id: 5 })]);
  });

  it('presence = none refuses every subscription', async () => {
    const s = await start('presence = none\n');
    const alice = await loggedIn(s, await user(s, 'alice'));
    await user(s, 'bob');
    alice.ws.send(JSON.stringify({ op: 'presence', id: 9, to: 'bob' }));
    await until(() => alice.frames.length === 2);
    expect(alice.frames[1]).toMatchObject({ code: 'E_PRESENCE_DENIED', id: 9 });
  });
});

describe('the inbox of a user', () => {
  it('holds at most max_inbox_messages: the next message gets 0x82 (inbox full), and room comes back with the acknowledgements', async () => {
    const s = await start('max_inbox_messages = 5\n');
    const alice = await connect(s, await user(s, 'alice'));
    const bobToken = await user(s, 'bob');
    for (let i = 0; i < 5; i++) expect(await alice.c.send('bob', `m${i}`).sent).toBe(1);
    await expect(alice.c.send('bob', 'one too many').sent).rejects.toMatchObject({ code: 'E_INBOX_FULL', status: 0x82 });
    expect((await api(s, { op: 'message', from: 'alice', to: 'bob', data: 'api' })).status).toBe(0x82);
    expect(s.store.countPending('bob')).toBe(5);
    expect(s.stats.inboxFull).toBe(2);
    const bob = await connect(s, bobToken);
    await until(() => bob.got.length === 5 && s.store.countPending('bob') === 0);
    expect(await alice.c.send('bob', 'room again').sent).toBe(1);
  });

  it('an inbox counted full is read again from the store at most once a second', async () => {
    const s = await start('max_inbox_messages = 3\n');
    const alice = await connect(s, await user(s, 'alice'));
    await user(s, 'bob');
    for (let i = 0; i < 3; i++) expect(await alice.c.send('bob', `m${i}`).sent).toBe(1);
    await expect(alice.c.send('bob', 'full').sent).rejects.toMatchObject({ status: 0x82 });
    // Room made behind the server's back (as another node's purge would).
    const raw = new Database(path.join(s.settings.dataDir, 'switchboard.db'));
    raw.exec('DELETE FROM messages');
    raw.close();
    // Within the second the engine trusts its own count; after it, SQLite
    // answers its question at once (PostgreSQL's counts are read ahead:
    // test/server-postgres.test.ts).
    await expect(alice.c.send('bob', 'still full').sent).rejects.toMatchObject({ status: 0x82 });
    await new Promise((r) => setTimeout(r, 1100));
    expect(await alice.c.send('bob', 'room').sent).toBe(1);
  });

  it('holds at most max_inbox_bytes of payload', async () => {
    const s = await start('max_inbox_bytes = 1000\n');
    const alice = await connect(s, await user(s, 'alice'));
    await user(s, 'bob');
    expect(await alice.c.send('bob', 'x'.repeat(600)).sent).toBe(1);
    await expect(alice.c.send('bob', 'y'.repeat(600)).sent).rejects.toMatchObject({ code: 'E_INBOX_FULL' });
    expect(await alice.c.send('bob', 'z'.repeat(300)).sent).toBe(1);
  });

  it('a group member whose inbox is full misses the message; the others get it', async () => {
    const s = await start('max_inbox_messages = 1\n');
    const alice = await connect(s, await user(s, 'alice'));
    await user(s, 'bob');
    const carolToken = await user(s, 'carol');
    await api(s, { op: 'groupadd', gid: 5, members: ['alice', 'bob', 'carol'] });
    await alice.c.send('bob', 'fills bob').sent;
    expect(await alice.c.sendToGroup(5, 'to all').sent).toBe(1);
    expect(s.store.countPending('bob')).toBe(1);
    const carol = await connect(s, carolToken);
    await until(() => carol.texts().includes('to all'));
  });
});

describe('rate limits', () => {
  it('are a token bucket: after a burst, tokens come back in proportion to the time waited', async () => {
    const s = await start('rate_limit = 100\nuser_rate_limit = 100000\n');
    const a = await loggedIn(s, await user(s, 'alice'));
    await user(s, 'bob');
    let id = 1;
    const burst = (n: number) => {
      for (let i = 0; i < n; i++) a.ws.send(JSON.stringify({ op: 'msg', id: id++, to: 'bob', data: 'x' }));
    };
    const answered = () => a.frames.filter((f) => f.op === 'status' || f.code === 'E_RATE_LIMITED').length;
    burst(150);
    await until(() => answered() === 150);
    const sent1 = a.frames.filter((f) => f.op === 'status').length;
    expect(sent1).toBeGreaterThanOrEqual(100);
    expect(sent1).toBeLessThan(115);
    await sleep(300);
    burst(100);
    await until(() => answered() === 250);
    // About 30 tokens came back in 300 ms; a fixed one-second window would give 0 or 100.
    const sent2 = a.frames.filter((f) => f.op === 'status').length - sent1;
    expect(sent2).toBeGreaterThanOrEqual(20);
    expect(sent2).toBeLessThan(70);
    // Every dropped frame is named by its id, so a client knows what to resend.
    const limited = a.frames.filter((f) => f.code === 'E_RATE_LIMITED');
    expect(limited.length).toBe(250 - sent1 - sent2);
    expect(limited.every((f) => typeof f.id === 'number' && (f.id as number) > 0)).toBe(true);
  });

  it('user_rate_limit is shared by all connections of a user', async () => {
    const s = await start('rate_limit = 100\nuser_rate_limit = 100\n');
    const token = await user(s, 'alice');
    await user(s, 'bob');
    const conns = [await loggedIn(s, token), await loggedIn(s, token), await loggedIn(s, token)];
    let id = 1;
    for (const c of conns) for (let i = 0; i < 100; i++) c.ws.send(JSON.stringify({ op: 'msg', id: id++, to: 'bob', data: 'x' }));
    const answered = () => conns.reduce((n, c) => n + c.frames.filter((f) => (f.op === 'status' && f.status === 1) || f.code === 'E_RATE_LIMITED').length, 0);
    await until(() => answered() === 300);
    const sent = conns.reduce((n, c) => n + c.frames.filter((f) => f.op === 'status' && f.status === 1).length, 0);
    expect(sent).toBeGreaterThanOrEqual(100);
    expect(sent).toBeLessThan(140);
    expect(s.stats.rateLimited).toBe(300 - sent);
  });

  it('a user that reconnects does not get a fresh user budget', async () => {
    const s = await start('rate_limit = 100\nuser_rate_limit = 100\n');
    const token = await user(s, 'alice');
    await user(s, 'bob');
    let id = 1;
    let sent = 0;
    for (let round = 0; round < 3; round++) {
      const c = await loggedIn(s, token);
      for (let i = 0; i < 100; i++) c.ws.send(JSON.stringify({ op: 'msg', id: id++, to: 'bob', data: 'x' }));
      await until(() => c.frames.filter((f) => f.op === 'status' || f.code === 'E_RATE_LIMITED').length === 100);
      sent += c.frames.filter((f) => f.op === 'status').length;
      c.ws.close();
      await until(() => s.stats.connections === 0);
    }
    expect(sent).toBeLessThan(200);
  });

  it('acknowledging a backlog larger than rate_limit drops no acknowledgement', async () => {
    const s = await start('rate_limit = 50\n');
    await user(s, 'alice');
    const bobToken = await user(s, 'bob');
    for (let i = 1; i <= 400; i++) await api(s, { op: 'message', from: 'alice', to: 'bob', id: i, data: `m${i}` });
    expect(s.store.countPending('bob')).toBe(400);
    const bob = await loggedIn(s, bobToken);
    await until(() => bob.frames.filter((f) => f.op === 'msg').length === 400);
    for (const m of bob.frames.filter((f) => f.op === 'msg')) bob.ws.send(JSON.stringify({ op: 'status', id: m.id, to: m.from, status: 2 }));
    await until(() => s.store.countPending('bob') === 0);
    expect(bob.frames.some((f) => f.code === 'E_RATE_LIMITED')).toBe(false);
  });

  it('statuses for messages the connection was never sent spend the connection budget', async () => {
    const s = await start('rate_limit = 20\n');
    const a = await loggedIn(s, await user(s, 'alice'));
    await user(s, 'bob');
    for (let i = 1; i <= 100; i++) a.ws.send(JSON.stringify({ op: 'status', id: i, to: 'bob', status: 2 }));
    await until(() => a.frames.filter((f) => f.code === 'E_RATE_LIMITED').length >= 70);
    expect(s.stats.statusesRateLimited).toBeGreaterThanOrEqual(70);
  });

  it('the look at a frame before decoding (binary op byte, first JSON "op") and the token buckets of the engine\'s admission', () => {
    // No owed statuses and a budget of 10 a second: a status spends the
    // connection's bucket, so the look decides which answer comes.
    const d = new Delivery({ durable: true, graceMs: 50, maxConnections: 4, maxInboxMessages: 10, maxInboxBytes: 1 << 20, rateLimit: 1000, userRateLimit: 1000 });
    const c = d.login(d.userAdd('alice'), false);
    const look = (f: Uint8Array | ArrayBuffer) => d.admit(c, f, 1);
    expect(look(Buffer.from('{"op":"status","id":1,"to":"a","status":2}'))).toBe(Admit.Status);
    expect(look(Buffer.from('{ "id":1, "op" : "status" }'))).toBe(Admit.Status);
    expect(look(Buffer.from('{"op":"msg","id":1,"to":"a"}'))).toBe(Admit.Message);
    expect(look(encodeFrame('status', { id: 1, to: 'a', status: 2 }, 'binary'))).toBe(Admit.Status);
    expect(look(encodeFrame('msg', { id: 1, to: 'a' }, 'binary'))).toBe(Admit.Message);
    // An ArrayBuffer, as uWebSockets.js gives a frame: no view is made for it.
    expect(look(new TextEncoder().encode('{"op":"status"}').buffer)).toBe(Admit.Status);
    expect(look(new ArrayBuffer(0))).toBe(Admit.Message);
    expect(look(Buffer.from('"op":'))).toBe(Admit.Message);
    expect(look(Buffer.from('{"op": "stat'))).toBe(Admit.Message);
    // A bucket of 10 a second starts full, refills smoothly, holds one second's worth.
    const e = new Delivery({ durable: true, graceMs: 50, maxConnections: 4, maxInboxMessages: 10, maxInboxBytes: 1 << 20, rateLimit: 10, userRateLimit: 1000 });
    const k = e.login(e.userAdd('bob'), false);
    const m = Buffer.from('{"op":"msg","id":1,"to":"a"}');
    let n = 0;
    while (e.admit(k, m, 1000) === Admit.Message) n++;
    expect(n).toBe(10);
    expect(e.admit(k, m, 1050)).toBe(Admit.RefusedConnection);
    expect(e.admit(k, m, 1100)).toBe(Admit.Message);
    // Owed statuses (a message written to the connection) are free.
    e.owe(k);
    expect(e.admit(k, Buffer.from('{"op":"status"}'), 1100)).toBe(Admit.Status);
    expect(e.owed[k]).toBe(1);
    // The user's bucket is shared by its connections, and outlives them.
    const f = new Delivery({ durable: true, graceMs: 50, maxConnections: 4, maxInboxMessages: 10, maxInboxBytes: 1 << 20, rateLimit: 100, userRateLimit: 3 });
    const carol = f.userAdd('carol');
    const c1 = f.login(carol, false), c2 = f.login(carol, false);
    expect([f.admit(c1, m, 1), f.admit(c2, m, 1), f.admit(c1, m, 1), f.admit(c2, m, 1)]).toEqual([Admit.Message, Admit.Message, Admit.Message, Admit.RefusedUser]);
    f.logout(c1);
    f.logout(c2);
    expect(f.admit(f.login(carol, false), m, 1)).toBe(Admit.RefusedUser);
  });

  it('a message disguised as a status (a nested "op" first) still spends the message budget', async () => {
    const s = await start('rate_limit = 10\nuser_rate_limit = 10\n');
    const a = await loggedIn(s, await user(s, 'alice'));
    await user(s, 'bob');
    for (let i = 1; i <= 40; i++) a.ws.send(`{"x":{"op":"status"},"op":"msg","id":${i},"to":"bob","data":"sneaky"}`);
    await until(() => a.frames.filter((f) => f.op === 'status' || f.code).length === 40);
    expect(a.frames.filter((f) => f.op === 'status' && f.status === 1).length).toBeLessThanOrEqual(25);
  });
});

describe('error frames keep the protocol docs\' promises', () => {
  it('name the refused frame by its id (the docs\' own E_NO_DESTINATION example)', async () => {
    const s = await start();
    const a = await loggedIn(s, await user(s, 'alice'));
    a.ws.send('{"op":"msg","id":17,"data":"hello"}');
    await until(() => a.frames.length === 2);
    expect(a.frames[1]).toMatchObject({ op: 'error', code: 'E_NO_DESTINATION', id: 17 });
  });

  it('about a binary frame come in the binary error layout, on a JSON connection too', async () => {
    const s = await start();
    const a = await loggedIn(s, await user(s, 'alice'));
    const bad = Buffer.from(encodeFrame('msg', { id: 17, to: 'bob', data: 'x' }, 'binary'));
    bad[1] = 2; // version 2
    a.ws.send(bad);
    a.ws.send(Buffer.from([0xb5, 0x01, 0x01, 0x01, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    await until(() => a.binary.length === 2);
    for (const f of a.binary) expect([f[0], f[1], f[2], f[3]]).toEqual([0xb5, 1, 3, 0x41]);
    // A wrong version byte stops the decoder before the id; the other frame's id was read.
    expect(a.binary.map((f) => f.readUInt32LE(4))).toEqual([0, 17]);
    expect(a.binary[0].readUInt32LE(8)).toBe(9); // E_BAD_VERSION
    expect(a.binary[1].readUInt32LE(8)).toBe(7); // E_NO_DESTINATION
    expect(a.binary[1].subarray(18).toString()).toMatch(/^E_NO_DESTINATION\n/);
  });

  it('a frame over the frame limit gets E_FRAME_TOO_LARGE and the connection stays open', async () => {
    // Frame limit 2 x 100000 + 4096; the transport reads up to four times that.
    const s = await start('max_message_size = 100000\n');
    const a = await loggedIn(s, await user(s, 'alice'));
    await user(s, 'bob');
    a.ws.send(JSON.stringify({ op: 'msg', id: 5, to: 'bob', data: 'x'.repeat(500_000) }));
    a.ws.send(JSON.stringify({ op: 'msg', id: 6, to: 'bob', data: 'fine' }));
    await until(() => a.frames.length === 3);
    expect(a.frames[1]).toMatchObject({ op: 'error', code: 'E_FRAME_TOO_LARGE', id: 0 });
    expect(a.frames[2]).toMatchObject({ op: 'status', id: 6, status: 1 });
    expect(s.stats.framesTooLarge).toBe(1);
  });

  it('a text message that is not UTF-8 ends the connection (1006, the transport does not let the server answer) and is counted', async () => {
    const s = await start();
    const a = await loggedIn(s, await user(s, 'alice'));
    a.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
    expect((await a.closed).code).toBe(1006);
    await until(() => s.stats.invalidText === 1);
  });

  it('a frame over the transport limit (four times the frame limit) ends the connection (1006) and is counted', async () => {
    const s = await start('max_message_size = 1000\n');
    const a = await loggedIn(s, await user(s, 'alice'));
    a.ws.send('x'.repeat(4 * (2 * 1000 + 4096) + 1));
    expect((await a.closed).code).toBe(1006);
    await until(() => s.stats.framesTooLarge === 1);
  });
});

describe('statuses', () => {
  it('a relayed receipt of a group message carries its gid', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await connect(s, await user(s, 'bob'));
    await api(s, { op: 'groupadd', gid: 42, members: ['alice', 'bob'] });
    const m = alice.c.sendToGroup(42, 'hi all', { flags: 0x3 });
    await m.sent;
    await until(() => bob.got.length === 1);
    bob.c.markRead(bob.got[0]);
    await until(() => alice.statuses.filter((x) => x.id === m.id).length === 3);
    const got = alice.statuses.filter((x) => x.id === m.id);
    expect(got.map((x) => [x.status, x.groupid])).toEqual([
      [1, 42],
      [2, 42],
      [3, 42],
    ]);
    expect(got.slice(1).map((x) => x.from)).toEqual(['bob', 'bob']);
  });

  it('reach the sender in the order sent, delivered, read, also when the recipient reads at once (the README example)', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await connect(s, await user(s, 'bob'));
    bob.c.on('message', (m) => bob.c.markRead(m));
    const ids: number[] = [];
    for (let round = 0; round < 10; round++) {
      const batch = Array.from({ length: 20 }, () => alice.c.send('bob', 'hello bob', { flags: 0x3 }));
      ids.push(...batch.map((b) => b.id));
      await Promise.all(batch.map((b) => b.sent));
    }
    await until(() => ids.every((id) => alice.statuses.filter((x) => x.id === id).length === 3));
    const wrong = ids.filter((id) => alice.statuses.filter((x) => x.id === id).map((x) => x.status).join() !== '1,2,3');
    expect(wrong).toEqual([]);
  });

  it('an expired message is dropped without telling its sender (documented silence)', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    const bobToken = await user(s, 'bob');
    const m = alice.c.send('bob', 'soon stale', { expiry: 1, flags: 0x1 });
    await m.sent;
    await sleep(1200);
    const bob = await connect(s, bobToken);
    await sleep(200);
    expect(bob.got).toEqual([]);
    expect(alice.statuses.filter((x) => x.id === m.id).map((x) => x.status)).toEqual([1]);
  });
});

describe('login frames', () => {
  it('the SDK refuses a device label the server would refuse, before connecting', () => {
    const make = (device: string) => new SwitchboardClient({ url: 'ws://127.0.0.1:1/', token: 't', device, WebSocket: WebSocket as never });
    expect(() => make('x'.repeat(65))).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
    expect(() => make('a\nb')).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
    expect(() => make('\ud800')).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
    expect(make('phone-1 😀')).toBeTruthy();
  });

  it('a device label over 64 bytes or with control characters is refused with E_BAD_DEVICE (4002), not echoed', async () => {
    const s = await start();
    const token = await user(s, 'alice');
    for (const device of ['x'.repeat(100_000), 'a\r\nSet-Cookie: x', 'nul\u0000']) {
      const r = rawSocket(s);
      expect(await r.opened).toBe('open');
      r.ws.send(JSON.stringify({ op: 'login', token, device }));
      expect((await r.closed).code).toBe(4002);
      expect(r.frames).toEqual([expect.objectContaining({ code: 'E_BAD_DEVICE' })]);
    }
    const q = rawSocket(s, `?token=${token}&device=${encodeURIComponent('bad\nlabel')}`);
    expect((await q.closed).code).toBe(4002);
    const ok = await connect(s, token, 'phone-1');
    expect(ok.c).toBeTruthy();
    expect(s.stats.refusedBadDevice).toBe(4);
  });
});

describe('the backend API', () => {
  /** One raw HTTP/1.1 request; returns the status line and body. */
  function rawHttp(port: number, text: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(port, '127.0.0.1', () => sock.write(text));
      let got = '';
      sock.on('data', (d) => {
        got += d.toString();
        if (/\r\n\r\n[\s\S]*\}/.test(got)) {
          sock.destroy();
          resolve(got);
        }
      });
      sock.on('error', reject);
      sock.on('end', () => resolve(got));
    });
  }

  it('refuses a request with two Content-Length headers', async () => {
    const s = await start();
    const body = JSON.stringify({ op: 'users' });
    const answer = await rawHttp(s.port, `POST /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${APP}\r\nContent-Length: ${body.length}\r\nContent-Length: 5\r\n\r\n${body}`);
    expect(answer).toMatch(/^HTTP\/1.1 400/);
    expect(answer).toContain('E_BAD_REQUEST');
    const once = await rawHttp(s.port, `POST /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${APP}\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    expect(once).toMatch(/^HTTP\/1.1 200/);
  });

  it('message refuses fields a frame would refuse', async () => {
    const s = await start();
    await user(s, 'alice');
    await user(s, 'bob');
    expect(await api(s, { op: 'message', from: 'alice', to: 'bob', data: 'x', status: 2 })).toMatchObject({ ok: false, code: 'E_BAD_FIELD' });
    expect(await api(s, { op: 'message', from: 'alice', to: 'bob', data: 'x', id: 'seven' })).toMatchObject({ ok: false, code: 'E_BAD_FIELD' });
    expect(await api(s, { op: 'message', from: 'alice', to: 'bob', data: 'x', id: 7 })).toMatchObject({ ok: true, id: 7, status: 1 });
  });

  it('groupadd checks members before it creates the group', async () => {
    const s = await start();
    await user(s, 'alice');
    expect(await api(s, { op: 'groupadd', gid: 3, members: ['alice', 'ghost'] })).toMatchObject({ ok: false, code: 'E_NO_SUCH_USER' });
    expect(await api(s, { op: 'groupadd', gid: 3, members: 'alice' })).toMatchObject({ ok: false, code: 'E_BAD_REQUEST' });
    expect(s.store.groupExists(3)).toBe(false);
    expect(await api(s, { op: 'groupadd', gid: 3, members: ['alice'] })).toMatchObject({ ok: true, members: ['alice'] });
  });

  it('an empty address is E_BAD_ADDRESS', async () => {
    const s = await start();
    expect(await api(s, { op: 'useradd', address: '' })).toMatchObject({ ok: false, code: 'E_BAD_ADDRESS' });
    expect(await api(s, { op: 'useradd' })).toMatchObject({ ok: false, code: 'E_BAD_REQUEST' });
  });
});
