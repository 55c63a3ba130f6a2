// The store behind store-and-forward, users and groups, on real SQLite files.
// Message writes are buffered and become durable, all together, at flush():
// these tests pin down what a reader (or a restarted server) sees before and
// after that point, including after the process is killed mid-stream.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Database } from '../lib/store/db';
import { SqliteStore, type Store } from '../lib/store/index';
import { msg } from './store-helpers';

const root = path.resolve(__dirname, '..');

const dirs: string[] = [];
function storeFile(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-store-'));
  dirs.push(dir);
  return path.join(dir, 'store.db');
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const opened: Store[] = [];
function open(file = storeFile(), opts?: { readonly?: boolean }): SqliteStore {
  const s = SqliteStore.open(file, opts);
  opened.push(s);
  return s;
}
afterEach(() => {
  for (const s of opened.splice(0)) s.close();
});

/** "sender#id" of each committed copy for the recipient, in delivery order. */
function inbox(s: Store, recipient: string): string[] {
  return s.pending(recipient).map((m) => `${m.sender}#${m.id}`);
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe('users', () => {
  it('are created once, found by token hash, and listed in order', () => {
    const s = open();
    expect(s.addUser('bob', 'h-bob')).toBe(true);
    expect(s.addUser('alice', 'h-alice')).toBe(true);
    expect(s.addUser('bob', 'h-other')).toBe(false);
    expect(s.userExists('bob')).toBe(true);
    expect(s.userExists('carol')).toBe(false);
    expect(s.userByTokenHash('h-bob')).toBe('bob');
    expect(s.userByTokenHash('h-other')).toBeNull();
    expect(s.listUsers()).toEqual(['alice', 'bob']);
  });

  it('a new token hash replaces the old one', () => {
    const s = open();
    s.addUser('bob', 'old');
    expect(s.setTokenHash('bob', 'new')).toBe(true);
    expect(s.userByTokenHash('old')).toBeNull();
    expect(s.userByTokenHash('new')).toBe('bob');
    expect(s.setTokenHash('nobody', 'x')).toBe(false);
  });

  it('two users cannot share a token hash: login would be ambiguous', () => {
    const s = open();
    s.addUser('bob', 'h1');
    s.addUser('alice', 'h2');
    expect(codeOf(() => s.addUser('carol', 'h1'))).toBe('E_STORE_TOKEN_IN_USE');
    expect(codeOf(() => s.setTokenHash('alice', 'h1'))).toBe('E_STORE_TOKEN_IN_USE');
    expect(s.userExists('carol')).toBe(false);
    expect(s.userByTokenHash('h2')).toBe('alice');
  });

  it('removing a user removes its memberships and its pending copies, committed or buffered, but not what it sent', () => {
    const s = open();
    for (const u of ['alice', 'bob']) s.addUser(u, `h-${u}`);
    s.addGroup(7, 'team');
    s.editMembers(7, ['alice', 'bob'], []);
    s.enqueue(msg('bob', 'alice', 1));
    s.enqueue(msg('alice', 'bob', 2));
    s.flush();
    s.enqueue(msg('bob', 'alice', 3));

    expect(s.removeUser('bob')).toBe(true);
    expect(s.pendingWrites).toBe(0);
    s.flush();
    expect(s.userExists('bob')).toBe(false);
    expect(s.members(7)).toEqual(['alice']);
    expect(s.groupsOf('bob')).toEqual([]);
    expect(s.countPending('bob')).toBe(0);
    expect(inbox(s, 'alice')).toEqual(['bob#2']);
    expect(s.removeUser('bob')).toBe(false);
  });
});

describe('groups', () => {
  it('are created once and hold members, listed both ways', () => {
    const s = open();
    for (const u of ['alice', 'bob', 'carol']) s.addUser(u, `h-${u}`);
    expect(s.addGroup(12, 'ops')).toBe(true);
    expect(s.addGroup(12, 'again')).toBe(false);
    expect(s.addGroup(3, 'dev')).toBe(true);
    expect(s.groupExists(12)).toBe(true);
    expect(s.groupExists(13)).toBe(false);

    s.editMembers(12, ['carol', 'alice', 'bob'], []);
    s.editMembers(3, ['alice'], []);
    s.editMembers(12, ['alice'], ['bob', 'nobody']);
    expect(s.members(12)).toEqual(['alice', 'carol']);
    expect(s.groupsOf('alice')).toEqual([3, 12]);
    expect(s.members(99)).toEqual([]);

    s.editMembers(3, ['bob'], ['bob']);
    expect(s.members(3)).toEqual(['alice']);
  });

  it('removing a group removes its memberships', () => {
    const s = open();
    s.addUser('alice', 'h');
    s.addGroup(5, 'g');
    s.editMembers(5, ['alice'], []);
    expect(s.removeGroup(5)).toBe(true);
    expect(s.removeGroup(5)).toBe(false);
    expect(s.groupsOf('alice')).toEqual([]);
    s.addGroup(5, 'g again');
    expect(s.members(5)).toEqual([]);
  });

  it('editing members is all or nothing, and names what is unknown', () => {
    const s = open();
    s.addUser('alice', 'h');
    s.addGroup(1, 'g');
    expect(codeOf(() => s.editMembers(2, ['alice'], []))).toBe('E_STORE_NO_GROUP');
    expect(() => s.editMembers(1, ['alice', 'mallory'], [])).toThrow(/"mallory"/);
    expect(codeOf(() => s.editMembers(1, ['alice', 'mallory'], []))).toBe('E_STORE_NO_USER');
    expect(s.members(1)).toEqual([]);
  });

  it('group ids are positive 32-bit integers', () => {
    const s = open();
    for (const gid of [0, -1, 1.5, 2 ** 32]) expect(codeOf(() => s.addGroup(gid, 'x'))).toBe('E_STORE_ARGUMENT');
    expect(s.addGroup(2 ** 32 - 1, 'max')).toBe(true);
  });
});

describe('messages', () => {
  it('are invisible until flushed, then delivered per recipient in the order they were enqueued', () => {
    const s = open();
    s.enqueue(msg('bob', 'alice', 1));
    s.enqueue(msg('bob', 'carol', 100));
    s.enqueue(msg('dave', 'alice', 2));
    s.enqueue(msg('bob', 'alice', 3));
    s.enqueue(msg('bob', 'carol', 101));
    expect(s.pendingWrites).toBe(5);
    expect(s.pending('bob')).toEqual([]);
    expect(s.countPending()).toBe(0);

    expect(s.flush()).toBe(5);
    expect(s.pendingWrites).toBe(0);
    expect(s.flush()).toBe(0);
    expect(inbox(s, 'bob')).toEqual(['alice#1', 'carol#100', 'alice#3', 'carol#101']);
    expect(inbox(s, 'dave')).toEqual(['alice#2']);
    expect(inbox(s, 'bob').slice(0, 2)).toEqual(s.pending('bob', 2).map((m) => `${m.sender}#${m.id}`));
    expect(s.countPending('bob')).toBe(4);
    expect(s.countPending()).toBe(5);

    const seqs = s.pending('bob').map((m) => m.seq);
    expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
  });

  it('keep every field, binary payloads included', () => {
    const s = open();
    const payload = Buffer.from([0, 1, 0xfe, 0xff, 0x41]);
    const m = msg('bob', 'alice', 4_000_000_000, { refid: 7, groupid: 12, flags: 3, type: 9, expiry: 3600, expiresAt: Date.now() + 3_600_000, payload });
    s.enqueue(m);
    s.flush();
    const [got] = s.pending('bob');
    expect(got).toEqual({ ...m, seq: expect.any(Number) });
    expect(Buffer.isBuffer(got.payload)).toBe(true);
  });

  it('an ack deletes the delivered copy and only that one', () => {
    const s = open();
    s.enqueue(msg('bob', 'alice', 1));
    s.enqueue(msg('bob', 'alice', 2));
    s.enqueue(msg('carol', 'alice', 1));
    s.flush();
    s.ack('bob', 'alice', 1);
    expect(inbox(s, 'bob')).toEqual(['alice#1', 'alice#2']);
    expect(s.flush()).toBe(1);
    expect(inbox(s, 'bob')).toEqual(['alice#2']);
    expect(inbox(s, 'carol')).toEqual(['alice#1']);
  });

  it('reports each copy an ack deleted: a buffered one at once, a committed one after the commit, nothing for a copy never stored', () => {
    const s = open();
    const deleted: string[] = [];
    const off = s.onCopyDeleted((r) => deleted.push(r));
    s.enqueue(msg('bob', 'alice', 1));
    s.flush();
    s.enqueue(msg('bob', 'alice', 2));
    s.ack('bob', 'alice', 2);
    expect(deleted).toEqual(['bob']); // cancelled in the buffer
    s.ack('bob', 'alice', 1);
    s.ack('bob', 'alice', 1); // twice: deletes nothing more
    s.ack('bob', 'alice', 4); // never stored (a transient message)
    expect(deleted).toEqual(['bob']);
    s.flush();
    expect(deleted).toEqual(['bob', 'bob']);
    off();
    s.enqueue(msg('carol', 'alice', 1));
    s.ack('carol', 'alice', 1);
    expect(deleted).toEqual(['bob', 'bob']);
  });

  it('an ack cancels a copy still in the buffer, so it is never written', () => {
    const s = open();
    s.enqueue(msg('bob', 'alice', 1));
    s.enqueue(msg('bob', 'alice', 2));
    s.ack('bob', 'alice', 1);
    expect(s.flush()).toBe(2);
    expect(inbox(s, 'bob')).toEqual(['alice#2']);
  });

  it('buffered writes apply in order: a copy enqueued after an ack of the same id survives', () => {
    const s = open();
    s.enqueue(msg('bob', 'alice', 1, { payload: Buffer.from('old') }));
    s.flush();
    s.ack('bob', 'alice', 1);
    s.enqueue(msg('bob', 'alice', 1, { payload: Buffer.from('new') }));
    s.flush();
    expect(s.pending('bob').map((m) => m.payload.toString())).toEqual(['new']);
  });

  it('expired copies are not delivered, and purging deletes them', () => {
    const s = open();
    const now = Date.now();
    s.enqueue(msg('bob', 'alice', 1, { expiry: 1, expiresAt: now - 1000 }));
    s.enqueue(msg('bob', 'alice', 2, { expiry: 60, expiresAt: now + 60_000 }));
    s.enqueue(msg('bob', 'alice', 3));
    s.flush();
    expect(inbox(s, 'bob')).toEqual(['alice#2', 'alice#3']);
    expect(s.countPending('bob')).toBe(2);

    expect(s.purgeExpired()).toBe(1);
    expect(s.purgeExpired()).toBe(0);
    expect(s.purgeExpired(now + 120_000)).toBe(1);
    expect(inbox(s, 'bob')).toEqual(['alice#3']);
  });

  it('a malformed copy is refused at enqueue, so it cannot fail a whole batch', () => {
    const s = open();
    expect(codeOf(() => s.enqueue(msg('', 'alice', 1)))).toBe('E_STORE_ARGUMENT');
    expect(codeOf(() => s.enqueue(msg('bob', 'alice', 1.5)))).toBe('E_STORE_ARGUMENT');
    expect(codeOf(() => s.enqueue(msg('bob', 'alice', 1, { payload: 'text' as unknown as Buffer })))).toBe('E_STORE_ARGUMENT');
    expect(s.pendingWrites).toBe(0);
  });

  it('group commit: 10,000 enqueues are committed by one flush, in one transaction', () => {
    const file = storeFile();
    const s = open(file);
    const N = 10_000;
    for (let i = 0; i < N; i++) s.enqueue(msg(`user${i % 100}`, 'alice', i));
    const t0 = performance.now();
    expect(s.flush()).toBe(N);
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(s.countPending()).toBe(N);

    // One transaction: make the last write of the next batch fail, and none
    // of the batch is stored; the buffer is kept for the next flush.
    const raw = new Database(file);
    raw.exec(`CREATE TRIGGER fail_last BEFORE INSERT ON messages WHEN NEW.id = ${2 * N - 1} BEGIN SELECT RAISE(ABORT, 'disk on fire'); END`);
    for (let i = N; i < 2 * N; i++) s.enqueue(msg(`user${i % 100}`, 'alice', i));
    expect(codeOf(() => s.flush())).toBe('E_STORE_WRITE');
    expect(s.countPending()).toBe(N);
    expect(s.pendingWrites).toBe(N);
    raw.exec('DROP TRIGGER fail_last');
    raw.close();
    expect(s.flush()).toBe(N);
    expect(s.countPending()).toBe(2 * N);
  });
});

describe('durability', () => {
  it('what was committed is all there after closing and reopening, and seqs keep increasing', () => {
    const file = storeFile();
    const a = SqliteStore.open(file);
    a.addUser('bob', 'h-bob');
    a.addGroup(9, 'g');
    a.editMembers(9, ['bob'], []);
    a.enqueue(msg('bob', 'alice', 1));
    a.enqueue(msg('bob', 'alice', 2));
    a.flush();
    a.ack('bob', 'alice', 2);
    a.close();
    a.close();

    const b = open(file);
    expect(b.userByTokenHash('h-bob')).toBe('bob');
    expect(b.members(9)).toEqual(['bob']);
    expect(inbox(b, 'bob')).toEqual(['alice#1']);
    const before = b.pending('bob')[0].seq;
    b.enqueue(msg('bob', 'alice', 3));
    b.flush();
    expect(b.pending('bob')[1].seq).toBeGreaterThan(before);
  });

  it('unflushed writes are not there when another handle opens the file (as after a crash)', () => {
    const file = storeFile();
    const a = open(file);
    a.enqueue(msg('bob', 'alice', 1));
    a.flush();
    a.enqueue(msg('bob', 'alice', 2));
    a.ack('bob', 'alice', 1);

    const b = open(file);
    expect(inbox(b, 'bob')).toEqual(['alice#1']);
    a.flush();
    expect(inbox(b, 'bob')).toEqual(['alice#2']);
  });

  describe('a killed process', () => {
    const compiled = path.join(root, 'dist/store/sqlite.js');
    beforeAll(() => {
      // The child needs only the store's compiled JS. tsc emits it even when
      // another part of lib/ has a type error, which that part's tests report.
      const started = Date.now();
      const r = spawnSync('npm', ['run', 'build:ts'], { cwd: root, encoding: 'utf8' });
      const output = `${r.stdout}${r.stderr}`;
      expect(output, 'type errors in lib/store').not.toMatch(/lib\/store\//);
      expect(fs.existsSync(compiled) && fs.statSync(compiled).mtimeMs >= started - 1000, `npm run build:ts did not write ${compiled}:\n${output}`).toBe(true);
    });

    it('loses nothing it reported as flushed, and keeps per-sender order', async () => {
      const file = storeFile();
      const script = path.join(path.dirname(file), 'writer.js');
      // Two senders to two recipients, 50 copies per event-loop turn, one
      // flush per turn; a line is printed only after its flush returned.
      fs.writeFileSync(
        script,
        `const { SqliteStore } = require(${JSON.stringify(compiled)});
const store = SqliteStore.open(process.argv[2]);
let next = 0;
function turn() {
  for (let i = 0; i < 50; i++, next++) {
    store.enqueue({ recipient: next % 2 ? 'bob' : 'dave', sender: (next >> 1) % 2 ? 'alice' : 'carol', id: next,
      refid: 0, groupid: 0, flags: 0, type: 0, expiry: 0, expiresAt: 0, payload: Buffer.from(String(next)) });
  }
  store.flush();
  process.stdout.write('flushed ' + (next - 1) + '\\n');
  setImmediate(turn);
}
turn();
`,
      );
      const child = spawn(process.execPath, [script, file], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
      child.stdout.on('data', (d) => {
        if (out === '') setTimeout(() => child.kill('SIGKILL'), 300);
        out += d;
      });
      expect(await exited, err).toBe('SIGKILL');

      // A line cut short by the kill does not count as reported.
      const reported = out.split('\n').slice(0, -1).map((l) => Number(/^flushed (\d+)$/.exec(l)![1]));
      expect(reported.length).toBeGreaterThan(0);
      const lastReported = reported[reported.length - 1];

      const s = open(file);
      const ids = ['bob', 'dave'].map((r) => s.pending(r).map((m) => m.id));
      for (const inboxIds of ids) {
        // Delivery order is enqueue order, hence every sender's order.
        expect(inboxIds).toEqual([...inboxIds].sort((a, b) => a - b));
      }
      const all = ids.flat().sort((a, b) => a - b);
      // Batches are whole: nothing from a flush that did not commit, nothing
      // missing from one that did, and everything reported is there.
      expect(all.length % 50).toBe(0);
      expect(all).toEqual(Array.from({ length: all.length }, (_, i) => i));
      expect(all.length).toBeGreaterThan(lastReported);
    });
  });
});

describe('opening', () => {
  it('a folder that does not exist or cannot be written gives E_STORE_OPEN naming the file', () => {
    for (const file of ['/proc/nope/x.db', '/proc/x.db']) {
      let e: { code?: string; message?: string } = {};
      try {
        SqliteStore.open(file);
      } catch (err) {
        e = err as typeof e;
      }
      expect(e.code).toBe('E_STORE_OPEN');
      expect(e.message).toContain(file);
      expect(e.message).toMatch(/folder exists/);
    }
  });

  it('a file that is not a database gives E_STORE_CORRUPT', () => {
    const file = storeFile();
    fs.writeFileSync(file, Buffer.alloc(16384, 'garbage!'));
    expect(codeOf(() => SqliteStore.open(file))).toBe('E_STORE_CORRUPT');
  });

  it('a version 1 file is migrated: the copy index becomes unique and the first of any duplicate copies stays', () => {
    const file = storeFile();
    const raw = new Database(file);
    raw.exec(`
      CREATE TABLE users (address TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE) STRICT, WITHOUT ROWID;
      CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, recipient TEXT NOT NULL, sender TEXT NOT NULL, id INTEGER NOT NULL,
        refid INTEGER NOT NULL, groupid INTEGER NOT NULL, flags INTEGER NOT NULL, type INTEGER NOT NULL,
        expiry INTEGER NOT NULL, expires_at INTEGER NOT NULL, payload BLOB NOT NULL) STRICT;
      CREATE INDEX messages_by_copy ON messages (recipient, sender, id);
      INSERT INTO messages (recipient, sender, id, refid, groupid, flags, type, expiry, expires_at, payload) VALUES
        ('bob', 'alice', 1, 0, 0, 0, 0, 0, 0, x'6f6c64'),
        ('bob', 'alice', 2, 0, 0, 0, 0, 0, 0, x'32'),
        ('bob', 'alice', 1, 0, 0, 0, 0, 0, 0, x'6e6577');
    `);
    raw.exec('PRAGMA user_version = 1');
    raw.close();
    const st = open(file);
    expect(st.pending('bob').map((m) => `${m.id}:${m.payload.toString()}`)).toEqual(['1:old', '2:2']);
    st.enqueue(msg('bob', 'alice', 2));
    st.flush();
    expect(st.countPending('bob')).toBe(2);
    st.close();
    const check = new Database(file, { readonly: true });
    expect(check.pluck('PRAGMA user_version').get()).toBe(2);
    expect(check.pluck("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' ORDER BY name").all()).toEqual(['messages_by_expiry', 'messages_by_recipient', 'messages_copy']);
    check.close();
  });

  it('a file from a newer schema is refused with E_STORE_VERSION', () => {
    const file = storeFile();
    const raw = new Database(file);
    raw.exec('PRAGMA user_version = 99');
    raw.close();
    expect(() => SqliteStore.open(file)).toThrow(/schema version 99/);
    expect(codeOf(() => SqliteStore.open(file))).toBe('E_STORE_VERSION');
  });

  it('read-only, the store reads but refuses writes; a missing file is E_STORE_OPEN', () => {
    const file = storeFile();
    const w = SqliteStore.open(file);
    w.addUser('bob', 'h');
    w.enqueue(msg('bob', 'alice', 1));
    w.close();

    const r = open(file, { readonly: true });
    expect(r.listUsers()).toEqual(['bob']);
    expect(inbox(r, 'bob')).toEqual(['alice#1']);
    expect(codeOf(() => r.enqueue(msg('bob', 'alice', 2)))).toBe('E_STORE_READONLY');
    expect(codeOf(() => r.addUser('carol', 'h2'))).toBe('E_STORE_READONLY');
    expect(codeOf(() => SqliteStore.open(`${file}.missing`, { readonly: true }))).toBe('E_STORE_OPEN');
  });

  it('a closed store says so', () => {
    const s = SqliteStore.open(storeFile());
    s.close();
    expect(codeOf(() => s.pending('bob'))).toBe('E_STORE_CLOSED');
    expect(codeOf(() => s.enqueue(msg('bob', 'alice', 1)))).toBe('E_STORE_CLOSED');
  });
});
