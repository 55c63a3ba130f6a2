// The PostgreSQL store (lib/store/postgres.ts) on a real PostgreSQL 15
// (test/pg.ts): what the shared contract (store-contract.test.ts) cannot
// say about an engine on the other end of a connection. Its schema is
// created once and versioned; a commit is one transaction however large;
// when PostgreSQL goes away commits fail with E_STORE_WRITE and acknowledge
// nothing, and once it is back the same store commits again; two stores on
// one database (two nodes) see each other's commits.
import { Client } from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PG_SCHEMA_VERSION, PostgresStore } from '../lib/store/postgres';
import { startPostgres, type PgServer } from './pg';
import { until } from './helpers';
import { codeOf, inbox, msg } from './store-helpers';

let pg: PgServer;
beforeAll(async () => {
  pg = await startPostgres({ fsync: false });
});
afterAll(async () => {
  await pg?.close();
});

const opened: PostgresStore[] = [];
async function open(db: string, opts?: { timeoutMs?: number }): Promise<PostgresStore> {
  const s = await PostgresStore.open(pg.url(db), opts);
  opened.push(s);
  return s;
}
afterEach(async () => {
  if (!pg.running) await pg.start();
  for (const s of opened.splice(0)) await s.close();
});

async function messageOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as Error).message;
  }
  return 'no error';
}

describe('opening', () => {
  it('creates the schema in an empty database, at this version, and a reopen keeps it and the data', async () => {
    const db = await pg.createDatabase();
    const s = await open(db);
    const tables = (await pg.query(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")).map((r) => r.tablename);
    expect(tables).toEqual(['groups', 'members', 'messages', 'switchboard_schema', 'users']);
    expect(await pg.query(db, 'SELECT version FROM switchboard_schema')).toEqual([{ version: PG_SCHEMA_VERSION }]);
    await s.addUser('bob', 'h');
    s.enqueue(msg('bob', 'alice', 1));
    await s.commit();
    await s.close();

    const again = await open(db);
    expect([await again.listUsers(), await inbox(again, 'bob')]).toEqual([['bob'], ['alice#1']]);
    expect(await pg.query(db, 'SELECT version FROM switchboard_schema')).toEqual([{ version: PG_SCHEMA_VERSION }]);
  });

  it('nodes that start together on a new database create the schema once', async () => {
    const db = await pg.createDatabase();
    const stores = await Promise.all([open(db), open(db), open(db)]);
    expect(await pg.query(db, 'SELECT version FROM switchboard_schema')).toEqual([{ version: PG_SCHEMA_VERSION }]);
    expect(await stores[2].listUsers()).toEqual([]);
  });

  it('once the schema exists, a node needs only the rights to read and write its tables', async () => {
    const db = await pg.createDatabase();
    await (await open(db)).close();
    await pg.query(db, "CREATE ROLE node_rw LOGIN PASSWORD 'rw-secret'");
    await pg.query(db, 'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO node_rw');
    await pg.query(db, 'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO node_rw');
    await pg.query(db, 'REVOKE CREATE ON SCHEMA public FROM PUBLIC');
    const s = await PostgresStore.open(`postgresql://node_rw:rw-secret@127.0.0.1:${pg.port}/${db}`);
    opened.push(s);
    await s.addUser('bob', 'h');
    s.enqueue(msg('bob', 'alice', 1));
    s.enqueue(msg('bob', 'alice', 2));
    await s.commit();
    s.ack('bob', 'alice', 1);
    await s.commit();
    expect(await inbox(s, 'bob')).toEqual(['alice#2']);
    // The role is cluster-wide: leave none behind for the next database.
    await s.close();
    await pg.query(db, 'DROP OWNED BY node_rw');
    await pg.query(db, 'DROP ROLE node_rw');
  });

  it('refuses a schema written by a newer Switchboard, and changes nothing in it', async () => {
    const db = await pg.createDatabase();
    await (await open(db)).close();
    await pg.query(db, 'UPDATE switchboard_schema SET version = $1', [PG_SCHEMA_VERSION + 1]);
    await pg.query(db, 'DROP INDEX messages_by_expiry');
    const refused = PostgresStore.open(pg.url(db));
    expect(await codeOf(refused)).toBe('E_STORE_VERSION');
    expect(await messageOf(refused)).toMatch(`schema version ${PG_SCHEMA_VERSION + 1}`);
    expect(await pg.query(db, "SELECT indexname FROM pg_indexes WHERE indexname = 'messages_by_expiry'")).toEqual([]);
  });

  it('brings a database of schema version 1 up to this one: its commit function is replaced, its data kept', async () => {
    const db = await pg.createDatabase();
    const s = await open(db);
    s.enqueue(msg('bob', 'alice', 1));
    await s.commit();
    await s.close();
    // Version 1's function inserted in batch order and locked nothing first.
    await pg.query(db, 'UPDATE switchboard_schema SET version = 1');
    await pg.query(db, 'DROP FUNCTION switchboard_commit');

    const again = await open(db);
    expect(await pg.query(db, 'SELECT version FROM switchboard_schema')).toEqual([{ version: PG_SCHEMA_VERSION }]);
    expect(String((await pg.query(db, "SELECT prosrc FROM pg_proc WHERE proname = 'switchboard_commit'"))[0].prosrc)).toContain('FOR UPDATE');
    again.ack('bob', 'alice', 1);
    again.enqueue(msg('bob', 'alice', 2));
    await again.commit();
    expect(await inbox(again, 'bob')).toEqual(['alice#2']);
  });

  it('takes the password from the URL or from PGPASSWORD, and names neither in its errors', async () => {
    const db = await pg.createDatabase();
    const saved = process.env.PGPASSWORD;
    try {
      process.env.PGPASSWORD = pg.password;
      const s = await PostgresStore.open(pg.url(db, false));
      opened.push(s);
      expect(await s.addUser('bob', 'h')).toBe(true);
      process.env.PGPASSWORD = 'wrong-password';
      const refused = PostgresStore.open(pg.url(db, false));
      expect(await codeOf(refused)).toBe('E_STORE_OPEN');
      const badUrl = `postgresql://${pg.user}:not-it@127.0.0.1:${pg.port}/${db}`;
      const message = await messageOf(PostgresStore.open(badUrl));
      expect(message).toMatch(/password authentication failed/);
      expect(message).not.toMatch('not-it');
    } finally {
      if (saved === undefined) delete process.env.PGPASSWORD;
      else process.env.PGPASSWORD = saved;
    }
  });

  it('fails with E_STORE_OPEN for a database that does not exist, a port nobody listens on, or a URL that is not PostgreSQL', async () => {
    expect(await codeOf(PostgresStore.open(pg.url('no_such_db')))).toBe('E_STORE_OPEN');
    const down = `postgresql://${pg.user}:${pg.password}@127.0.0.1:1/x`;
    expect(await codeOf(PostgresStore.open(down))).toBe('E_STORE_OPEN');
    expect(await codeOf(PostgresStore.open('mysql://u@127.0.0.1/x'))).toBe('E_STORE_OPEN');
  });
});

describe('committing', () => {
  it('commits a batch of 10,000 copies as one transaction, in the order enqueued', async () => {
    const db = await pg.createDatabase();
    const s = await open(db);
    for (let i = 1; i <= 10_000; i++) s.enqueue(msg(`u${i % 7}`, `s${i % 3}`, i, { payload: Buffer.from([i & 255, 0, (i >> 8) & 255]) }));
    await s.commit();
    expect(await s.countPending()).toBe(10_000);
    // Rows written by one transaction share its id (xmin).
    expect(await pg.query(db, 'SELECT count(DISTINCT xmin::text)::int AS transactions, count(*)::int AS copies FROM messages')).toEqual([{ transactions: 1, copies: 10_000 }]);
    const u3 = await s.pending('u3');
    expect(u3.map((m) => m.id)).toEqual(Array.from({ length: 10_000 }, (_, i) => i + 1).filter((i) => i % 7 === 3));
    expect(u3[1].payload).toEqual(Buffer.from([10, 0, 0]));
  });

  it('hands out seq in enqueue order across recipients and batches, never reusing one', async () => {
    const s = await open(await pg.createDatabase());
    s.enqueue(msg('bob', 'alice', 1));
    s.enqueue(msg('carol', 'alice', 1));
    s.enqueue(msg('bob', 'alice', 2));
    await s.commit();
    s.enqueue(msg('carol', 'alice', 2));
    s.enqueue(msg('bob', 'alice', 3));
    await s.commit();
    const all = [...(await s.pending('bob')), ...(await s.pending('carol'))].sort((a, b) => a.seq - b.seq).map((m) => `${m.recipient}:${m.id}`);
    expect(all).toEqual(['bob:1', 'carol:1', 'bob:2', 'carol:2', 'bob:3']);
    const newest = Math.max(...(await s.pending('bob')).map((m) => m.seq));
    s.ack('bob', 'alice', 3);
    await s.commit();
    s.enqueue(msg('bob', 'alice', 4));
    await s.commit();
    expect((await s.pending('bob')).at(-1)!.seq).toBeGreaterThan(newest);
  });

  it("keeps a batch's enqueue order in seq, though its commit takes the copies in key order", async () => {
    const s = await open(await pg.createDatabase());
    for (const [recipient, id] of [['carol', 5], ['bob', 9], ['bob', 3], ['carol', 1], ['bob', 7]] as const) s.enqueue(msg(recipient, 'alice', id));
    await s.commit();
    expect([await inbox(s, 'bob'), await inbox(s, 'carol')]).toEqual([['alice#9', 'alice#3', 'alice#7'], ['alice#5', 'alice#1']]);
    const all = [...(await s.pending('bob')), ...(await s.pending('carol'))].sort((x, y) => x.seq - y.seq).map((m) => `${m.recipient}:${m.id}`);
    expect(all).toEqual(['carol:5', 'bob:9', 'bob:3', 'carol:1', 'bob:7']);
  });

  it('reports exactly the copies an ack deleted: at once in the buffer, after the commit when committed', async () => {
    const s = await open(await pg.createDatabase());
    const deleted: string[] = [];
    const off = s.onCopyDeleted((r) => deleted.push(r));
    s.enqueue(msg('bob', 'alice', 1));
    s.enqueue(msg('carol', 'alice', 1));
    s.ack('carol', 'alice', 1);
    expect(deleted).toEqual(['carol']);
    await s.commit();
    s.ack('bob', 'alice', 1);
    s.ack('bob', 'alice', 1);
    s.ack('bob', 'alice', 77);
    expect(deleted).toEqual(['carol']);
    await s.commit();
    expect(deleted).toEqual(['carol', 'bob']);
    off();
    s.enqueue(msg('dave', 'alice', 1));
    s.ack('dave', 'alice', 1);
    expect(deleted).toEqual(['carol', 'bob']);
  });

  it('refuses a second commit while one is in flight: the caller keeps at most one', async () => {
    const s = await open(await pg.createDatabase());
    s.enqueue(msg('bob', 'alice', 1));
    const first = s.commit();
    s.enqueue(msg('bob', 'alice', 2));
    expect(await codeOf(s.commit())).toBe('E_INTERNAL');
    await first;
    await s.commit();
    expect(await inbox(s, 'bob')).toEqual(['alice#1', 'alice#2']);
  });

  it('refuses at enqueue an address PostgreSQL cannot store, so the batch around it commits', async () => {
    const s = await open(await pg.createDatabase());
    s.enqueue(msg('bob', 'alice', 1));
    expect(await codeOf(() => s.enqueue(msg('b\0b', 'alice', 2)))).toBe('E_STORE_ARGUMENT');
    s.ack('b\0b', 'alice', 2);
    await s.commit();
    expect(await inbox(s, 'bob')).toEqual(['alice#1']);
    expect(await codeOf(s.addUser('e\0ve', 'h'))).toBe('E_STORE_ARGUMENT');
  });
});

describe('when PostgreSQL goes away', () => {
  it('a commit fails with E_STORE_WRITE, drops its batch and what was buffered behind it, and after a restart the same store commits again', async () => {
    const db = await pg.createDatabase();
    const s = await open(db, { timeoutMs: 3000 });
    await s.addUser('bob', 'h');
    s.enqueue(msg('bob', 'alice', 1));
    await s.commit();

    await pg.stop();
    s.enqueue(msg('bob', 'alice', 2));
    s.enqueue(msg('bob', 'alice', 3));
    const failing = s.commit();
    s.enqueue(msg('bob', 'alice', 4)); // buffered while the batch flies
    expect(await codeOf(failing)).toBe('E_STORE_WRITE');
    expect(s.pendingWrites).toBe(0);
    // Reads and user changes say what failed, with a code.
    expect(await codeOf(s.pending('bob'))).toBe('E_STORE_READ');
    expect(await codeOf(s.userByTokenHash('h'))).toBe('E_STORE_READ');
    expect(await codeOf(s.addUser('carol', 'h2'))).toBe('E_STORE_WRITE');
    // A later batch is a fresh attempt, and fails the same way while the server is down.
    s.enqueue(msg('bob', 'alice', 5));
    expect(await codeOf(s.commit())).toBe('E_STORE_WRITE');

    await pg.start();
    s.enqueue(msg('bob', 'alice', 6));
    await s.commit();
    expect(await inbox(s, 'bob')).toEqual(['alice#1', 'alice#6']);
    expect(await s.userByTokenHash('h')).toBe('bob');
  });

  it('a batch cut off mid-commit is all there or not there at all', async () => {
    const db = await pg.createDatabase();
    const s = await open(db, { timeoutMs: 3000 });
    s.enqueue(msg('bob', 'alice', 0));
    await s.commit();
    for (let i = 1; i <= 20_000; i++) s.enqueue(msg(`u${i % 50}`, 'alice', i, { payload: Buffer.alloc(200, i & 255) }));
    const flight = s.commit().then(
      () => 'committed',
      (e: { code?: string }) => String(e.code),
    );
    // Give the batch time to reach PostgreSQL before it dies under it.
    await new Promise((r) => setTimeout(r, 30));
    await pg.stop();
    const outcome = await flight;
    await pg.start();
    const stored = (await pg.query(db, "SELECT count(*)::int AS n FROM messages WHERE recipient <> 'bob'"))[0].n;
    if (outcome === 'committed') expect(stored).toBe(20_000);
    else expect([outcome, stored]).toEqual(['E_STORE_WRITE', 0]);
    expect(await inbox(s, 'bob')).toEqual(['alice#0']);
  });

  it('a commit that times out fails with E_STORE_WRITE; if PostgreSQL still commits it, the resends are recognised and dropped', async () => {
    const db = await pg.createDatabase();
    const s = await open(db, { timeoutMs: 500 });
    await pg.query(db, "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$");
    await pg.query(db, 'CREATE TRIGGER slow_insert BEFORE INSERT ON messages FOR EACH STATEMENT EXECUTE FUNCTION slow_insert()');
    s.enqueue(msg('bob', 'alice', 1));
    s.enqueue(msg('bob', 'alice', 2));
    const started = Date.now();
    expect(await codeOf(s.commit())).toBe('E_STORE_WRITE');
    expect(Date.now() - started).toBeLessThan(2500);
    await pg.query(db, 'DROP TRIGGER slow_insert ON messages');
    // PostgreSQL finishes the statement it was given: the batch lands after all.
    const deadline = Date.now() + 10_000;
    while ((await s.countPending('bob')) < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(await inbox(s, 'bob')).toEqual(['alice#1', 'alice#2']);
    // The senders were told nothing and resend, in order, behind a new message.
    s.enqueue(msg('bob', 'alice', 1, { payload: Buffer.from('resent') }));
    s.enqueue(msg('bob', 'alice', 2, { payload: Buffer.from('resent') }));
    s.enqueue(msg('bob', 'alice', 3));
    await s.commit();
    expect(await inbox(s, 'bob')).toEqual(['alice#1', 'alice#2', 'alice#3']);
  });
});

describe('two nodes on one database', () => {
  it("see each other's users, groups and committed copies, and an ack on one deletes a copy the other committed", async () => {
    const db = await pg.createDatabase();
    const a = await open(db);
    const b = await open(db);
    await a.addUser('alice', 'h-alice');
    await b.addUser('bob', 'h-bob');
    await a.addGroup(9, 'nine');
    await b.editMembers(9, ['alice', 'bob'], []);
    expect([await b.userByTokenHash('h-alice'), await a.userByTokenHash('h-bob'), await a.members(9)]).toEqual(['alice', 'bob', ['alice', 'bob']]);
    expect(await codeOf(b.addUser('mallory', 'h-alice'))).toBe('E_STORE_TOKEN_IN_USE');

    a.enqueue(msg('bob', 'alice', 1));
    b.enqueue(msg('bob', 'carol', 1));
    expect(await b.countPending('bob')).toBe(0);
    await Promise.all([a.commit(), b.commit()]);
    expect((await b.pending('bob')).map((m) => m.payload.toString()).sort()).toEqual(['alice#1', 'carol#1']);

    // The resend of a copy committed by the other node is dropped.
    b.enqueue(msg('bob', 'alice', 1, { payload: Buffer.from('resent') }));
    await b.commit();
    expect(await a.queued('bob')).toEqual({ messages: 2, bytes: 'alice#1'.length + 'carol#1'.length });

    const deletedOnB: string[] = [];
    b.onCopyDeleted((r) => deletedOnB.push(r));
    b.ack('bob', 'alice', 1);
    await b.commit();
    expect([deletedOnB, await inbox(a, 'bob')]).toEqual([['bob'], ['carol#1']]);

    expect(await b.removeUser('bob')).toBe(true);
    expect([await a.userExists('bob'), await a.members(9), await a.countPending()]).toEqual([false, ['alice'], 0]);
  });

  it('commit the same copies in opposite orders, and ack what the other stores, concurrently and without a deadlock', async () => {
    // Both nodes may store one copy (recipient, sender, id): the sender's
    // when its grace runs out, the recipient's when no device takes it.
    // Each commit takes its rows in key order, whatever its batch's order.
    const db = await pg.createDatabase();
    const a = await open(db);
    const b = await open(db);
    const keys = Array.from({ length: 120 }, (_, i) => [`u${i % 4}`, `s${i % 3}`, i] as const);
    for (let round = 0; round < 40; round++) {
      const base = round * 1000;
      for (const [r, s, i] of keys) a.enqueue(msg(r, s, base + i));
      for (const [r, s, i] of [...keys].reverse()) b.enqueue(msg(r, s, base + i));
      if (round > 0) {
        // The previous round's copies: a acks the even ones, b the odd ones,
        // each in the order the other stored them, within the batches above.
        for (const [r, s, i] of [...keys].reverse()) if (i % 2 === 0) a.ack(r, s, base - 1000 + i);
        for (const [r, s, i] of keys) if (i % 2 === 1) b.ack(r, s, base - 1000 + i);
        // And each stores again a copy the other deletes now (a resend).
        for (const [r, s, i] of keys) if (i % 2 === 1) a.enqueue(msg(r, s, base - 1000 + i));
        for (const [r, s, i] of [...keys].reverse()) if (i % 2 === 0) b.enqueue(msg(r, s, base - 1000 + i));
      }
      const results = await Promise.allSettled([a.commit(), b.commit()]);
      expect(results.map((x) => (x.status === 'fulfilled' ? 'ok' : (x.reason as Error).message)), `round ${round}`).toEqual(['ok', 'ok']);
      // Every copy of the round once, each recipient's in one sender order.
      const rows = await pg.query(db, 'SELECT count(*)::int AS n, count(DISTINCT (recipient, sender, id))::int AS d FROM messages WHERE id >= $1', [base]);
      expect(rows).toEqual([{ n: keys.length, d: keys.length }]);
    }
  });

  it('a commit that PostgreSQL aborts as a deadlock victim is sent again, and commits', async () => {
    const db = await pg.createDatabase();
    const s = await open(db);
    s.enqueue(msg('bob', 'alice', 1));
    s.enqueue(msg('bob', 'alice', 2));
    await s.commit();
    // Another session holds copy 2; the commit takes copy 1, then waits for
    // copy 2; the session then asks for copy 1: a cycle. PostgreSQL aborts
    // the commit, which waited first (the session waits 10 s before it looks).
    const other = new Client({ connectionString: pg.url(db) });
    await other.connect();
    try {
      await other.query("SET deadlock_timeout = '10s'");
      await other.query('BEGIN');
      await other.query("SELECT 1 FROM messages WHERE recipient = 'bob' AND sender = 'alice' AND id = 2 FOR UPDATE");
      s.ack('bob', 'alice', 1);
      s.ack('bob', 'alice', 2);
      const committed = s.commit().then(
        () => 'committed',
        (e: Error) => e.message,
      );
      await until(async () => (await pg.query(db, "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'switchboard' AND wait_event_type = 'Lock'"))[0].n === 1);
      await other.query("SELECT 1 FROM messages WHERE recipient = 'bob' AND sender = 'alice' AND id = 1 FOR UPDATE");
      await other.query('COMMIT');
      expect(await committed).toBe('committed');
    } finally {
      await other.end();
    }
    expect(await s.countPending('bob')).toBe(0);
  });
});
