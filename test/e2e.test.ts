// End to end over loopback: the real server, real WebSocket clients (the
// SDK in lib/client over the `ws` package), real modules and a real SQLite
// file.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { SwitchboardClient } from '../lib/client';
import { Server } from '../lib/index';
import { compileModule, root, tempDir, until } from './helpers';
import { apiCall, connectPeer, type Peer } from './server-helpers';

const APP = 'e2e-token';
const samples = path.join(root, 'build', 'modules');
const running: Server[] = [];
const clients: SwitchboardClient[] = [];

async function start(body = '', dataDir = tempDir(), log: string[] = []): Promise<Server> {
  const s = await Server.start({ configText: `listen = 127.0.0.1:0\ndata_dir = ${dataDir}\napp_token = ${APP}\nmodule_dir = ${samples}\n${body}`, log: (l) => log.push(l) });
  running.push(s);
  return s;
}

function api(s: Server, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  return apiCall(s.port, APP, body);
}

async function user(s: Server, address: string): Promise<string> {
  const r = await api(s, { op: 'useradd', address });
  return r.token as string;
}


async function connect(s: Server, token: string, device = ''): Promise<Peer> {
  return connectPeer(s.port, token, device, clients);
}

/** A bare WebSocket client: it acknowledges nothing unless the test says so. */
async function raw(s: Server, token: string): Promise<{ ws: WebSocket; frames: Record<string, unknown>[]; closed: Promise<number> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/?token=${token}`);
  const frames: Record<string, unknown>[] = [];
  ws.on('message', (d, isBinary) => frames.push(isBinary ? { binary: d } : JSON.parse(d.toString())));
  const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
  await new Promise((r) => ws.on('open', r));
  return { ws, frames, closed };
}

/** Counts the store writes of the server's messages (copies enqueued). */
function countEnqueues(s: Server): { n: number } {
  const count = { n: 0 };
  const store = s.store as unknown as { enqueue: (m: unknown) => void };
  const enqueue = store.enqueue.bind(store);
  store.enqueue = (m) => {
    count.n++;
    enqueue(m);
  };
  return count;
}

afterEach(async () => {
  while (clients.length) clients.pop()!.close();
  while (running.length) await running.pop()!.stop();
});

describe('two users', () => {
  it('chat 1:1 with sent, delivered and read receipts', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await connect(s, await user(s, 'bob'));
    const sending = alice.c.send('bob', 'hi bob', { flags: 0x3 });
    expect(await sending.sent).toBe(1);
    await until(() => bob.got.length === 1);
    expect(bob.got[0]).toMatchObject({ from: 'alice', to: 'bob', id: sending.id, text: 'hi bob' });
    await until(() => alice.statuses.some((x) => x.status === 2));
    bob.c.markRead(bob.got[0]);
    await until(() => alice.statuses.some((x) => x.status === 3));
    expect(alice.statuses.filter((x) => x.id === sending.id).map((x) => x.status)).toEqual([1, 2, 3]);
    // The delivered receipt removed it from the store.
    await until(() => s.store.countPending('bob') === 0);
  });

  it('receipts work in both directions', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await connect(s, await user(s, 'bob'));
    const a = alice.c.send('bob', 'ping', { flags: 0x1 });
    const b = bob.c.send('alice', 'pong', { flags: 0x1 });
    await Promise.all([a.sent, b.sent]);
    await until(() => alice.statuses.some((x) => x.id === a.id && x.status === 2) && bob.statuses.some((x) => x.id === b.id && x.status === 2));
  });

  it('sends no receipts the message did not ask for', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await connect(s, await user(s, 'bob'));
    await alice.c.send('bob', 'quiet').sent;
    await until(() => bob.got.length === 1);
    expect(bob.c.markRead(bob.got[0])).toBe(false);
    await new Promise((r) => setTimeout(r, 100));
    expect(alice.statuses.map((x) => x.status)).toEqual([1]);
  });

  it('stores messages for an offline user and delivers them in order when it connects', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    const bobToken = await user(s, 'bob');
    for (let i = 0; i < 20; i++) await alice.c.send('bob', `m${i}`).sent;
    expect(s.store.countPending('bob')).toBe(20);
    const bob = await connect(s, bobToken);
    await until(() => bob.got.length === 20);
    expect(bob.texts()).toEqual(Array.from({ length: 20 }, (_, i) => `m${i}`));
    await until(() => s.store.countPending('bob') === 0);
  });

  it('with durable = off, stores only for offline users and still removes what was delivered', async () => {
    const s = await start('durable = off\n');
    const alice = await connect(s, await user(s, 'alice'));
    const bobToken = await user(s, 'bob');
    await alice.c.send('bob', 'while away', { flags: 0x1 }).sent;
    expect(s.store.countPending('bob')).toBe(1);
    const bob = await connect(s, bobToken);
    await alice.c.send('bob', 'live').sent;
    await until(() => bob.got.length === 2);
    expect(bob.texts()).toEqual(['while away', 'live']);
    await until(() => s.store.countPending('bob') === 0 && alice.statuses.some((x) => x.status === 2));
  });

  it('with durable = off, delivered and read receipts reach the sender of a message to an online user', async () => {
    const s = await start('durable = off\n');
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await connect(s, await user(s, 'bob'));
    const sending = alice.c.send('bob', 'receipts please', { flags: 0x3 });
    expect(await sending.sent).toBe(1);
    await until(() => bob.got.length === 1);
    bob.c.markRead(bob.got[0]);
    await until(() => alice.statuses.filter((x) => x.id === sending.id).length === 3);
    expect(alice.statuses.filter((x) => x.id === sending.id).map((x) => x.status)).toEqual([1, 2, 3]);
  });

  for (const durable of ['off', 'on']) {
    it(`with durable = ${durable}, messages that arrive while a device is still receiving its backlog are not lost`, async () => {
      const s = await start(`durable = ${durable}\n`);
      const alice = await connect(s, await user(s, 'alice'));
      const bobToken = await user(s, 'bob');
      // A backlog larger than what the server sends before the socket drains.
      const big = 'x'.repeat(30_000);
      for (let i = 0; i < 600; i++) alice.c.send('bob', `old ${i} ${big}`);
      await until(() => s.store.countPending('bob') === 600);
      // bob connects and stops reading: the backlog stalls half way.
      const got: string[] = [];
      const ws = new WebSocket(`ws://127.0.0.1:${s.port}/?token=${bobToken}`);
      ws.on('message', (d) => {
        const f = JSON.parse(d.toString());
        if (f.op === 'msg') got.push(String(f.data).split(' ').slice(0, 2).join(' '));
      });
      await new Promise((r) => ws.once('open', r));
      (ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
      await new Promise((r) => setTimeout(r, 100));
      for (let i = 0; i < 20; i++) await alice.c.send('bob', `live ${i}`).sent;
      (ws as unknown as { _socket: { resume(): void } })._socket.resume();
      await until(() => got.length >= 620);
      await new Promise((r) => setTimeout(r, 50));
      expect(got).toEqual([...Array.from({ length: 600 }, (_, i) => `old ${i}`), ...Array.from({ length: 20 }, (_, i) => `live ${i}`)]);
      ws.close();
    });
  }

  it('keeps pending messages across a restart', async () => {
    const dir = tempDir();
    let s = await start('', dir);
    const alice = await connect(s, await user(s, 'alice'));
    const bobToken = await user(s, 'bob');
    await alice.c.send('bob', 'before restart').sent;
    alice.c.close();
    await s.stop();
    running.pop();
    s = await start('', dir);
    const bob = await connect(s, bobToken);
    await until(() => bob.got.length === 1);
    expect(bob.texts()).toEqual(['before restart']);
  });

  it('delivers to every device of a user', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    const bobToken = await user(s, 'bob');
    const phone = await connect(s, bobToken, 'phone');
    const laptop = await connect(s, bobToken, 'laptop');
    expect(phone.c.hello?.device).toBe('phone');
    await alice.c.send('bob', 'to both').sent;
    await until(() => phone.got.length === 1 && laptop.got.length === 1);
  });

  it('a device that logs in while another has a message unconfirmed gets it too, even when the other confirms first', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    const bobToken = await user(s, 'bob');
    const phone = await raw(s, bobToken);
    await until(() => phone.frames.some((f) => f.op === 'hello'));
    const sending = alice.c.send('bob', 'only the phone was online');
    await until(() => phone.frames.some((f) => f.op === 'msg'));
    const m = phone.frames.find((f) => f.op === 'msg')!;
    // The laptop comes while the phone has not confirmed; the phone confirms
    // while the laptop may still be reading its backlog.
    const laptop = await raw(s, bobToken);
    phone.ws.send(JSON.stringify({ op: 'status', id: m.id, to: 'alice', status: 2 }));
    await sending.sent;
    await until(() => laptop.frames.some((f) => f.op === 'msg' && f.id === sending.id));
    // The phone's delivered deletes the copy once the laptop's backlog is done.
    await until(() => s.store.countPending('bob') === 0);
    // And a device that logs in after that finds nothing (one delivery per user).
    const tablet = await raw(s, bobToken);
    await until(() => tablet.frames.some((f) => f.op === 'hello'));
    await new Promise((r) => setTimeout(r, 200));
    expect(tablet.frames.filter((f) => f.op === 'msg')).toEqual([]);
    for (const d of [phone, laptop, tablet]) d.ws.close();
  });

  it('reports an unknown recipient as an invalid destination', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    await expect(alice.c.send('nobody', 'hello?').sent).rejects.toMatchObject({ status: 0x83 });
  });

  it('sends transient messages only to online users', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    await user(s, 'bob');
    await expect(alice.c.send('bob', 'are you there', { flags: 0x4 }).sent).rejects.toMatchObject({ status: 0x81 });
    expect(s.store.countPending('bob')).toBe(0);
  });
});

describe('durable = on: live copies (durable_grace)', () => {
  it('a copy the recipient confirms in time is never written; "sent" follows the confirmation and precedes the delivered receipt', async () => {
    const s = await start();
    const writes = countEnqueues(s);
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await connect(s, await user(s, 'bob'));
    const events: string[] = [];
    bob.c.on('message', (m) => events.push(`got ${m.id}`));
    alice.c.on('status', (st) => events.push(`${st.status === 1 ? 'sent' : 'delivered'} ${st.id}`));
    const sends = Array.from({ length: 200 }, (_, i) => alice.c.send('bob', `m${i}`, { flags: 0x1 }));
    await Promise.all(sends.map((x) => x.sent));
    await until(() => alice.statuses.filter((x) => x.status === 2).length === 200);
    expect(bob.texts()).toEqual(Array.from({ length: 200 }, (_, i) => `m${i}`));
    expect(writes.n).toBe(0);
    for (const { id } of sends) {
      const at = (e: string) => events.indexOf(`${e} ${id}`);
      expect(at('got')).toBeGreaterThanOrEqual(0);
      expect(at('got')).toBeLessThan(at('sent'));
      expect(at('sent')).toBeLessThan(at('delivered'));
    }
    expect(s.store.countPending('bob')).toBe(0);
  });

  it('a copy the recipient does not confirm is stored after durable_grace, then "sent"; its delivered status deletes it', async () => {
    const s = await start('durable_grace = 300\n');
    const writes = countEnqueues(s);
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await raw(s, await user(s, 'bob'));
    const t0 = Date.now();
    const sending = alice.c.send('bob', 'unconfirmed');
    await until(() => bob.frames.some((f) => f.op === 'msg'));
    expect(Date.now() - t0).toBeLessThan(290); // delivered at once, not after the grace
    expect(await sending.sent).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(295);
    expect(writes.n).toBe(1);
    expect(s.store.countPending('bob')).toBe(1);
    bob.ws.send(JSON.stringify({ op: 'status', id: sending.id, to: 'alice', status: 2 }));
    await until(() => s.store.countPending('bob') === 0);
    expect(bob.frames.filter((f) => f.op === 'msg')).toHaveLength(1);
  });

  it('a copy waits past the grace while its recipient is confirming other messages, and is stored once it goes quiet', async () => {
    const s = await start('durable_grace = 100\n');
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await raw(s, await user(s, 'bob'));
    const first = alice.c.send('bob', 'never confirmed');
    const t0 = Date.now();
    // bob confirms every later message for 400 ms, four times the grace.
    let confirmed = 0;
    bob.ws.on('message', (d) => {
      const f = JSON.parse(d.toString());
      if (f.op === 'msg' && f.id !== first.id) {
        bob.ws.send(JSON.stringify({ op: 'status', id: f.id, to: 'alice', status: 2 }));
        confirmed++;
      }
    });
    while (Date.now() - t0 < 400) {
      await alice.c.send('bob', 'confirmed').sent;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(confirmed).toBeGreaterThan(5);
    expect(s.store.countPending('bob')).toBe(0);
    expect(alice.statuses.some((x) => x.id === first.id)).toBe(false);
    // Quiet now: the copy is stored after about one grace, then "sent".
    expect(await first.sent).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
    expect(s.store.countPending('bob')).toBe(1);
  });

  it('a recipient that disconnects before confirming gets the copies from the store on its next connection, in order', async () => {
    const s = await start('durable_grace = 60000\n');
    const alice = await connect(s, await user(s, 'alice'));
    const bobToken = await user(s, 'bob');
    const bob = await raw(s, bobToken);
    const sends = Array.from({ length: 5 }, (_, i) => alice.c.send('bob', `m${i}`));
    await until(() => bob.frames.filter((f) => f.op === 'msg').length === 5);
    await new Promise((r) => setTimeout(r, 100));
    expect(alice.statuses).toEqual([]); // neither confirmed nor stored yet
    expect(s.store.countPending('bob')).toBe(0);
    bob.ws.close();
    await Promise.all(sends.map((x) => x.sent));
    expect(s.store.countPending('bob')).toBe(5);
    const again = await connect(s, bobToken);
    await until(() => again.got.length === 5);
    expect(again.texts()).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);
    await until(() => s.store.countPending('bob') === 0);
  });

  it('a graceful stop stores the copies still waiting for a confirmation', async () => {
    const dir = tempDir();
    let s = await start('durable_grace = 60000\n', dir);
    const alice = await connect(s, await user(s, 'alice'));
    const bobToken = await user(s, 'bob');
    const bob = await raw(s, bobToken);
    alice.c.send('bob', 'in flight');
    await until(() => bob.frames.some((f) => f.op === 'msg'));
    alice.c.close();
    await s.stop();
    running.pop();
    s = await start('', dir);
    expect(s.store.countPending('bob')).toBe(1);
    const again = await connect(s, bobToken);
    await until(() => again.got.length === 1);
    expect(again.texts()).toEqual(['in flight']);
  });

  it('durable_grace = 0 writes every copy before anyone sees it, and "sent" needs no confirmation', async () => {
    const s = await start('durable_grace = 0\n');
    const writes = countEnqueues(s);
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await raw(s, await user(s, 'bob'));
    const seenStored: number[] = [];
    bob.ws.on('message', () => seenStored.push(s.store.countPending('bob')));
    for (let i = 0; i < 3; i++) expect(await alice.c.send('bob', `m${i}`).sent).toBe(1);
    await until(() => bob.frames.filter((f) => f.op === 'msg').length === 3);
    expect(writes.n).toBe(3);
    // When each copy reached bob it was already committed.
    expect(seenStored.filter((n) => n > 0)).toHaveLength(seenStored.length);
  });

  it('a group message is "sent" once every online member confirmed; only the offline member\'s copy is written', async () => {
    const s = await start();
    const writes = countEnqueues(s);
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await connect(s, await user(s, 'bob'));
    const carol = await raw(s, await user(s, 'carol'));
    await user(s, 'dave'); // offline
    await api(s, { op: 'groupadd', gid: 7, members: ['alice', 'bob', 'carol', 'dave'] });
    const sending = alice.c.sendToGroup(7, 'hello all');
    await until(() => bob.got.length === 1 && carol.frames.some((f) => f.op === 'msg'));
    await new Promise((r) => setTimeout(r, 20));
    expect(alice.statuses).toEqual([]); // carol has not confirmed
    carol.ws.send(JSON.stringify({ op: 'status', id: sending.id, to: 'alice', status: 2 }));
    expect(await sending.sent).toBe(1);
    expect(writes.n).toBe(1);
    expect(s.store.countPending('dave')).toBe(1);
    expect(s.store.countPending('carol') + s.store.countPending('bob')).toBe(0);
  });

  it('a message resent while its first copy waits is answered by one confirmation, and nothing is written', async () => {
    const s = await start('durable_grace = 60000\n');
    const writes = countEnqueues(s);
    const alice = await raw(s, await user(s, 'alice'));
    const bob = await raw(s, await user(s, 'bob'));
    const m = JSON.stringify({ op: 'msg', id: 77, to: 'bob', data: 'twice' });
    alice.ws.send(m);
    alice.ws.send(m);
    await until(() => bob.frames.filter((f) => f.op === 'msg').length === 2);
    bob.ws.send(JSON.stringify({ op: 'status', id: 77, to: 'alice', status: 2 }));
    await until(() => alice.frames.filter((f) => f.op === 'status' && f.status === 1).length === 2);
    expect(writes.n).toBe(0);
    expect(s.store.countPending('bob')).toBe(0);
  });

  it('refuses a durable_grace that is not a whole number of milliseconds up to 60000', async () => {
    await expect(start('durable_grace = soon\n')).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE' });
    await expect(start('durable_grace = 60001\n')).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE' });
  });
});

describe('TLS', () => {
  it('serves wss:// when tls_cert and tls_key are set', async () => {
    const dir = tempDir();
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`], { stdio: 'pipe' });
    const s = await start(`tls_cert = ${dir}/cert.pem\ntls_key = ${dir}/key.pem\n`);
    const refused = await fetch(`https://127.0.0.1:${s.port}/health`).catch((e: Error) => e);
    expect(refused).toBeInstanceOf(Error); // self-signed: fetch refuses it, which shows TLS is on
    const r = await new Promise<string>((resolve, reject) => {
      const ws = new WebSocket(`wss://127.0.0.1:${s.port}/?token=nope`, { rejectUnauthorized: false });
      ws.on('message', (d) => resolve(JSON.parse(d.toString()).code));
      ws.on('error', reject);
    });
    expect(r).toBe('E_AUTH');
  });
});

describe('groups', () => {
  it('fans out to 100 members; non-members are refused', async () => {
    const s = await start();
    const tokens: string[] = [];
    for (let i = 0; i < 100; i++) tokens.push(await user(s, `m${i}`));
    await api(s, { op: 'groupadd', gid: 42, members: Array.from({ length: 100 }, (_, i) => `m${i}`) });
    const outsider = await connect(s, await user(s, 'outsider'));
    const members = await Promise.all(tokens.map((t) => connect(s, t)));
    const sending = members[0].c.sendToGroup(42, 'hello group');
    expect(await sending.sent).toBe(1);
    await until(() => members.slice(1).every((m) => m.got.length === 1));
    expect(members[0].got).toHaveLength(0);
    expect(members[57].got[0]).toMatchObject({ from: 'm0', groupid: 42, text: 'hello group' });
    await expect(outsider.c.sendToGroup(42, 'let me in').sent).rejects.toMatchObject({ status: 0x88 });
    await expect(outsider.c.sendToGroup(99, 'no such group').sent).rejects.toMatchObject({ status: 0x83 });
  });
});

describe('a turn that writes to hundreds of connections', () => {
  it('writes them in a random order, and each gets its frames complete and in order', async () => {
    // Over 256 connections written in one turn: their order is drawn at
    // random (lib/server/delivery.ts, RANDOM_ORDER_FROM); the chain of
    // each connection's frames in the turn's buffer must survive it.
    const s = await start('max_unauthenticated_per_ip = 0\n');
    const n = 300;
    const names = Array.from({ length: n }, (_, i) => `w${i}`);
    const tokens = await Promise.all(names.map((a) => user(s, a)));
    const sender = await connect(s, await user(s, 'w-sender'));
    await api(s, { op: 'groupadd', gid: 77, members: [...names, 'w-sender'] });
    const members = await Promise.all(tokens.map((t) => raw(s, t)));
    await until(async () => ((await api(s, { op: 'online' })).online as string[]).length === n + 1);
    const before = s.metrics.randomOrderTurns;
    // Ten messages at once: each turn that routes one writes to all 300
    // members, and a turn that routes several chains several frames per
    // connection through the shuffled order.
    const sending = Array.from({ length: 10 }, (_, i) => sender.c.sendToGroup(77, `m${i}`));
    await until(() => members.every((m) => m.frames.filter((f) => f.op === 'msg').length === 10), 15_000);
    for (const m of members) expect(m.frames.filter((f) => f.op === 'msg').map((f) => f.data)).toEqual(Array.from({ length: 10 }, (_, i) => `m${i}`));
    expect(s.metrics.randomOrderTurns).toBeGreaterThan(before);
    for (const m of members) m.ws.close();
    // Each member confirms nothing (raw clients): the copies are stored, and "sent" follows.
    await Promise.all(sending.map((x) => x.sent));
  }, 60_000);
});

describe('presence', () => {
  it('tells subscribers when a user comes and goes', async () => {
    const s = await start();
    const alice = await connect(s, await user(s, 'alice'));
    const bobToken = await user(s, 'bob');
    const seen: boolean[] = [];
    alice.c.on('presence', (p) => p.address === 'bob' && seen.push(p.online));
    alice.c.subscribePresence('bob');
    await until(() => seen.length === 1);
    const bob = await connect(s, bobToken);
    await until(() => seen.length === 2);
    bob.c.close();
    await until(() => seen.length === 3);
    expect(seen).toEqual([false, true, false]);
  });
});

describe('the module chain on every message', () => {
  it('a filter consumes (the sender still gets "sent"), a rewrite reaches the recipient, a bot answers', async () => {
    const dir = compileModule({ name: 'recorder', source: 'test/modules/recorder.c' });
    const s = await start(`module filter {\n blocked_words = darn\n}\nmodule recorder {\n path = ${dir}/mesibo_mod_recorder.so\n rewrite = upper\n only_to = bob\n}\nmodule echo\n`);
    const alice = await connect(s, await user(s, 'alice'));
    const bob = await connect(s, await user(s, 'bob'));
    expect(await alice.c.send('bob', 'oh darn').sent).toBe(1);
    expect(await alice.c.send('bob', 'shout this').sent).toBe(1);
    expect(await alice.c.send('echo', 'ping').sent).toBe(1);
    await until(() => bob.got.length === 1 && alice.got.length === 1);
    expect(bob.texts()).toEqual(['SHOUT THIS']);
    expect(alice.got[0]).toMatchObject({ from: 'echo', text: 'echo: ping' });
  });
});

describe('bad input', () => {
  it('malformed frames and unknown ops get error codes; the connection keeps working', async () => {
    const s = await start();
    const token = await user(s, 'alice');
    await user(s, 'bob');
    const a = await raw(s, token);
    await until(() => a.frames.length === 1);
    a.ws.send('{"op":"msg",');
    a.ws.send('{"op":"fly","id":1}');
    a.ws.send('{"op":"msg","id":3,"to":"bob","data":"fine"}');
    await until(() => a.frames.length === 4);
    expect(a.frames.slice(1).map((f) => f.code ?? f.status)).toEqual(['E_FRAME_MALFORMED', 'E_UNKNOWN_OP', 1]);
    a.ws.close();
  });

  it('an oversized payload gets E_PAYLOAD_TOO_LARGE', async () => {
    const s = await start('max_message_size = 1000\n');
    const a = await raw(s, await user(s, 'alice'));
    await user(s, 'bob');
    a.ws.send(JSON.stringify({ op: 'msg', id: 1, to: 'bob', data: 'x'.repeat(5000) }));
    await until(() => a.frames.length === 2);
    expect(a.frames[1]).toMatchObject({ op: 'error', code: 'E_PAYLOAD_TOO_LARGE' });
  });

  it('a flood is rate limited with E_RATE_LIMITED, and other users are still served', async () => {
    const s = await start('rate_limit = 50\n');
    const a = await raw(s, await user(s, 'alice'));
    const carol = await connect(s, await user(s, 'carol'));
    const bob = await connect(s, await user(s, 'bob'));
    for (let i = 1; i <= 200; i++) a.ws.send(JSON.stringify({ op: 'msg', id: i, to: 'bob', data: 'flood' }));
    await until(() => a.frames.some((f) => f.code === 'E_RATE_LIMITED'));
    expect(await carol.c.send('bob', 'still here').sent).toBe(1);
    await until(() => bob.got.some((m) => m.text === 'still here'));
    expect(bob.got.filter((m) => m.text === 'flood').length).toBeLessThanOrEqual(60);
  });

  it('unauthenticated sockets can do nothing; revoked tokens are refused', async () => {
    const s = await start();
    const anon = new WebSocket(`ws://127.0.0.1:${s.port}/`);
    const frames: Record<string, unknown>[] = [];
    anon.on('message', (d) => frames.push(JSON.parse(d.toString())));
    const code = new Promise<number>((r) => anon.on('close', (c) => r(c)));
    await new Promise((r) => anon.on('open', r));
    anon.send('{"op":"msg","id":1,"to":"x","data":"y"}');
    expect(await code).toBe(4001);
    expect(frames[0]).toMatchObject({ code: 'E_NOT_LOGGED_IN' });

    const old = await user(s, 'dave');
    const live = await raw(s, old);
    await api(s, { op: 'usertoken', address: 'dave' });
    expect(await live.closed).toBe(4001);
    const again = new SwitchboardClient({ url: `ws://127.0.0.1:${s.port}/`, token: old, WebSocket: WebSocket as never });
    clients.push(again);
    await expect(again.connect()).rejects.toMatchObject({ code: 'E_AUTH' });
  });

  it('a client that does not read is disconnected instead of growing server memory, and the log says so', async () => {
    const log: string[] = [];
    const s = await start('log_level = 2\n', tempDir(), log);
    const alice = await connect(s, await user(s, 'alice'));
    const slow = await raw(s, await user(s, 'slow'));
    // Stop reading: the kernel buffers fill, then uWebSockets.js's backpressure limit closes it.
    (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const big = 'y'.repeat(60_000);
    const sent = Array.from({ length: 200 }, () => alice.c.send('slow', big).sent);
    // The server drops the connection (the paused client cannot see it yet).
    await until(async () => !((await api(s, { op: 'online' })).online as string[]).includes('slow'), 15_000);
    // Nothing was lost: what it missed waits in the store.
    await Promise.all(sent);
    expect(s.store.countPending('slow')).toBe(200);
    expect(log.join('\n')).toMatch(/ conn\.slow_closed address=slow peer=\S*127\.0\.0\.1 buffered=\d+/);
  });

  it('ten senders at once to a client that does not read: it is closed, nothing is lost, everyone else goes on', async () => {
    // Up to 512 KB per sender and loop turn: several megabytes for one
    // connection in one turn, past uWebSockets.js's backpressure limit,
    // which then closes it inside a send (the write buffer goes on with
    // the other connections and with what that close wrote).
    const s = await start();
    const senders = await Promise.all(Array.from({ length: 10 }, async (_, i) => connect(s, await user(s, `blaster${i}`))));
    const slow = await raw(s, await user(s, 'sink'));
    const bob = await connect(s, await user(s, 'bob'));
    (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const big = 'z'.repeat(60_000);
    const sent = senders.flatMap((p) => Array.from({ length: 60 }, () => p.c.send('sink', big).sent));
    await until(async () => !((await api(s, { op: 'online' })).online as string[]).includes('sink'), 20_000);
    await Promise.all(sent);
    expect(s.store.countPending('sink')).toBe(600);
    await senders[0].c.send('bob', 'still here').sent;
    await until(() => bob.texts().includes('still here'));
  }, 60_000);
});
