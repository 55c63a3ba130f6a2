// The pipelined group commit through a real server and real WebSocket
// clients, on the real SQLite store whose commit is made asynchronous
// (test/async-store.ts): the test decides when each batch lands. "Sent" and
// held deliveries wait for their batch; what arrives meanwhile is the next
// batch, in order; a commit that fails publishes and acknowledges nothing,
// and the senders' resends then succeed. The same failure with the plain
// (synchronous) SQLite store at the end.
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { SwitchboardClient } from '../lib/client';
import { Server } from '../lib/index';
import { Database } from '../lib/store/db';
import { SqliteStore } from '../lib/store/sqlite';
import { AsyncSqliteStore } from './async-store';
import { tempDir, until } from './helpers';
import { apiCall, connectPeer, type Peer } from './server-helpers';

const APP = 'async-commit-token';
const running: Server[] = [];
const clients: SwitchboardClient[] = [];
const stores: AsyncSqliteStore[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  // A paused batch would hold stop() forever.
  for (const st of stores.splice(0)) await st.resume();
  for (const s of running.splice(0)) await s.stop();
});

/** An asynchronous store for the server to open, landing its batches on a `delayMs` timer unless paused. */
function asyncStore(delayMs?: number): { open: (file: string) => AsyncSqliteStore; get: () => AsyncSqliteStore } {
  let st: AsyncSqliteStore | null = null;
  return {
    open: (file) => {
      st = AsyncSqliteStore.open(file, delayMs);
      stores.push(st);
      return st;
    },
    get: () => st!,
  };
}

interface Started {
  s: Server;
  file: string;
  log: string[];
}

/** durable_grace = 0: every copy is stored before anyone sees it, so each message goes through a commit. */
async function start(open: (file: string) => SqliteStore | AsyncSqliteStore): Promise<Started> {
  const log: string[] = [];
  let file = '';
  const s = await Server.start({
    configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\napp_token = ${APP}\ndurable_grace = 0\nlog_level = 0\n`,
    log: (l) => log.push(l),
    openStore: (f) => {
      file = f;
      return open(f);
    },
  });
  running.push(s);
  return { s, file, log };
}

async function user(s: Server, address: string): Promise<string> {
  return (await apiCall(s.port, APP, { op: 'useradd', address })).token as string;
}

async function peer(s: Server, address: string): Promise<Peer> {
  return connectPeer(s.port, await user(s, address), '', clients);
}

/** Tracks the "sent" of each message sent, by text. */
function sender(p: Peer) {
  const sent: string[] = [];
  return {
    sent,
    send(to: string, text: string): Promise<unknown> {
      const r = p.c.send(to, text).sent.then(() => sent.push(text));
      r.catch(() => undefined); // a test that does not wait for it must not fail on it
      return r;
    },
  };
}

/** A turn or two for the server to read what the clients sent, and for anything it would send to arrive. */
const settle = () => new Promise((r) => setTimeout(r, 60));

describe('asynchronous commit', () => {
  it('"sent" and the held delivery wait until the batch lands', async () => {
    const as = asyncStore();
    const { s } = await start(as.open);
    const st = as.get();
    const alice = await peer(s, 'alice');
    const bob = await peer(s, 'bob');
    const a = sender(alice);
    st.paused = true;
    const done = a.send('bob', 'one');
    await until(() => st.inFlight === 1);
    await settle();
    expect(a.sent).toEqual([]);
    expect(bob.texts()).toEqual([]);
    expect(st.inner.countPending('bob')).toBe(0);
    await st.land();
    await done;
    await until(() => bob.texts().length === 1);
    expect(a.sent).toEqual(['one']);
    expect(bob.texts()).toEqual(['one']);
  });

  it('messages sent while a commit is in flight go in the next batch, which commits as soon as it lands, in each sender\'s order', async () => {
    const as = asyncStore();
    const { s } = await start(as.open);
    const st = as.get();
    const alice = await peer(s, 'alice');
    const carol = await peer(s, 'carol');
    const bob = await peer(s, 'bob');
    const a = sender(alice);
    const c = sender(carol);
    st.paused = true;
    a.send('bob', 'a1');
    await until(() => st.inFlight === 1);
    a.send('bob', 'a2');
    c.send('bob', 'c1');
    a.send('bob', 'a3');
    await until(() => st.pendingWrites === 3);
    await settle();
    // Nothing of either batch is out yet.
    expect(st.batches).toEqual([1]);
    expect([a.sent, c.sent, bob.texts()]).toEqual([[], [], []]);

    // The first batch lands: exactly its delivery and its "sent" go out,
    // and the next batch is taken at once.
    await st.land();
    await until(() => bob.texts().length === 1 && a.sent.length === 1);
    await settle();
    expect(st.batches).toEqual([1, 3]);
    expect(st.inFlight).toBe(1);
    expect([a.sent, c.sent, bob.texts()]).toEqual([['a1'], [], ['a1']]);

    await st.land();
    await until(() => bob.texts().length === 4 && a.sent.length === 3 && c.sent.length === 1);
    expect(a.sent).toEqual(['a1', 'a2', 'a3']);
    expect(bob.texts().filter((t) => t.startsWith('a'))).toEqual(['a1', 'a2', 'a3']);
    // Between senders the server keeps the order it read them in, which two sockets do not fix.
    expect([...bob.texts()].sort()).toEqual(['a1', 'a2', 'a3', 'c1']);
    // bob's confirmations are batches of deletes.
    await st.resume();
    await until(() => st.inner.countPending() === 0);
  });

  it('a device that logs in while its messages are in flight gets its backlog once they land, in order', async () => {
    const as = asyncStore();
    const { s } = await start(as.open);
    const st = as.get();
    const alice = await peer(s, 'alice');
    const bobToken = await user(s, 'bob');
    const a = sender(alice);
    st.paused = true;
    a.send('bob', 'm1');
    await until(() => st.inFlight === 1);
    a.send('bob', 'm2');
    await until(() => st.pendingWrites === 1);
    const bob = await connectPeer(s.port, bobToken, '', clients);
    await settle();
    expect(bob.texts()).toEqual([]);
    await st.land();
    await settle();
    // The page waits for the batch behind too: m1 alone would be followed by m2 live.
    expect(bob.texts()).toEqual([]);
    await st.resume();
    await until(() => bob.texts().length === 2 && a.sent.length === 2);
    expect(bob.texts()).toEqual(['m1', 'm2']);
    expect(a.sent).toEqual(['m1', 'm2']);
  });

  it('a failing commit publishes and acknowledges nothing of its batch nor of the one behind it; the sender is disconnected, resends, and then gets "sent" in order', async () => {
    const as = asyncStore();
    const { s, file, log } = await start(as.open);
    const st = as.get();
    const alice = await peer(s, 'alice');
    const bob = await peer(s, 'bob');
    const a = sender(alice);
    const closes: number[] = [];
    alice.c.on('disconnected', (d) => closes.push(d.code));
    // A real SQLite failure inside the store's transaction, while `broken` has a row.
    const raw = new Database(file);
    raw.exec("CREATE TABLE broken (x INTEGER); INSERT INTO broken VALUES (1); CREATE TRIGGER fail_insert BEFORE INSERT ON messages WHEN EXISTS (SELECT 1 FROM broken) BEGIN SELECT RAISE(ABORT, 'disk on fire'); END");
    st.paused = true;
    const all = [a.send('bob', 'f1')];
    await until(() => st.inFlight === 1);
    all.push(a.send('bob', 'f2'));
    await until(() => st.pendingWrites === 1);
    await st.land();
    await until(() => closes.length === 1);
    expect(closes).toEqual([1011]);
    expect(st.failed).toBe(1);
    expect(log.filter((l) => / store\.error /.test(l))).toEqual([expect.stringMatching(/disk on fire/)]);
    await settle();
    expect([a.sent, bob.texts(), st.inner.countPending()]).toEqual([[], [], 0]);

    // The store works again; the SDK reconnects and resends both, in order.
    raw.exec('DELETE FROM broken');
    raw.close();
    await st.resume();
    await Promise.all(all);
    await until(() => bob.texts().length === 2);
    expect(a.sent).toEqual(['f1', 'f2']);
    expect(bob.texts()).toEqual(['f1', 'f2']);
    // The server ran on: a new message goes through.
    await a.send('bob', 'f3');
    await until(() => bob.texts().length === 3);
    expect(bob.texts()).toEqual(['f1', 'f2', 'f3']);
  });

  it('under load, with live copies (durable_grace) and batches landing on a timer: every message "sent" and delivered once, in each sender\'s order', async () => {
    const as = asyncStore(3);
    const log: string[] = [];
    const s = await Server.start({ configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\napp_token = ${APP}\nlog_level = 0\n`, log: (l) => log.push(l), openStore: as.open });
    running.push(s);
    const st = as.get();
    const alice = await peer(s, 'alice');
    const carol = await peer(s, 'carol');
    const bob = await peer(s, 'bob');
    const daveToken = await user(s, 'dave'); // offline until the end: every copy for him is stored
    const a = sender(alice);
    const c = sender(carol);
    const N = 150;
    const all: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) {
      all.push(a.send('bob', `a${i}`), c.send('bob', `c${i}`), a.send('dave', `d${i}`));
      if (i % 25 === 0) await new Promise((r) => setTimeout(r, 2));
    }
    await Promise.all(all);
    await until(() => bob.texts().length === 2 * N);
    const dave = await connectPeer(s.port, daveToken, '', clients);
    await until(() => dave.texts().length === N);
    const seq = (p: string, n: number) => Array.from({ length: n }, (_, i) => `${p}${i}`);
    expect(bob.texts().filter((t) => t[0] === 'a')).toEqual(seq('a', N));
    expect(bob.texts().filter((t) => t[0] === 'c')).toEqual(seq('c', N));
    expect(dave.texts()).toEqual(seq('d', N));
    expect(a.sent.filter((t) => t[0] === 'a')).toEqual(seq('a', N));
    expect(a.sent.filter((t) => t[0] === 'd')).toEqual(seq('d', N));
    expect(st.batches.length).toBeGreaterThan(1);
    expect([st.failed, log.filter((l) => / store\.error /.test(l))]).toEqual([0, []]);
  });

  it('stop() waits for the batch in flight, and what it committed is there after a restart', async () => {
    const as = asyncStore(30);
    const dir = tempDir();
    const conf = `listen = 127.0.0.1:0\ndata_dir = ${dir}\napp_token = ${APP}\ndurable_grace = 0\nlog_level = 0\n`;
    const s = await Server.start({ configText: conf, log: () => {}, openStore: as.open });
    const st = as.get();
    const alice = await peer(s, 'alice');
    await user(s, 'bob');
    const a = sender(alice);
    a.send('bob', 'kept');
    await until(() => st.inFlight === 1);
    await s.stop();
    expect([st.inFlight, st.landed]).toEqual([0, 1]);
    const again = await Server.start({ configText: conf, log: () => {} });
    running.push(again);
    expect(again.store.pending('bob').map((m) => m.payload.toString())).toEqual(['kept']);
  });
});

/** A backend API call with its HTTP status; `answered` turns true when the answer arrives. */
function apiRequest(port: number, body: Record<string, unknown>) {
  const call = {
    answered: false,
    result: fetch(`http://127.0.0.1:${port}/api`, { method: 'POST', headers: { Authorization: `Bearer ${APP}` }, body: JSON.stringify(body) }).then(async (r) => {
      call.answered = true;
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    }),
  };
  return call;
}

const FAIL_INSERTS = "CREATE TABLE broken (x INTEGER); INSERT INTO broken VALUES (1); CREATE TRIGGER fail_insert BEFORE INSERT ON messages WHEN EXISTS (SELECT 1 FROM broken) BEGIN SELECT RAISE(ABORT, 'disk on fire'); END";

describe('backend API message with an asynchronous store', () => {
  it('answers once the batch holding its copy has landed, also when it was queued behind a batch in flight', async () => {
    const as = asyncStore();
    const { s } = await start(as.open);
    const st = as.get();
    const alice = await peer(s, 'alice');
    await user(s, 'bob');
    await user(s, 'carol');
    st.paused = true;
    const first = apiRequest(s.port, { op: 'message', from: 'carol', to: 'bob', data: 'api1' });
    await until(() => st.inFlight === 1);
    await settle();
    expect(first.answered).toBe(false);
    await st.land();
    expect((await first.result).body).toMatchObject({ ok: true, status: 1 });
    expect(st.inner.pending('bob').map((m) => m.payload.toString())).toEqual(['api1']);

    // Behind a client's message in flight: the API's copy is the next batch.
    sender(alice).send('bob', 'a1');
    await until(() => st.inFlight === 1);
    const second = apiRequest(s.port, { op: 'message', from: 'carol', to: 'bob', data: 'api2' });
    await until(() => st.pendingWrites === 1);
    await st.land();
    await until(() => st.inFlight === 1);
    await settle();
    expect(second.answered).toBe(false);
    expect(st.inner.countPending('bob')).toBe(2);
    await st.land();
    expect((await second.result).body).toMatchObject({ ok: true, status: 1 });
    expect(st.inner.pending('bob').map((m) => m.payload.toString())).toEqual(['api1', 'a1', 'api2']);
  });

  it('a message a module decides later is answered once its batch has landed too', async () => {
    const as = asyncStore();
    const { s } = await start(as.open);
    const st = as.get();
    await user(s, 'bob');
    await user(s, 'carol');
    await s.use('slow', { onMessage: () => new Promise<'pass'>((r) => setTimeout(() => r('pass'), 20)) });
    st.paused = true;
    const call = apiRequest(s.port, { op: 'message', from: 'carol', to: 'bob', data: 'decided' });
    await until(() => st.inFlight === 1);
    await settle();
    expect(call.answered).toBe(false);
    await st.land();
    expect((await call.result).body).toMatchObject({ ok: true, status: 1, verdict: 'pass' });
    expect(st.inner.pending('bob').map((m) => m.payload.toString())).toEqual(['decided']);
  });

  it('answers at once when nothing was stored, whatever is in flight', async () => {
    const as = asyncStore();
    const { s } = await start(as.open);
    const st = as.get();
    const alice = await peer(s, 'alice');
    await user(s, 'bob');
    st.paused = true;
    sender(alice).send('bob', 'held');
    await until(() => st.inFlight === 1);
    // An unknown recipient: nothing to store, the answer does not wait for alice's batch.
    const r = await apiRequest(s.port, { op: 'message', from: 'bob', to: 'nobody', data: 'x' }).result;
    expect(r).toMatchObject({ status: 200, body: { ok: true, status: 0x83 } });
    expect(st.inFlight).toBe(1);
  });

  it('a batch that fails answers 503 E_STORE_WRITE, and nothing of the message is kept', async () => {
    const as = asyncStore();
    const { s, file } = await start(as.open);
    const st = as.get();
    await user(s, 'bob');
    await user(s, 'carol');
    const raw = new Database(file);
    raw.exec(FAIL_INSERTS);
    st.paused = true;
    const call = apiRequest(s.port, { op: 'message', from: 'carol', to: 'bob', data: 'lost' });
    await until(() => st.inFlight === 1);
    await st.land();
    expect(await call.result).toMatchObject({ status: 503, body: { ok: false, code: 'E_STORE_WRITE' } });
    raw.exec('DELETE FROM broken');
    raw.close();
    expect(st.inner.countPending('bob')).toBe(0);
    st.paused = false;
    expect((await apiRequest(s.port, { op: 'message', from: 'carol', to: 'bob', data: 'kept' }).result).body).toMatchObject({ ok: true, status: 1 });
    expect(st.inner.pending('bob').map((m) => m.payload.toString())).toEqual(['kept']);
  });
});

describe('userdel with an asynchronous store', () => {
  it('waits for the batch in flight: no copy for the removed user lands after the delete, and the senders still hear "sent"', async () => {
    const as = asyncStore();
    const { s } = await start(as.open);
    const st = as.get();
    const alice = await peer(s, 'alice');
    await user(s, 'bob');
    const a = sender(alice);
    st.paused = true;
    a.send('bob', 'flying');
    await until(() => st.inFlight === 1);
    const del = apiRequest(s.port, { op: 'userdel', address: 'bob' });
    a.send('bob', 'buffered');
    await until(() => st.pendingWrites === 1);
    await settle();
    expect(del.answered).toBe(false);
    expect(st.inner.userExists('bob')).toBe(true);
    await st.land();
    expect(await del.result).toMatchObject({ status: 200, body: { ok: true, address: 'bob' } });
    await st.resume();
    await until(() => a.sent.length === 2);
    expect(a.sent).toEqual(['flying', 'buffered']);
    expect([st.inner.userExists('bob'), st.inner.countPending()]).toEqual([false, 0]);
    // The address is free again, with an empty inbox.
    await user(s, 'bob');
    expect(st.inner.countPending('bob')).toBe(0);
  });

  it('still deletes when the batch in flight fails, and answers at once with nothing in flight', async () => {
    const as = asyncStore();
    const { s, file } = await start(as.open);
    const st = as.get();
    const alice = await peer(s, 'alice');
    await user(s, 'bob');
    await user(s, 'carol');
    const raw = new Database(file);
    raw.exec(FAIL_INSERTS);
    st.paused = true;
    sender(alice).send('bob', 'fails');
    await until(() => st.inFlight === 1);
    const del = apiRequest(s.port, { op: 'userdel', address: 'bob' });
    await settle();
    expect(del.answered).toBe(false);
    await st.land();
    expect(await del.result).toMatchObject({ status: 200, body: { ok: true } });
    raw.exec('DELETE FROM broken');
    raw.close();
    expect([st.inner.userExists('bob'), st.inFlight]).toEqual([false, 0]);
    expect(await apiRequest(s.port, { op: 'userdel', address: 'carol' }).result).toMatchObject({ status: 200 });
    expect(await apiRequest(s.port, { op: 'userdel', address: 'bob' }).result).toMatchObject({ status: 404, body: { code: 'E_NO_SUCH_USER' } });
  });
});

describe('userdel of a user with live copies (durable_grace)', () => {
  // The removed user's connection closes, and its unconfirmed live copies
  // are stored as at any disconnect: the delete must come after, and drop them.
  it.each([
    ['SQLite', (f: string) => SqliteStore.open(f)],
    ['asynchronous', (f: string) => asyncStore().open(f)],
  ] as const)('%s: no copy for the removed user is stored, and the sender hears "sent"', async (_name, open) => {
    let st: SqliteStore | AsyncSqliteStore | null = null;
    const s = await Server.start({
      configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\napp_token = ${APP}\ndurable_grace = 10000\nlog_level = 0\n`,
      log: () => {},
      openStore: (f) => (st = open(f)),
    });
    running.push(s);
    const inner = st! instanceof AsyncSqliteStore ? st.inner : (st! as SqliteStore);
    const alice = await peer(s, 'alice');
    // bob reads but never confirms: his copy stays live.
    const bob = new WebSocket(`ws://127.0.0.1:${s.port}/?token=${await user(s, 'bob')}`);
    const got: string[] = [];
    bob.on('message', (d) => got.push(d.toString()));
    const closed = new Promise<number>((r) => bob.on('close', (code) => r(code)));
    await new Promise((r) => bob.on('open', r));
    const a = sender(alice);
    const sent = a.send('bob', 'live');
    await until(() => got.some((f) => f.includes('"msg"')));
    expect(await apiRequest(s.port, { op: 'userdel', address: 'bob' }).result).toMatchObject({ status: 200 });
    await closed;
    await sent;
    expect(a.sent).toEqual(['live']);
    await until(() => inner.pendingWrites === 0 && !(st instanceof AsyncSqliteStore && st.inFlight));
    expect([inner.userExists('bob'), inner.countPending()]).toEqual([false, 0]);
  });
});

describe('synchronous commit (SQLite)', () => {
  it('a failing commit acknowledges nothing, the sender resends once the store works again, and the server runs on', async () => {
    const { s, file, log } = await start((f) => SqliteStore.open(f));
    const alice = await peer(s, 'alice');
    const bob = await peer(s, 'bob');
    const a = sender(alice);
    const closes: number[] = [];
    alice.c.on('disconnected', (d) => closes.push(d.code));
    const raw = new Database(file);
    raw.exec(FAIL_INSERTS);
    const done = a.send('bob', 's1');
    await until(() => closes.length === 1);
    expect(closes).toEqual([1011]);
    expect([a.sent, bob.texts()]).toEqual([[], []]);
    raw.exec('DELETE FROM broken');
    raw.close();
    await done;
    await until(() => bob.texts().length === 1);
    expect(bob.texts()).toEqual(['s1']);
    expect(log.filter((l) => / store\.error /.test(l)).length).toBeGreaterThanOrEqual(1);
  });

  it('a backend API message is answered after its commit: 503 E_STORE_WRITE when it fails, ok once the store works again', async () => {
    const { s, file } = await start((f) => SqliteStore.open(f));
    await user(s, 'bob');
    await user(s, 'carol');
    const raw = new Database(file);
    raw.exec(FAIL_INSERTS);
    expect(await apiRequest(s.port, { op: 'message', from: 'carol', to: 'bob', data: 'lost' }).result).toMatchObject({ status: 503, body: { ok: false, code: 'E_STORE_WRITE' } });
    expect(s.store.countPending('bob')).toBe(0);
    raw.exec('DELETE FROM broken');
    raw.close();
    expect((await apiRequest(s.port, { op: 'message', from: 'carol', to: 'bob', data: 'kept' }).result).body).toMatchObject({ ok: true, status: 1 });
    expect(s.store.pending('bob').map((m) => m.payload.toString())).toEqual(['kept']);
  });
});
