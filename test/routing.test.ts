// Routing rules that guard resources and module hooks, with the real server
// over loopback: real WebSocket clients, the recorder module compiled from C,
// a real SQLite file. The delivery engine's side of the same rules is in
// test/native/router_test.cc and test/delivery.test.ts.
import WebSocket from 'ws';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SwitchboardClient } from '../lib/client';
import { Server } from '../lib/index';
import { compileModule, moduleLine, tempDir, until } from './helpers';
import { apiCall, connectPeer, type Peer } from './server-helpers';

const APP = 'routing-token';
const running: Server[] = [];
const clients: SwitchboardClient[] = [];
const sockets: WebSocket[] = [];
let moduleDir = '';

beforeAll(() => {
  moduleDir = compileModule({ name: 'recorder', source: 'test/modules/recorder.c' });
});

afterEach(async () => {
  while (clients.length) clients.pop()!.close();
  while (sockets.length) sockets.pop()!.close();
  while (running.length) await running.pop()!.stop();
});

async function start(body = '', log: string[] = []): Promise<Server> {
  const s = await Server.start({ configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\napp_token = ${APP}\nmodule_dir = ${moduleDir}\n${body}`, log: (l) => log.push(l) });
  running.push(s);
  return s;
}

async function user(s: Server, address: string): Promise<string> {
  return (await apiCall(s.port, APP, { op: 'useradd', address })).token as string;
}

function connect(s: Server, token: string): Promise<Peer> {
  return connectPeer(s.port, token, '', clients);
}

/** A bare WebSocket client in `format`: it confirms nothing unless the test says so. */
async function raw(s: Server, token: string, format = 'json'): Promise<{ ws: WebSocket; frames: unknown[] }> {
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/?token=${token}&format=${format}`);
  const frames: unknown[] = [];
  ws.on('message', (d, isBinary) => frames.push(isBinary ? d : JSON.parse(d.toString())));
  await new Promise((r) => ws.on('open', r));
  sockets.push(ws);
  return { ws, frames };
}

describe('group receipts', () => {
  it('run on_message_status once per status, with devices reading both forms', async () => {
    const log: string[] = [];
    const s = await start('module recorder {\n tag = rec\n}\n', log);
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await connect(s, await user(s, 'bob'));
    // A binary reader makes the server encode every frame in both forms.
    const carol = await raw(s, await user(s, 'carol'), 'binary');
    await apiCall(s.port, APP, { op: 'groupadd', gid: 9, members: ['alice', 'bob', 'carol'] });
    const sending = alice.c.sendToGroup(9, 'receipts please', { flags: 0x3 });
    await until(() => bob.got.length === 1 && carol.frames.length > 0);
    // bob's SDK confirms on its own: one delivered, and its receipt reaches alice.
    await until(() => alice.statuses.some((x) => x.id === sending.id && x.status === 2));
    await new Promise((r) => setTimeout(r, 50));
    const hooks = log.map(moduleLine).filter((l) => l !== null && l.includes(` status id=${sending.id} status=2 `));
    expect(hooks).toEqual([`[recorder] rec status id=${sending.id} status=2 from=bob to=alice`]);
  });
});

describe('receipt flags', () => {
  it('are not kept for a transient group message an offline member never gets', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await connect(s, await user(s, 'bob'));
    const daveToken = await user(s, 'dave'); // offline
    await apiCall(s.port, APP, { op: 'groupadd', gid: 9, members: ['alice', 'bob', 'dave'] });
    const sending = alice.c.sendToGroup(9, 'typing', { flags: 0x1 | 0x4 });
    await until(() => bob.got.length === 1 && alice.statuses.some((x) => x.id === sending.id && x.status === 2));
    // dave connects later and claims the message he never got: if its flags
    // had been kept for him, his status would reach alice as a receipt.
    const dave = await raw(s, daveToken);
    dave.ws.send(JSON.stringify({ op: 'status', id: sending.id, to: 'alice', status: 2 }));
    await new Promise((r) => setTimeout(r, 100));
    // A message after it shows the status was taken before.
    const next = alice.c.send('bob', 'after');
    await next.sent;
    expect(alice.statuses.filter((x) => x.id === sending.id && x.status === 2).map((x) => x.from)).toEqual(['bob']);
  });
});

describe('free statuses (owed)', () => {
  it('are capped at two per message an inbox may hold, so a client cannot save up a flood', async () => {
    const s = await start('durable = off\nrate_limit = 20\nuser_rate_limit = 100000\nmax_inbox_messages = 5\n');
    const alice = await raw(s, await user(s, 'alice'));
    const bob = await raw(s, await user(s, 'bob'));
    for (let i = 1; i <= 20; i++) alice.ws.send(JSON.stringify({ op: 'msg', id: i, to: 'bob', flags: 1, data: 'x' }));
    await until(() => bob.frames.filter((f) => (f as { op: string }).op === 'msg').length === 20);
    // bob answers none of them, then sends 60 statuses for messages he was
    // never sent: 10 are free (2 x max_inbox_messages), 20 the burst of
    // rate_limit, the rest dropped. Uncapped, the 20 deliveries would have
    // made 40 of them free and none dropped.
    for (let i = 0; i < 60; i++) bob.ws.send(JSON.stringify({ op: 'status', id: 1000 + i, to: 'alice', status: 2 }));
    await until(() => s.stats.statusesRateLimited + s.metrics.statuses[2] >= 60);
    expect(s.stats.statusesRateLimited).toBeGreaterThanOrEqual(28);
    expect(s.stats.statusesRateLimited).toBeLessThanOrEqual(30);
  });
});

describe('inbox count', () => {
  it('a delivered for a transient message (never stored) does not lower it: the inbox stays within max_inbox_messages', async () => {
    const s = await start('max_inbox_messages = 1\n');
    const alice = await raw(s, await user(s, 'alice'));
    const bobToken = await user(s, 'bob');
    const statusOf = (id: number) => alice.frames.find((f) => (f as { op: string; id: number }).op === 'status' && (f as { id: number }).id === id) as { status: number } | undefined;
    alice.ws.send(JSON.stringify({ op: 'msg', id: 1, to: 'bob', data: 'stored' }));
    await until(() => statusOf(1) !== undefined);
    expect(statusOf(1)!.status).toBe(1);
    // bob's inbox is full; he connects and confirms nothing of it.
    const bob = await raw(s, bobToken);
    await until(() => bob.frames.some((f) => (f as { op: string }).op === 'msg'));
    alice.ws.send(JSON.stringify({ op: 'msg', id: 2, to: 'bob', flags: 0x4, data: 'typing' }));
    await until(() => bob.frames.filter((f) => (f as { op: string }).op === 'msg').length === 2);
    // Confirming the transient message deletes nothing: the inbox still holds message 1.
    bob.ws.send(JSON.stringify({ op: 'status', id: 2, to: 'alice', status: 2 }));
    await until(() => s.metrics.statuses[2] === 1);
    alice.ws.send(JSON.stringify({ op: 'msg', id: 3, to: 'bob', data: 'one too many' }));
    await until(() => statusOf(3) !== undefined);
    expect(statusOf(3)!.status).toBe(0x82);
    expect(s.store.countPending('bob')).toBe(1);
  });
});

describe('many connections', () => {
  it('more than the engine\'s first table holds: it grows, and every connection gets its copies and its "sent"s, including ids reused after closes', async () => {
    const s = await start('durable = off\n');
    const n = 150;
    const peers: { ws: WebSocket; frames: unknown[] }[] = [];
    for (let i = 0; i < n; i++) peers.push(await raw(s, await user(s, `u${i}`)));
    // Close some in the middle and log new ones in: their ids are reused.
    for (const i of [3, 70, 140]) peers[i].ws.close();
    await until(() => s.stats.connections === n - 3);
    for (const i of [3, 70, 140]) peers[i] = await raw(s, await user(s, `v${i}`));
    const name = (i: number) => ([3, 70, 140].includes(i) ? `v${i}` : `u${i}`);
    // Each sends one message to the next one round the ring.
    await until(() => peers.every((p) => p.frames.some((f) => (f as { op?: string }).op === 'hello')));
    for (let i = 0; i < n; i++) peers[i].ws.send(JSON.stringify({ op: 'msg', id: 1000 + i, to: name((i + 1) % n), data: `from ${name(i)}` }));
    const got = (i: number) => peers[i].frames.find((f) => (f as { op?: string }).op === 'msg') as { from: string; data: string } | undefined;
    const sent = (i: number) => peers[i].frames.some((f) => (f as { op?: string; status?: number }).op === 'status' && (f as { status?: number }).status === 1);
    await until(() => peers.every((_, i) => got(i) && sent(i)));
    for (let i = 0; i < n; i++) expect(got(i)).toMatchObject({ from: name((i + n - 1) % n) });
  });
});
