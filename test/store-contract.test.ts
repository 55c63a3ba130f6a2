// The Store contract (lib/store/types.ts, docs/store.md), the same
// assertions against every engine: the embedded SQLite store, whose commit
// is synchronous, the same SQLite store behind an asynchronous commit
// (test/async-store.ts), and PostgreSQL (lib/store/postgres.ts, a real
// server from test/pg.ts), whose every read is asynchronous too. Every call
// is awaited, as a networked engine needs (awaiting SQLite's plain values
// changes nothing); each engine says how to make its commits fail for real.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Database } from '../lib/store/db';
import { PostgresStore } from '../lib/store/postgres';
import { SyncStoreAdapter } from '../lib/store/async';
import { SqliteStore } from '../lib/store/sqlite';
import type { AsyncStore, Store } from '../lib/store/types';
import { AsyncSqliteStore } from './async-store';
import { startPostgres, type PgServer } from './pg';
import { codeOf, inbox, msg } from './store-helpers';

type AnyStore = Store | AsyncStore;

interface Engine {
  name: string;
  /** commit() returns nothing: the server releases its batch in the same call. */
  synchronous: boolean;
  /** A fresh place for a store: a file name, a database. */
  place(): Promise<string>;
  /** A store on `where` (a fresh place, or one opened before to see what it kept). */
  open(where: string): AnyStore | Promise<AnyStore>;
  /** Makes every commit fail inside the engine's transaction until the returned function is called. */
  breakCommits(where: string): Promise<() => void | Promise<void>>;
}

/** A trigger that raises inside SQLite's transaction: the real commit path fails, as on a full disk. */
async function breakSqlite(file: string): Promise<() => void> {
  const raw = new Database(file);
  raw.exec("CREATE TRIGGER fail_insert BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk on fire'); END");
  return () => {
    raw.exec('DROP TRIGGER fail_insert');
    raw.close();
  };
}

const dirs: string[] = [];
async function sqliteFile(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-contract-'));
  dirs.push(dir);
  return path.join(dir, 'store.db');
}

// One PostgreSQL server for the file, started by the first test that needs
// it; a fresh database per place.
let pgServer: Promise<PgServer> | undefined;
const pg = (): Promise<PgServer> => (pgServer ??= startPostgres({ fsync: false }));
afterAll(async () => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  await (await pgServer)?.close();
});

/** The same kind of trigger in PostgreSQL: the commit's statement fails inside its transaction. */
async function breakPostgres(db: string): Promise<() => Promise<void>> {
  const server = await pg();
  await server.query(db, "CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$");
  await server.query(db, 'CREATE TRIGGER fail_insert BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION fail_insert()');
  return async () => {
    await server.query(db, 'DROP TRIGGER fail_insert ON messages');
  };
}

const engines: Engine[] = [
  { name: 'sqlite', synchronous: true, place: sqliteFile, open: (file) => SqliteStore.open(file), breakCommits: breakSqlite },
  { name: 'sqlite seen as an AsyncStore (the server\'s adapter)', synchronous: true, place: sqliteFile, open: (file) => new SyncStoreAdapter(SqliteStore.open(file)), breakCommits: breakSqlite },
  { name: 'sqlite behind an asynchronous commit', synchronous: false, place: sqliteFile, open: (file) => AsyncSqliteStore.open(file), breakCommits: breakSqlite },
  {
    name: 'postgresql',
    synchronous: false,
    place: async () => (await pg()).createDatabase(),
    open: async (db) => PostgresStore.open((await pg()).url(db)),
    breakCommits: breakPostgres,
  },
];

/** Whatever commit() returns, as a Promise (a synchronous throw becomes a rejection). */
async function commit(s: AnyStore): Promise<void> {
  await s.commit();
}

describe.each(engines)('the store contract: $name', (engine) => {
  const opened: AnyStore[] = [];
  async function open(where?: string): Promise<AnyStore> {
    const s = await engine.open(where ?? (await engine.place()));
    opened.push(s);
    return s;
  }
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close();
  });

  describe('users and groups', () => {
    it('a user is created once, found by token hash, listed in order; a token hash belongs to one user', async () => {
      const s = await open();
      expect(await s.addUser('bob', 'h-bob')).toBe(true);
      expect(await s.addUser('alice', 'h-alice')).toBe(true);
      expect(await s.addUser('bob', 'h-other')).toBe(false);
      expect(await s.userByTokenHash('h-bob')).toBe('bob');
      expect(await s.userByTokenHash('h-other')).toBe(null);
      expect(await s.listUsers()).toEqual(['alice', 'bob']);
      expect(await codeOf(() => s.addUser('carol', 'h-bob'))).toBe('E_STORE_TOKEN_IN_USE');
      expect(await s.setTokenHash('bob', 'h-new')).toBe(true);
      expect([await s.userByTokenHash('h-bob'), await s.userByTokenHash('h-new')]).toEqual([null, 'bob']);
      expect(await s.setTokenHash('nobody', 'h')).toBe(false);
    });

    it('removing a user removes its memberships and its copies, committed and buffered, but not what it sent', async () => {
      const s = await open();
      await s.addUser('alice', 'a');
      await s.addUser('bob', 'b');
      await s.addGroup(7, 'g');
      await s.editMembers(7, ['alice', 'bob'], []);
      s.enqueue(msg('bob', 'alice', 1));
      s.enqueue(msg('alice', 'bob', 1));
      await commit(s);
      s.enqueue(msg('bob', 'alice', 2));
      expect(await s.removeUser('bob')).toBe(true);
      await commit(s);
      expect([await s.userExists('bob'), await s.members(7), await inbox(s, 'bob'), await inbox(s, 'alice')]).toEqual([false, ['alice'], [], ['bob#1']]);
      expect(await s.removeUser('bob')).toBe(false);
    });

    it('groups hold members, listed both ways; edits are all or nothing and name what is unknown', async () => {
      const s = await open();
      for (const u of ['alice', 'bob', 'carol']) await s.addUser(u, `h-${u}`);
      expect(await s.addGroup(5, 'five')).toBe(true);
      expect(await s.addGroup(5, 'again')).toBe(false);
      expect(await s.addGroup(3, 'three')).toBe(true);
      await s.editMembers(5, ['carol', 'alice'], []);
      await s.editMembers(3, ['alice'], []);
      expect([await s.members(5), await s.groupsOf('alice'), await s.groupExists(5), await s.members(99)]).toEqual([['alice', 'carol'], [3, 5], true, []]);
      expect(await codeOf(() => s.editMembers(5, ['bob', 'mallory'], ['alice']))).toBe('E_STORE_NO_USER');
      expect(await s.members(5)).toEqual(['alice', 'carol']);
      expect(await codeOf(() => s.editMembers(99, ['bob'], []))).toBe('E_STORE_NO_GROUP');
      expect(await codeOf(() => s.addGroup(0, 'zero'))).toBe('E_STORE_ARGUMENT');
      expect(await s.removeGroup(5)).toBe(true);
      expect([await s.groupExists(5), await s.groupsOf('alice')]).toEqual([false, [3]]);
    });

    it('every group is listed with its members in one read, a group without members too', async () => {
      const s = await open();
      for (const u of ['alice', 'bob', 'carol']) await s.addUser(u, `h-${u}`);
      expect(await s.listGroups()).toEqual([]);
      await s.addGroup(9, 'nine');
      await s.addGroup(2, 'two');
      await s.addGroup(4, 'empty');
      await s.editMembers(9, ['carol', 'alice'], []);
      await s.editMembers(2, ['bob'], []);
      expect(await s.listGroups()).toEqual([
        { gid: 2, members: ['bob'] },
        { gid: 4, members: [] },
        { gid: 9, members: ['alice', 'carol'] },
      ]);
    });
  });

  describe('messages', () => {
    it('commit() returns nothing from a synchronous engine and a Promise from an asynchronous one', async () => {
      const s = await open();
      s.enqueue(msg('bob', 'alice', 1));
      const r = s.commit();
      expect(r === undefined).toBe(engine.synchronous);
      await r;
      expect(await inbox(s, 'bob')).toEqual(['alice#1']);
    });

    it('are invisible until their commit completes, then delivered per recipient in the order enqueued', async () => {
      const s = await open();
      s.enqueue(msg('bob', 'alice', 3));
      s.enqueue(msg('carol', 'alice', 1));
      s.enqueue(msg('bob', 'carol', 9));
      s.enqueue(msg('bob', 'alice', 1));
      expect([s.pendingWrites, await s.countPending(), await inbox(s, 'bob')]).toEqual([4, 0, []]);
      await commit(s);
      expect([s.pendingWrites, await inbox(s, 'bob'), await inbox(s, 'carol'), await s.countPending(), await s.countPending('bob')]).toEqual([0, ['alice#3', 'carol#9', 'alice#1'], ['alice#1'], 4, 3]);
      const seqs = (await s.pending('bob')).map((m) => m.seq);
      expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
      // Paging.
      expect((await s.pending('bob', 1, seqs[0])).map((m) => m.payload.toString())).toEqual(['carol#9']);
    });

    it('commit() takes the batch: writes made before it completes belong to the next one', async () => {
      const s = await open();
      s.enqueue(msg('bob', 'alice', 1));
      const first = commit(s);
      expect(s.pendingWrites).toBe(0);
      s.enqueue(msg('bob', 'alice', 2));
      expect(s.pendingWrites).toBe(1);
      await first;
      expect(await inbox(s, 'bob')).toEqual(['alice#1']);
      await commit(s);
      expect(await inbox(s, 'bob')).toEqual(['alice#1', 'alice#2']);
    });

    it('keep every field, binary payloads included', async () => {
      const s = await open();
      const m = msg('bob', 'alice', 0xfffffffe, { refid: 4, groupid: 9, flags: 3, type: 7, expiry: 60, expiresAt: Date.now() + 60_000, payload: Buffer.from([0, 255, 10, 13]) });
      s.enqueue(m);
      await commit(s);
      expect(await s.pending('bob')).toEqual([{ ...m, seq: expect.any(Number) }]);
    });

    it('a resend of a copy still pending is dropped: the original keeps its place', async () => {
      const s = await open();
      s.enqueue(msg('bob', 'alice', 1));
      s.enqueue(msg('bob', 'alice', 2));
      await commit(s);
      s.enqueue(msg('bob', 'alice', 1, { payload: Buffer.from('resent') }));
      await commit(s);
      expect(await inbox(s, 'bob')).toEqual(['alice#1', 'alice#2']);
    });

    it('an ack deletes that copy, in the same batch (never written) or a later one', async () => {
      const s = await open();
      s.enqueue(msg('bob', 'alice', 1));
      s.enqueue(msg('bob', 'alice', 2));
      s.enqueue(msg('carol', 'alice', 1));
      s.ack('bob', 'alice', 2);
      await commit(s);
      expect([await inbox(s, 'bob'), await inbox(s, 'carol')]).toEqual([['alice#1'], ['alice#1']]);
      s.ack('bob', 'alice', 1);
      s.ack('bob', 'alice', 99);
      await commit(s);
      expect([await inbox(s, 'bob'), await inbox(s, 'carol')]).toEqual([[], ['alice#1']]);
      // Buffered writes apply in order: a copy enqueued after an ack of its id survives.
      s.ack('dave', 'alice', 5);
      s.enqueue(msg('dave', 'alice', 5));
      await commit(s);
      expect(await inbox(s, 'dave')).toEqual(['alice#5']);
    });

    it('expired copies are not delivered nor counted, and purging deletes them', async () => {
      const s = await open();
      s.enqueue(msg('bob', 'alice', 1, { expiry: 1, expiresAt: Date.now() - 1 }));
      s.enqueue(msg('bob', 'alice', 2, { expiry: 60, expiresAt: Date.now() + 60_000 }));
      await commit(s);
      expect([await inbox(s, 'bob'), await s.countPending('bob'), await s.queued('bob')]).toEqual([['alice#2'], 1, { messages: 1, bytes: 'alice#2'.length }]);
      expect(await s.queuedAll()).toEqual([{ recipient: 'bob', messages: 1, bytes: 'alice#2'.length }]);
      expect(await s.purgeExpired()).toBe(1);
      expect(await s.purgeExpired(Date.now() + 120_000)).toBe(1);
      expect(await s.countPending()).toBe(0);
    });

    it('copies that ask for a receipt are listed for the server to remember at start-up', async () => {
      const s = await open();
      s.enqueue(msg('bob', 'alice', 1, { flags: 1 }));
      s.enqueue(msg('bob', 'alice', 2));
      s.enqueue(msg('carol', 'alice', 3, { flags: 3, groupid: 8 }));
      await commit(s);
      expect(await s.receiptFlagsPending(3)).toEqual([
        { recipient: 'bob', sender: 'alice', id: 1, groupid: 0, flags: 1 },
        { recipient: 'carol', sender: 'alice', id: 3, groupid: 8, flags: 3 },
      ]);
    });

    it('a malformed copy is refused at enqueue, so it cannot fail a whole batch', async () => {
      const s = await open();
      expect(await codeOf(() => s.enqueue(msg('', 'alice', 1)))).toBe('E_STORE_ARGUMENT');
      expect(await codeOf(() => s.enqueue(msg('bob', 'alice', -1)))).toBe('E_STORE_ARGUMENT');
      expect(s.pendingWrites).toBe(0);
    });
  });

  describe('failure and durability', () => {
    it('a failed commit stores nothing of its batch, drops it (and whatever was buffered while it flew), and the next commit works', async () => {
      const where = await engine.place();
      const s = await open(where);
      s.enqueue(msg('bob', 'alice', 1));
      await commit(s);
      const heal = await engine.breakCommits(where);
      s.enqueue(msg('bob', 'alice', 2));
      s.enqueue(msg('bob', 'alice', 3));
      const failing = commit(s);
      s.enqueue(msg('bob', 'alice', 4)); // during the flight; after the failure for a synchronous engine
      expect(await codeOf(failing)).toBe('E_STORE_WRITE');
      expect(await inbox(s, 'bob')).toEqual(['alice#1']);
      expect(s.pendingWrites).toBe(engine.synchronous ? 1 : 0);
      await heal();
      s.enqueue(msg('bob', 'alice', 5));
      await commit(s);
      expect(await inbox(s, 'bob')).toEqual(engine.synchronous ? ['alice#1', 'alice#4', 'alice#5'] : ['alice#1', 'alice#5']);
    });

    it('what was committed, and what close() commits, is there when the store is opened again', async () => {
      const where = await engine.place();
      const s = await engine.open(where);
      await s.addUser('bob', 'h');
      s.enqueue(msg('bob', 'alice', 1));
      await commit(s);
      s.enqueue(msg('bob', 'alice', 2));
      await s.close();
      await s.close(); // twice does nothing
      expect(await codeOf(() => s.pending('bob'))).toBe('E_STORE_CLOSED');
      const again = await open(where);
      expect([await again.listUsers(), await inbox(again, 'bob')]).toEqual([['bob'], ['alice#1', 'alice#2']]);
    });
  });
});
